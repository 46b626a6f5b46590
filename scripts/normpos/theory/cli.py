"""``python -m normpos.theory``: Xiong et al. 2020, sec. 3.4 / Fig. 3, Lemma 2 and Theorem 1 at initialization.

Measures Post-LN and Pre-LN (or any registered ``--norm-scheme``) IWSLT14 models at several depths and
seeds, under the paper's FFN init (fairseq 0.9, ``xavier``; current fairseq's ``torch_default`` with
``--inits``) and under the theory's own assumptions; writes ``measurements.csv`` (every number), ``run.json`` (how it was
made), the Fig. 3-style figures and ``report.md`` into ``--out``. A killed run resumes from
``measurements.partial.csv``. Problems with the input are reported as one line ``normpos.theory: error: ...``.
``--report-only`` measures nothing: it re-renders the report and figures from ``measurements.csv`` and
``run.json`` in ``--out``, first bringing a record written before records were portable to the portable form.
A record already in ``--out`` is the cache: only the models missing from it are measured and merged into it,
and a record of other settings is refused (``record.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

from normpos import numerics
from normpos.files import write_json
from normpos.provenance import git_commit, portable_path

from . import data as data_lib
from . import record
from .model import MAX_TOKENS

DEFAULT_OUT = data_lib.REPO / "results" / "theory"
# Fig. 3(c,d): the paper's depths (sec. 3.4); 10 seeds (sec. 3.4)
DEFAULT_DEPTHS = [6, 8, 10, 12, 14]
DEFAULT_SEEDS = 10
# One 4096-token batch per model, the fewest possible: a model costs about 3.6 s at 6-6 and 9 s at 14-14 on
# the 2-core CPU here (forward and the backward needed for the measured gradients), all of it in matmuls.
DEFAULT_BATCHES = 1
# The paper's init only: 112 models, about 13 min on 2 idle cores. Both inits at 10 seeds (212 models) took
# about 31 min, over the 15-minute budget of the default run, so current fairseq's init is measured by the
# check `make gradnorm-checks` writes to results/theory/checks/current-fairseq-init, which the report reads.
DEFAULT_INITS = ["xavier"]


class UsageError(Exception):
    """Something the user asked for that cannot be run, reported as one line."""


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m normpos.theory", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="iwslt14",
                   help="iwslt14 (../shared/data, default), multi30k, or a prepared fairseq data folder")
    p.add_argument("--schemes", nargs="+", default=["post_ln", "pre_ln"], metavar="SCHEME",
                   help="normalization schemes (any of normpos_fairseq.schemes.scheme_names())")
    p.add_argument("--inits", nargs="+", default=DEFAULT_INITS, metavar="INIT",
                   help="FFN inits: xavier = fairseq <= 0.9 (the paper's), torch_default = current fairseq")
    p.add_argument("--depths", nargs="+", type=int, default=DEFAULT_DEPTHS, help="encoder = decoder layers")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds 1..N per depth")
    p.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="batches per model")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS,
                   help=f"padded tokens per batch (default {MAX_TOKENS}, the paper's App. A.1)")
    p.add_argument("--per-layer-depth", type=int, default=6,
                   help="depth whose every FFN layer is measured (Fig. 3a,b: the 6-6 model)")
    p.add_argument("--theory-depths", nargs="*", type=int, default=[6, 14],
                   help="depths measured under the theory's assumptions, Post-LN and Pre-LN only (Lemma 2; none: skip)")
    p.add_argument("--theory-seeds", type=int, default=3, help="seeds per depth under the theory's assumptions")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout at init, train mode (paper App. A.1: 0.1)")
    p.add_argument("--checkpoint", type=Path, help="a Post-LN checkpoint after warm-up, for Fig. 3(a)")
    p.add_argument("--checkpoint-label", default="after-warmup", help="what the checkpoint is, for the figure")
    p.add_argument("--model-args", default="", help="extra fairseq model options, e.g. '--encoder-embed-dim 64'")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: re-render report.md and the figures in --out from its measurements.csv "
                        "and run.json (whose paths are made portable first)")
    return p.parse_args(argv)


def check(args) -> None:
    """Refuse bad input before any model is built."""
    from normpos_fairseq.ffn_init import FFN_INITS
    from normpos_fairseq.schemes import get_scheme

    for scheme in args.schemes:
        get_scheme(scheme)  # ValueError naming the valid schemes
    for init in args.inits:
        if init not in FFN_INITS:
            raise UsageError(f"unknown FFN init {init!r}; valid: {', '.join(FFN_INITS)}")
    depths = [*args.depths, *args.theory_depths]
    if args.seeds < 1 or args.batches < 1 or args.theory_seeds < 0 or min(depths) < 1 or args.max_tokens < 1:
        raise UsageError("--seeds, --batches, --max-tokens and every depth must be at least 1")
    if not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout {args.dropout} is not in [0, 1)")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist")


def quiet() -> None:
    """fairseq and Hydra log and warn on every model built; the progress bar is what should be read.

    Hydra reconfigures the root logger (to DEBUG) whenever fairseq composes a config, so levels set on
    loggers do not stick: INFO and below are switched off globally instead."""
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")


def machine(device: str) -> dict:
    import fairseq
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "fairseq": fairseq.__version__, "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def data_record(source: data_lib.DataSource) -> dict:
    """How run.json names the data: by name and sha256 of its files, the binarized folder relative to the
    checkout; never this machine's absolute paths."""
    return {
        "data": source.description,
        "data_dir": portable_path(source.bin_dir),
        "data_sha256": data_lib.checksums(source),
        "dictionary_types": sum(1 for _ in open(source.bin_dir / "dict.de.txt")) + 4,  # + fairseq's 4 specials
    }


