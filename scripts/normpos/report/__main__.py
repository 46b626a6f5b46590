"""Build the table or the figures of one experiment from its run directories.

    python -m normpos.report table   --root results/runs/<dataset>/<experiment> --out results/<dataset>/<experiment>
                                     [--baseline NAME] [--no-significance]
    python -m normpos.report figures --root results/runs/<dataset>/<experiment> --out results/<dataset>/<experiment>

A bad or missing result file is one line ``normpos: error: ...`` and exit status 2.
"""

import argparse
import sys
from pathlib import Path

from normpos.report.runs import ReportError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normpos.report", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("table", "figures"))
    parser.add_argument("--root", type=Path, required=True, help="folder of the experiment's run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.* / curves.* / speedup.*")
    parser.add_argument("--x", choices=("auto", "epoch", "num_updates"), default="auto",
                        help="figures: x axis (auto: epochs, or updates when runs validate within an epoch)")
    parser.add_argument("--speedup-at", type=float, default=None,
                        help="figures: Post-LN point of the speed-up, in x units (default: epoch 15 as in the paper; "
                             "the last point on an updates axis)")
    parser.add_argument("--baseline", default=None,
                        help="table: the configuration (folder name, slug or label) every other row is compared "
                             "with (default: Post-LN with warm-up, preferring 4000 updates, as the paper)")
    parser.add_argument("--no-significance", action="store_true",
                        help="table: skip the paired significance tests against the baseline")
    args = parser.parse_args(argv)
    try:
        if args.what == "table":
            from normpos.report.table import make_table

            for path in make_table(args.root, args.out, baseline=args.baseline,
                                   compare=not args.no_significance).values():
                print(path)
        else:
            from normpos.report.figures import make_figures

            made = make_figures(args.root, args.out, x=args.x, at=args.speedup_at)
            for path in made["curves"] + made["speedup"]:
                print(path)
            for s in made["speedup_results"]:
                reach = s["pre_ln_reaches_at"]
                print(f"speed-up ({s['metric']}): {s['post_ln_point']} = {s['target']:.3f}; {s['pre_ln']} reaches it "
                      + (f"at {s['x']} {reach}" if reach is not None else f"at no {s['x']} (ran {s['pre_ln_last']})"))
            if not made["speedup_results"]:
                print("no speed-up figure: no Pre-LN run without warm-up next to a Post-LN run with warm-up "
                      "at the same optimizer and learning rate")
    except ReportError as err:
        print(f"normpos: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
