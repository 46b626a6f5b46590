"""Score run directories on the test set (see score_run.py for what is decoded and written).

    python -m normpos.scoring RUN_DIR [RUN_DIR ...]
    python -m normpos.scoring --root results/runs/<dataset>/<experiment>   # every run below it

A run already scored with the same inputs is skipped; a diverged or failed run is recorded as not decoded;
with ``--root``, a run that has not finished yet (no status.json) is passed over with a note. Each problem is
one line ``normpos: error: ...``; the others are still scored, and the exit status is 1 if any failed.
"""

import argparse
import sys
from pathlib import Path

from normpos.scoring.errors import ScoringError
from normpos.scoring.score_run import run_dirs_under, score_run


def describe(run_dir: Path, action: str, record: dict) -> str:
    if not record.get("scored"):
        return f"{run_dir}: {record['reason']}"
    line = (f"{run_dir}: {action}: tokenized BLEU {record['test_tok_bleu']:.2f}, "
            f"sacreBLEU {record['sacrebleu']:.2f} ({record['sacrebleu_signature']})")
    if "compound_split_bleu" in record:
        line += f", compound-split BLEU {record['compound_split_bleu']:.2f}"
    return line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normpos.scoring", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories (holding run.json)")
    parser.add_argument("--root", type=Path, help="score every finished run below this folder")
    parser.add_argument("--force", action="store_true", help="rescore even when the inputs are unchanged")
    args = parser.parse_args(argv)
    if not args.run_dirs and args.root is None:
        parser.error("give run directories or --root")

    failed = 0
    try:
        runs = list(args.run_dirs) + (run_dirs_under(args.root) if args.root else [])
    except ScoringError as err:
        print(f"normpos: error: {err}", file=sys.stderr)
        return 2
    if args.root and not runs:
        print(f"normpos: error: no run directories (run.json) below {args.root}", file=sys.stderr)
        return 2
    for run_dir in runs:
        if args.root and run_dir not in args.run_dirs and not (run_dir / "status.json").exists():
            print(f"{run_dir}: not finished yet (no status.json), not scored")
            continue
        try:
            action, record = score_run(run_dir, force=args.force)
        except ScoringError as err:
            print(f"normpos: error: {run_dir}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(describe(run_dir, action, record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
