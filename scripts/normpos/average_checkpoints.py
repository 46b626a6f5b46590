"""Average the model weights of several fairseq checkpoints (Vaswani et al. 2017 average the last checkpoints).

    python -m normpos.average_checkpoints --out avg.pt ckpt1.pt ckpt2.pt ...

fairseq's own ``scripts/average_checkpoints.py`` is not shipped in the fairseq package, so this is the same
computation: element-wise mean of every tensor in ``state["model"]``, the rest (args, config, optimizer
history) taken from the last checkpoint. Checkpoints are loaded with torch's weights_only protection
(``normpos_fairseq.checkpoint_compat.load_checkpoint``): one that asks for other types than a fairseq
checkpoint holds is refused in one line, before any of it runs. The output is written to a temporary name and
renamed (``normpos.files.atomic_output``), so a killed run never leaves a half-written file.
"""

import argparse
from pathlib import Path
from typing import List, Sequence

import torch

from normpos.files import atomic_output
from normpos_fairseq.checkpoint_compat import load_checkpoint


def average_checkpoints(paths: Sequence[Path], out: Path) -> Path:
    if not paths:
        raise ValueError("no checkpoints to average")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint not found: {', '.join(missing)}")
    total = None
    state = None
    for path in paths:
        state = load_checkpoint(path)
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
    with atomic_output(out) as tmp:
        torch.save(state, tmp)
    return out


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        average_checkpoints(args.checkpoints, args.out)
    except (ValueError, FileNotFoundError) as err:  # a refused checkpoint is a ValueError too
        parser.exit(2, f"normpos: error: {err}\n")
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
