"""``python -m normpos.golden check|regenerate [--cases NAME ...]``: see :mod:`normpos.golden`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from normpos.files import write_json

from .cases import all_cases
from .corpus import REPO, GoldenError, build
from .curves import differences, quiet, run_case

GOLDEN_DIR = REPO / "tests" / "golden"


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def load(name: str):
    path = golden_path(name)
    return json.loads(path.read_text()) if path.exists() else None


def provenance() -> dict:
    """Where the committed values were made: informational, never compared."""
    import platform

    import fairseq
    import torch

    from normpos import numerics
    from normpos.provenance import git_commit

    return {"commit": git_commit(), "numerics": numerics.describe("pinned"), "torch": torch.__version__,
            "fairseq": fairseq.__version__, "python": platform.python_version()}


def main(argv=None) -> int:
    quiet()
    parser = argparse.ArgumentParser(prog="python -m normpos.golden", description=__doc__)
    parser.add_argument("action", choices=("check", "regenerate"))
    parser.add_argument("--cases", nargs="*", help="case names (default: every case)")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if not args.cases or c.name in args.cases]
    unknown = set(args.cases or ()) - {c.name for c in cases}
    if unknown:
        print(f"normpos: error: unknown golden case(s) {', '.join(sorted(unknown))}; valid: "
              f"{', '.join(c.name for c in all_cases())}", file=sys.stderr)
        return 2
    changed = 0
    with tempfile.TemporaryDirectory(prefix="normpos-golden-") as tmp:
        try:
            data_bin = build(Path(tmp) / "corpus")
        except GoldenError as err:
            print(f"normpos: error: {err}", file=sys.stderr)
            return 2
        stamp = provenance() if args.action == "regenerate" else None
        for i, case in enumerate(cases, 1):
            start = time.time()
            try:
                got = run_case(case, data_bin, Path(tmp) / case.name)
            except GoldenError as err:
                print(f"normpos: error: {err}", file=sys.stderr)
                return 1
            expected = load(case.name)
            words = ["new"] if expected is None else differences(expected, got)
            changed += bool(words)
            print(f"[{i}/{len(cases)}] {case.name}: {'; '.join(words) or 'unchanged'} ({time.time() - start:.0f} s)",
                  flush=True)
            if args.action == "regenerate" and words:
                write_json(golden_path(case.name), {**got, "generated_with": stamp})
    verb = "rewritten" if args.action == "regenerate" else "differ"
    print(f"{len(cases) - changed} of {len(cases)} golden cases unchanged" + (f", {changed} {verb}" if changed else ""))
    return 1 if (changed and args.action == "check") else 0


if __name__ == "__main__":
    sys.exit(main())
