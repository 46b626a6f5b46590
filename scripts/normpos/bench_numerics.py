"""Benchmark: what does pinning CPU numerics cost? (``make bench-numerics``; a benchmark, not a test.)

Trains the former CPU demo's model (``configs/experiment/demo_d256.yaml``: Pre-LN, d 256, 6+6 layers, 2,048-token
batches; the model results/multi30k/bench_numerics measured)
for a few dozen updates through the pipeline's own command, alternately with ``train.numerics=native`` (every
library picks its kernels and threads for this host) and ``pinned`` (``normpos.numerics``: AVX2 code paths,
2 threads), and prints fairseq's own updates/s for each and the ratio pinned / native. Rounds alternate
(native, pinned, native, pinned, ...) so that machine noise hits both alike; the median counts. The first log
interval of each run (warm-up of the allocator and caches) is left out.

    python -m normpos.bench_numerics [--rounds 3] [--updates 40] [--json PATH]

On a host whose best instruction set is AVX2 the pin changes only MKL's path selection and the thread count
(to 2, which a 2-core host has anyway); on an AVX-512 host it also gives up AVX-512, which is where a cost
would show.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from normpos import numerics
from normpos.files import write_json
from normpos.golden.curves import composed, quiet, train_records
from normpos.provenance import git_commit

LOG_INTERVAL = 10


def updates_per_second(mode: str, updates: int, workdir: Path) -> float:
    cfg = composed(["experiment=demo_d256", "variant=preln_constant", f"train.max_update={updates}",
                    f"train.log_interval={LOG_INTERVAL}", "train.extra_args=[--disable-validation]",
                    "eval.score=false", f"train.numerics={mode}"])
    records = train_records(cfg, workdir)[1:]  # the first interval warms up
    return statistics.median(float(r["ups"]) for r in records)


def main(argv=None) -> int:
    quiet()
    parser = argparse.ArgumentParser(prog="python -m normpos.bench_numerics", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=40, help="updates per run (>= 2 log intervals of 10)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.updates < 2 * LOG_INTERVAL:
        print(f"normpos: error: --updates must be >= {2 * LOG_INTERVAL}", file=sys.stderr)
        return 2
    speeds = {"native": [], "pinned": []}
    with tempfile.TemporaryDirectory(prefix="normpos-bench-numerics-") as tmp:
        for r in range(args.rounds):
            for mode in speeds:
                ups = updates_per_second(mode, args.updates, Path(tmp) / f"{mode}-{r}")
                speeds[mode].append(ups)
                print(f"[round {r + 1}/{args.rounds}] {mode}: {ups:.3f} updates/s", flush=True)
    median = {mode: statistics.median(v) for mode, v in speeds.items()}
    ratio = median["pinned"] / median["native"]
    host = numerics.host_isa()
    print(f"host ISA {host}; median updates/s native {median['native']:.3f}, pinned {median['pinned']:.3f}; "
          f"pinned / native = {ratio:.3f}")
    if args.json:
        write_json(args.json, {"host_isa": host, "rounds": speeds, "median": median, "ratio_pinned_over_native": ratio,
                               "updates": args.updates, "commit": git_commit(), "pinned": numerics.pinned()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
