"""Valid loss / valid BLEU of every run under a root at chosen epochs, as a Markdown table.

    python -m normpos.report.epoch_summary ROOT [--epochs 5 10 15]

For runs that have curves but no test score (e.g. stopped before the end): it reads metrics.jsonl only.
"""

import argparse
import json
from pathlib import Path


def summary(root: Path, epochs) -> str:
    head = " | ".join(f"epoch {e}" for e in epochs)
    lines = [f"| run | {head} | last epoch |", "|---" * (len(epochs) + 2) + "|"]
    for path in sorted(root.glob("**/metrics.jsonl")):
        rows = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["epoch"]] = row  # the epoch's last validation

        def cell(e):
            r = rows.get(e)
            bleu = "" if r is None or r.get("valid_bleu") is None else f" / {r['valid_bleu']:.1f}"
            return "–" if r is None else f"{r['valid_loss']:.2f}{bleu}"

        last = max(rows)
        run = path.parent.relative_to(root)
        lines.append(f"| {run} | " + " | ".join(cell(e) for e in epochs) + f" | {last}: {cell(last)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15])
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.exit(2, f"normpos: error: {args.root} is not a folder\n")
    print(summary(args.root, args.epochs))


if __name__ == "__main__":
    main()
