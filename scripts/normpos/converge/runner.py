"""Train the preset's runs through the sweep's own runner, ``jobs`` at once, with progress and re-projection.

Each run is composed and trained as the frontier composes its runs (``frontier.runner``: the experiment by Hydra,
the run's values set, the same schema, ``run_one.run``: run folders, identities, lock, divergence watcher and,
here, the convergence rule of ``train.converge_*``). A finished run is reused; a killed one resumes from its
``checkpoint_last.pt`` (fairseq resumes by itself). The runs' own lines go to the session log; the terminal
gets a line per epoch of each run (read from its metrics.jsonl) and one per ended run, with the time left
re-projected from the seconds per epoch measured so far.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

from normpos.experiment import command, run_one, write_faults
from normpos.experiment.watch import load_metrics
from normpos.frontier.runner import Pool, _Lines, children_cpu_seconds, run_config

from . import plan as planning
from .plan import Preset, RunKey


def best_loss(directory: Path) -> Optional[float]:
    losses = [r["valid_loss"] for r in load_metrics(directory / "metrics.jsonl").values() if r.get("valid_loss") is not None]
    return min(losses) if losses else None


def epochs_done(directory: Path) -> int:
    return len({r["epoch"] for r in load_metrics(directory / "metrics.jsonl").values()})


class RunPool(Pool):
    """The frontier's pool of worker threads, each run ending in its status (not the frontier's verdict)."""

    def _train(self, key: RunKey, slot: int) -> Tuple[dict, Path, bool]:
        self.lines.tag(key.words())
        directory = command.run_dir(run_config(self.base, key))
        try:
            try:
                status = run_one.run(run_config(self.base, key), slot)
            except OSError as err:  # a full disk or a read-only folder ends this run, not the preset
                status = {"status": write_faults.record_failure(directory, err)}
            return status, directory, status.get("outcome") == "skipped"
        finally:
            self.lines.tag(None)


class Clock:
    """Seconds per epoch and per run measured on runs trained now (else the preset's recorded figures)."""

    def __init__(self, preset: Preset, max_epoch: int):
        self.preset, self.max_epoch, self.start = preset, max_epoch, time.time()
        self.per_epoch, self.per_run = [], []

    def add(self, status: dict) -> None:
        epochs, seconds = status.get("epochs") or 0, status.get("wall_seconds")
        if epochs and seconds:
            self.per_epoch.append(seconds / epochs)

    def left_minutes(self, epochs_left) -> float:
        per_epoch = statistics.median(self.per_epoch) if self.per_epoch else None
        return planning.projected_seconds(self.preset, self.max_epoch, epochs_left, per_epoch) / 60

    def source(self) -> str:
        return (f"measured {statistics.median(self.per_epoch):.0f} s an epoch" if self.per_epoch
                else f"recorded {planning.epoch_seconds(self.preset.budget):.0f} s an epoch")


def run_all(preset: Preset, base, max_epoch: int, log_path: Path) -> Tuple[Dict[RunKey, Tuple[dict, Path]], int, float]:
    """Train every run of the preset; return each run's status and folder, how many trained now, CPU seconds."""
    ended: Dict[RunKey, Tuple[dict, Path]] = {}
    losses: Dict[RunKey, Optional[float]] = {}
    pending, shown = set(), {}
    clock = Clock(preset, max_epoch)
    lines = _Lines(sys.stdout, log_path)
    pool = RunPool(base, 0.0, preset.jobs, lines)
    trained, cpu = 0, children_cpu_seconds()
    sys.stdout = lines
    try:
        while True:
            for key in planning.wanted(preset, losses):
                if key not in ended and key not in pending and pool.has_room():
                    pending.add(key)
                    pool.submit(key)
            if not pool.running:
                break
            for key, status, directory, reused in pool.done(timeout=20):
                pending.discard(key)
                ended[key] = (status, directory)
                losses[key] = best_loss(directory) if status.get("status") == "finished" else None
                trained += not reused
                if not reused:
                    clock.add(status)
                left = [max_epoch] * (planning.run_count(preset) - len(ended))
                print(f"[reproduce {len(ended)}/{planning.run_count(preset)}] {key.words()}: {status.get('status')}"
                      f"{' (reused)' if reused else ''} {status.get('reason') or ''}".rstrip()
                      + f"; {(time.time() - clock.start) / 60:.1f} min so far, <= {clock.left_minutes(left):.0f} min "
                      f"left ({clock.source()})", flush=True)
            for key, _slot in pool.running.values():  # one line per new epoch of the runs going on
                directory = command.run_dir(run_config(base, key))
                n = epochs_done(directory)
                if n > shown.get(key, 0):
                    shown[key] = n
                    going = [max_epoch - epochs_done(command.run_dir(run_config(base, k)))
                             for k, _ in pool.running.values()]
                    left = going + [max_epoch] * (planning.run_count(preset) - len(ended) - len(going))
                    print(f"  {key.words()}: epoch {n}/{max_epoch}, best valid loss {best_loss(directory):.3f}; "
                          f"<= {clock.left_minutes(left):.0f} min left", flush=True)
    except KeyboardInterrupt:
        sys.stdout = lines.terminal
        print("reproduce: interrupted; rerun the same command: finished runs are reused, the others resume "
              "from their last checkpoint", flush=True)
        os._exit(130)  # worker threads end with the process; their fairseq processes get SIGKILL (launch.py)
    finally:
        sys.stdout = lines.terminal
        lines.close_log()
    pool.shutdown()
    return ended, trained, children_cpu_seconds() - cpu
