"""A sweep's own log: how many runs it will train up front, one line per run's outcome, a summary at the end.

Hydra runs each job of a multirun through a launcher (in order, in joblib workers, or as Slurm jobs), so a
sweep's parts meet only through files. This Hydra callback (``hydra.callbacks`` in configs/train.yaml):
- at the start counts the jobs the way Hydra's basic sweeper expands them (its own ``split_arguments``),
  prints the count, and names a fresh outcomes file ``<run.root>/.sweeps/<start time>-<pid>.jsonl`` for the
  jobs (through the environment, which joblib workers and submitit jobs inherit);
- each run appends one JSON line to it when it ends (:func:`record`; a single ``O_APPEND`` write, so
  concurrent jobs never interleave);
- at the end prints a summary (finished, diverged, failed, skipped, with the failed run directories) and
  exits non-zero when a run failed, or when fewer outcomes were recorded than jobs ran (a job that crashed,
  or a full disk that took the outcome line too). A diverged run is an outcome of the experiment, not a
  failure.
"""

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback

ENV_LOG = "NORMPOS_SWEEP_LOG"
ENV_TOTAL = "NORMPOS_SWEEP_TOTAL"
ENV_PARALLEL = "NORMPOS_SWEEP_PARALLEL"
FAILED = "failed"


def count_jobs(config) -> int:
    """How many jobs Hydra's basic sweeper makes of this multirun (sweeper params, then the command line)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    return len(BasicSweeper.split_arguments(parsed, None)[0])


def record(directory: Path, outcome: str, reason: str = "") -> None:
    """Append one run's outcome to the current sweep's log (nothing outside a sweep)."""
    path = os.environ.get(ENV_LOG)
    if not path:
        return
    line = json.dumps({"run": str(directory), "outcome": outcome, "reason": reason}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def position() -> Optional[tuple]:
    """(total jobs, jobs running at once) of the current sweep, when known."""
    total = os.environ.get(ENV_TOTAL)
    return (int(total), int(os.environ.get(ENV_PARALLEL, "1"))) if total else None


def summarize(rows: list) -> tuple:
    """(text, failed?) for the outcome rows of one sweep."""
    counts = Counter(r["outcome"] for r in rows)
    order = ["finished", "diverged", FAILED, "skipped"]
    words = ", ".join(f"{counts[k]} {k}" for k in order + sorted(set(counts) - set(order)) if counts[k])
    lines = [f"sweep: {len(rows)} runs: {words or 'none'}"]
    for r in rows:
        if r["outcome"] in (FAILED, "skipped") and r.get("reason"):
            lines.append(f"  {r['outcome']}: {r['run']}: {r['reason']}")
    return "\n".join(lines), counts[FAILED] > 0


class SweepLog(Callback):
    def on_multirun_start(self, config, **kwargs: Any) -> None:
        root = Path(config.run.root) / ".sweeps"
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self.path.touch()
        total = self.total = count_jobs(config)
        os.environ[ENV_LOG], os.environ[ENV_TOTAL] = str(self.path), str(total)
        os.environ[ENV_PARALLEL] = str(config.hydra.launcher.get("n_jobs") or 1)
        if not config.run.dry_run:
            print(f"sweep: {total} runs (finished ones are skipped); outcomes in {self.path}", flush=True)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if config.run.dry_run:
            return
        try:
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        except OSError:
            rows = []
        text, failed = summarize(rows)
        missing = self.total - len(rows)
        if missing > 0:  # a job that crashed, or whose outcome line could not be written (a full disk)
            text += f"\n  {missing} of {self.total} runs left no outcome: see the lines above"
        print(text, flush=True)
        if failed or missing > 0:
            sys.exit(1)  # SystemExit passes through Hydra's error reporting: the sweep's exit status
