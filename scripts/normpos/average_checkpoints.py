"""Average the model weights of several fairseq checkpoints (Vaswani et al. 2017 average the last checkpoints).

    python -m normpos.average_checkpoints --out avg.pt ckpt1.pt ckpt2.pt ...

fairseq's own ``scripts/average_checkpoints.py`` is not shipped in the fairseq package, so this is the same
computation: element-wise mean of every tensor in ``state["model"]``, the rest (args, config, optimizer
history) taken from the last checkpoint. Checkpoints are pickles: load only ones you trust (see README).
The output is written to a temporary name and renamed, so a killed run never leaves a half-written file.
"""

import argparse
import os
from pathlib import Path
from typing import List, Sequence

import torch

import normpos_fairseq  # noqa: F401  (lets torch >= 2.6 unpickle fairseq checkpoints)


def average_checkpoints(paths: Sequence[Path], out: Path) -> Path:
    if not paths:
        raise ValueError("no checkpoints to average")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint not found: {', '.join(missing)}")
    total = None
    state = None
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = state["model"]
        if total is None:
            total = {k: v.detach().clone().double() for k, v in model.items()}
        else:
            if model.keys() != total.keys():
                raise ValueError(f"{path} has other parameters than {paths[0]}")
            for k, v in model.items():
                total[k] += v.double()
    dtypes = {k: v.dtype for k, v in state["model"].items()}
    state["model"] = {k: (v / len(paths)).to(dtypes[k]) for k, v in total.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)
    return out


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        average_checkpoints(args.checkpoints, args.out)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"normpos: error: {err}\n")
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
