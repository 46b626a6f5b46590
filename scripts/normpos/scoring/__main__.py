"""Score run directories on the test set (see score_run.py for what is decoded and written), or compare
any hypothesis files against a baseline with paired significance tests (significance.py).

    python -m normpos.scoring RUN_DIR [RUN_DIR ...]
    python -m normpos.scoring --root results/runs/<dataset>/<experiment>   # every run below it
    python -m normpos.scoring compare --ref REF --baseline BASE SYS [SYS ...] [--lowercase] [--json OUT]

A run already scored with the same inputs is skipped; a diverged or failed run is recorded as not decoded;
with ``--root``, a run that has not finished yet (no status.json) is passed over with a note. Each problem is
one line ``normpos: error: ...``; the others are still scored, and the exit status is 1 if any failed.
``compare`` prints BLEU and chrF++ of every file with the bootstrap's mean and 95% confidence interval, and the
p-values of paired bootstrap resampling and paired approximate randomization against the baseline.
"""

import argparse
import sys
from pathlib import Path

from normpos.scoring import significance
from normpos.scoring.errors import ScoringError
from normpos.scoring.score_run import run_dirs_under, score_run


def describe(run_dir: Path, action: str, record: dict) -> str:
    if not record.get("scored"):
        return f"{run_dir}: {record['reason']}"
    line = (f"{run_dir}: {action}: tokenized BLEU {record['test_tok_bleu']:.2f}, "
            f"sacreBLEU {record['sacrebleu']:.2f} ({record['sacrebleu_signature']}), chrF++ {record['chrf']:.2f}")
    if "compound_split_bleu" in record:
        line += f", compound-split BLEU {record['compound_split_bleu']:.2f}"
    return line


def compare_main(argv) -> int:
    """``compare``: paired tests of hypothesis files (detokenized, one sentence per line) against a baseline."""
    parser = argparse.ArgumentParser(prog="python -m normpos.scoring compare",
                                     description="Paired bootstrap resampling and paired approximate randomization "
                                                 "(sacreBLEU) of each SYS against BASE, BLEU and chrF++.")
    parser.add_argument("--ref", type=Path, required=True, help="untokenized references, one per line")
    parser.add_argument("--baseline", type=Path, required=True, help="the baseline's detokenized hypotheses")
    parser.add_argument("systems", nargs="+", type=Path, help="other systems' detokenized hypotheses")
    parser.add_argument("--lowercase", action="store_true", help="compare lowercased (case:lc), as for "
                        "lowercased training text (IWSLT14, Multi30k)")
    parser.add_argument("--seed", type=int, default=significance.SEED, help="sacreBLEU's random seed "
                        f"(default {significance.SEED}, sacreBLEU's own)")
    parser.add_argument("--resamples", type=int, default=significance.BOOTSTRAP_RESAMPLES,
                        help=f"paired bootstrap resamples (default {significance.BOOTSTRAP_RESAMPLES})")
    parser.add_argument("--trials", type=int, default=significance.AR_TRIALS,
                        help=f"approximate randomization trials (default {significance.AR_TRIALS})")
    parser.add_argument("--json", type=Path, help="also write every number and signature here (JSON)")
    args = parser.parse_args(argv)
    from normpos.data.textfiles import read_lines
    from normpos.files import write_json

    def lines(path: Path) -> list:
        if not path.is_file():
            raise ScoringError(f"{path} is not a file")
        return list(read_lines(path))

    try:
        if args.resamples < 1 or args.trials < 1:
            raise ScoringError("--resamples and --trials must be >= 1")
        systems = [(str(p), lines(p)) for p in args.systems]
        result = significance.compare(lines(args.ref), (str(args.baseline), lines(args.baseline)), systems,
                                      lowercase=args.lowercase, seed=args.seed, resamples=args.resamples,
                                      trials=args.trials)
    except ScoringError as err:
        print(f"normpos: error: {err}", file=sys.stderr)
        return 2
    print(significance.text_table(result))
    if args.json:
        write_json(args.json, result.as_json())
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
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
