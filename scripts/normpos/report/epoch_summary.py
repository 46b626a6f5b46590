"""Valid loss / valid BLEU of every run under a root at chosen epochs (or updates), as a Markdown table.

    python -m normpos.report.epoch_summary ROOT [--epochs 5 10 15]
    python -m normpos.report.epoch_summary ROOT --updates 50 100 150 --digits 3

For runs that have curves but no test score (e.g. stopped before the end) it reads metrics.jsonl only; when
some run has a score.json, a test BLEU column (tokenized, as the table's) is added. The per-update form is
what the CPU demos' READMEs quote (they validate every 50 updates within one epoch), so those numbers come
from a command rather than from reading files by hand.
"""

import argparse
import sys
from pathlib import Path
from typing import Sequence

from normpos.report.runs import ReportError, load_runs


def summary(root: Path, points: Sequence[int], key: str = "epoch", digits: int = 2) -> str:
    """One row per run below ``root`` (read by ``runs.load_runs``, the report's reader of run folders): the last
    validation at each point of ``key`` (``epoch`` or ``num_updates``), the last one logged, and test BLEU when
    any run is scored."""
    unit = "epoch" if key == "epoch" else "update"
    runs = load_runs(root)
    bleus = [(run.score or {}).get("test_tok_bleu") for run in runs]
    scored = any(b is not None for b in bleus)
    head = " | ".join(f"{unit} {p}" for p in points) + f" | last {unit}" + (" | test BLEU (tok.)" if scored else "")
    lines = [f"| run | {head} |", "|---" + "|---:" * (len(points) + 1 + scored) + "|"]
    for run, bleu in zip(runs, bleus):
        rows = {row[key]: row for row in run.metrics}  # the point's last validation

        def cell(p):
            r = rows.get(p)
            if r is None:
                return "–"
            valid_bleu = "" if r.get("valid_bleu") is None else f" / {r['valid_bleu']:.1f}"
            return f"{r['valid_loss']:.{digits}f}{valid_bleu}"

        cells = [cell(p) for p in points] + [f"{max(rows)}: {cell(max(rows))}" if rows else "–"]
        if scored:
            cells.append("–" if bleu is None else f"{bleu:.2f}")
        lines.append(f"| {run.path.relative_to(root).as_posix()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    at = parser.add_mutually_exclusive_group()
    at.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15])
    at.add_argument("--updates", type=int, nargs="+", help="points in updates instead of epochs")
    parser.add_argument("--digits", type=int, default=2, help="decimals of the valid loss")
    args = parser.parse_args(argv)
    try:
        if args.updates:
            print(summary(args.root, args.updates, key="num_updates", digits=args.digits))
        else:
            print(summary(args.root, args.epochs, digits=args.digits))
    except ReportError as err:
        print(f"normpos: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