def options_record(options: dict) -> dict:
    return {k: (portable_path(v) if isinstance(v, Path) else v) for k, v in options.items()
            if k not in ("argv", "report_only")}


def make_portable(out: Path) -> dict:
    """run.json of ``out`` with its data named as :func:`data_record` names it and its folders relative to
    the checkout. A record from before that form is recomputed from the same named source, which must give
    the same dictionary the measurement had (else the source changed and the record cannot be vouched for)."""
    meta = json.loads((out / "run.json").read_text())
    if "data_sha256" not in meta:
        record = data_record(data_lib.resolve(meta["options"]["data"]))
        if record["dictionary_types"] != meta["dictionary_types"]:
            raise UsageError(
                f"{out / 'run.json'}: its data {meta['options']['data']!r} now gives {record['dictionary_types']} "
                f"dictionary entries, the measurement had {meta['dictionary_types']}: not the same data"
            )
        meta.update(record)
        meta["data_sha256_note"] = "computed when the record was made portable (--report-only), from the same source"
    meta["options"] = {**options_record(meta["options"]), "out": portable_path(out)}
    return meta


def report_only(args) -> Path:
    from . import report

    if not (args.out / "measurements.csv").is_file() or not (args.out / "run.json").is_file():
        raise UsageError(f"--report-only: {args.out} has no measurements.csv and run.json")
    quiet()
    write_json(args.out / "run.json", make_portable(args.out))
    report.write(args.out)
    return args.out


def run(args) -> Path:
    import torch
    from tqdm import tqdm

    from normpos_fairseq.schemes import get_scheme

    from . import report, sweep
    from .measure import measure_gradients, torch_threads

    check(args)
    source = data_lib.resolve(args.data)
    # the folder's record is the cache: only the models missing from it are measured (record.py)
    cached = record.read(args.out, options_record(vars(args)), data_record(source))
    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = sweep.plan(
        args.schemes, args.inits, args.depths, args.seeds, args.batches, args.per_layer_depth,
        args.theory_depths, args.theory_seeds, args.dropout, tuple(shlex.split(args.model_args)),
        args.checkpoint, args.checkpoint_label,
    )
    # a partial file is reused only by the same measurement on the same data
    signature = {"data": str(source.bin_dir), "model_args": args.model_args, "device": args.device,
                 "max_tokens": args.max_tokens, "dropout": args.dropout, "checkpoint": str(args.checkpoint)}
    partial_path, signature_path = args.out / "measurements.partial.csv", args.out / "partial.json"
    if partial_path.exists() and (
        not signature_path.exists() or json.loads(signature_path.read_text()) != signature
    ):
        partial_path.unlink()
    signature_path.write_text(json.dumps(signature))
    partial = sweep.PartialCSV(partial_path)
    start, cpu_start, load_start = time.time(), time.process_time(), os.getloadavg()
    new = [job for job in jobs if not cached.has(job)]
    todo = [job for job in new if job.key not in partial.done]
    if cached.meta is not None:
        print(f"normpos.theory: {len(jobs) - len(new)} of the {len(jobs)} models asked for are in "
              f"{args.out / 'measurements.csv'} (same settings): measuring {len(new)}", flush=True)
    bar = tqdm(todo, unit="model", disable=args.no_progress, dynamic_ncols=True,
               desc=f"{len(new) - len(todo)} of {len(new)} done before")
    with torch_threads(args.threads):
        threads_used = torch.get_num_threads()
        try:
            for job in bar:
                bar.set_postfix_str(f"{sweep.setting_name(job.setting, job.state)} L={job.depth} seed={job.seed}")
                s = job.setting
                result = measure_gradients(
                    s.scheme, job.depth, job.seed, job.batches, s.ffn_init, s.theory_assumptions,
                    data_dir=source.bin_dir, dropout=s.dropout, per_layer=job.per_layer,
                    model_args=s.model_args, checkpoint=job.checkpoint, device=args.device,
                    max_tokens=args.max_tokens,
                )
                partial.add(job, list(sweep.rows(job, result)))
        finally:
            partial.close()
    csv_path = args.out / "measurements.csv"
    sweep.write_csv(csv_path, [*cached.rows, *(row for job in new for row in partial.done[job.key])])
    meta = {
        "command": " ".join(["python -m normpos.theory", *map(shlex.quote, args.argv)]),
        "git_commit": git_commit(),
        **data_record(source),
        "machine": {**machine(args.device), "torch_threads": threads_used,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
                    "numerics": numerics.describe(numerics.mode())},
        "wall_seconds": round(time.time() - start, 1),
        # this process's CPU time: wall time on an otherwise idle machine is about this / threads
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "models_measured_now": len(todo),
        "models_total": len(cached.models) + len(new),
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "options": options_record(vars(args)),
        "schemes": {name: {"paper": get_scheme(name).paper, "summary": get_scheme(name).summary}
                    for name in args.schemes},
    }
    measured = list(dict.fromkeys(job.setting.scheme for job in new))
    write_json(args.out / "run.json", record.merged_meta(cached, meta, measured))
    report.write(args.out)
    main_run = args.out.parent.parent
    if args.out.parent.name == "checks" and (main_run / "measurements.csv").exists():
        report.write(main_run)  # the main report shows its checks
    partial_path.unlink()
    signature_path.unlink()
    return args.out


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    try:
        out = report_only(args) if args.report_only else run(args)
    except (UsageError, ValueError, FileNotFoundError, data_lib.DataMissing) as err:  # RecordMismatch is a ValueError
        if os.environ.get("NORMPOS_TRACEBACK"):
            raise
        print(f"normpos.theory: error: {err}", file=sys.stderr)
        return 2
    wrote = "" if args.report_only else f"{out / 'measurements.csv'}, "
    print(f"wrote {wrote}{out / 'report.md'} and the figures")
    return 0
