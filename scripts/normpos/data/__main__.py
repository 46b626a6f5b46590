"""Command line: ``python -m normpos.data prepare {iwslt14,wmt14,multi30k} ...`` and ``... bench``.

Progress goes to stderr; the last line on stdout is the prepared folder. Bad input (missing source,
wrong checksum, misaligned corpus, no network) is one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normpos.data.errors import DataError
from normpos.data.subword import KINDS


def _recipes():
    from normpos.data import iwslt14, multi30k, wmt14

    return {"iwslt14": iwslt14.RECIPE, "wmt14": wmt14.RECIPE, "multi30k": multi30k.RECIPE}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m normpos.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="download (or take) a dataset and prepare it for fairseq",
                       description="Prepare IWSLT14 De-En, WMT14 En-De or Multi30k De-En (see data/README.md).")
    p.add_argument("dataset", choices=["iwslt14", "wmt14", "multi30k"])
    p.add_argument("--source", action="append", default=[], metavar="URL_OR_PATH",
                   help="where the published files are: a URL (the file's, or a mirror folder's), a local "
                        "file, a folder holding it, or its unpacked folder; repeatable (WMT14 has several "
                        "files). Default: the official URLs (Multi30k: ../shared/data when present)")
    p.add_argument("--subword", choices=KINDS, default="bpe",
                   help="joint BPE with subword-nmt (the recipes) or a joint sentencepiece model")
    p.add_argument("--vocab", type=int, default=None,
                   help="BPE merge operations or sentencepiece vocabulary size (default: IWSLT14 10000, "
                        "WMT14 40000, Multi30k 8000)")
    p.add_argument("--test", choices=["full", "filtered"], default="full",
                   help="WMT14 only: newstest2014 as 3,003 segments (full, default) or 2,737 (filtered)")
    p.add_argument("--out-root", type=Path, default=Path("data"), help="root of the prepared folders (data)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild a prepared folder that exists")
    p.add_argument("--allow-unverified", action="store_true",
                   help="use source files whose checksums do not match the published ones (warn only)")

    b = sub.add_parser("bench", help="tokenize+BPE throughput, ours vs a serial baseline (bench-prep)")
    b.add_argument("--lines", type=int, default=None,
                   help="sentences per language in the benchmark corpus (default: IWSLT14 train size)")
    b.add_argument("--workers", type=int, default=None, help="processes for our path (default: all cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            from normpos.data.bench import run_bench

            run_bench(lines=args.lines, workers=args.workers)
            return 0
        from normpos.data.prepare import prepare

        extra = {"test": args.test} if args.dataset == "wmt14" else {}
        if args.dataset != "wmt14" and args.test != "full":
            raise DataError("--test filtered applies to wmt14 only")
        folder = prepare(_recipes()[args.dataset], subword_kind=args.subword, vocab=args.vocab,
                         sources=args.source, out_root=args.out_root, workers=args.workers, force=args.force,
                         allow_unverified=args.allow_unverified, **extra)
        print(folder)  # the last line on stdout, for scripts and Makefiles
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; finished steps are kept and a rerun resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
