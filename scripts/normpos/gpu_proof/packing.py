"""Part (b): the packing gain, as aggregate updates/s of 1, 2, 4 and 8 concurrent training runs on one GPU.

A single IWSLT-size run leaves most of a large GPU idle (its kernels are small, its Python loop is the
bottleneck), so several runs at once finish a grid sooner. Each trial starts K copies of the grid's own
``fairseq-train`` command (``python -m normpos.fairseq_run train``, taken from the sweep's dry run, so the
model, precision and batch are the grid's), without validation or checkpoints (``--disable-validation
--no-save``), and stops them once all K have trained side by side for a while.

What is measured, per run: fairseq's own speed, ``ups`` of each ``train_inner`` record (updates / seconds
of that logging interval), over the records whose whole interval lies in the window where every run was
already past its first record (start-up, CUDA initialization) and none had been stopped:
``updates/s = sum(n) / sum(n / ups)``, n the updates of each record. The aggregate is the sum over the K
runs. The same rate from the records' arrival times (``updates_per_s_wall``) is kept beside it as a check.
``packing.json`` names each run's log and the first and last update counted, so anyone can recompute it.
It also holds ``gpu`` and ``best_jobs_per_gpu`` (``plan.best_jobs_per_gpu``): how many runs per GPU any later
sweep on this GPU model packs (``normpos.experiment.devices`` reads them from ``results/multi30k/<gpu>/``).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path
from typing import List, Optional

from normpos.experiment.fairseq_log import parse_line
from normpos.gpu_proof import ProofError
from normpos.gpu_proof.children import Child, python_module
from normpos.gpu_proof.plan import data_workers, threads

SKIP_RECORDS = 1          # a run's first record includes its warm-up (kernel selection, allocator)
BEGIN = re.compile(r"begin training epoch 1\b")


def start_dry_run(overrides: List[str], log: Path) -> Child:
    """The sweep's dry run, which prints the grid's fairseq-train commands (started early: it imports fairseq)."""
    return Child(python_module("normpos.sweep", "-m", *overrides, "run.dry_run=true"), log)


def grid_command(dry: Child, deadline: float) -> List[str]:
    """The grid's fairseq-train command for its first configuration, as the sweep's dry run printed it."""
    if not dry.wait(deadline):
        dry.stop()
    commands = [text for _, text in dry.lines if " normpos.fairseq_run train " in text]
    if dry.returncode != 0 or not commands:
        raise ProofError(f"the grid's dry run failed: {dry.tail()}")
    return shlex.split(commands[0])


def records(child: Child) -> list:
    """(arrival time, num_updates, ups) of every ``train_inner`` record the child logged."""
    found = []
    for arrived, text in child.lines:
        parsed = parse_line(text)
        if parsed and parsed[0] == "train_inner" and isinstance(parsed[1].get("ups"), float):
            found.append((arrived, int(parsed[1]["num_updates"]), parsed[1]["ups"]))
    return found


def rate(chosen: list, before: tuple) -> dict:
    """fairseq's updates/s over the records ``chosen`` (consecutive), ``before`` the record preceding them."""
    updates, seconds, previous = 0, 0.0, before[1]
    for _, num_updates, ups in chosen:
        n = num_updates - previous
        updates, seconds, previous = updates + n, seconds + n / ups, num_updates
    wall = chosen[-1][0] - before[0]
    return {"first_update": before[1], "last_update": chosen[-1][1], "updates": updates,
            "updates_per_s": round(updates / seconds, 4), "updates_per_s_wall": round(updates / wall, 4)}


def window_start(runs: List[list]) -> Optional[float]:
    """When the last of the runs logged its first steady record's predecessor: all are steady after it."""
    if any(len(r) < SKIP_RECORDS for r in runs):
        return None
    return max(r[SKIP_RECORDS - 1][0] for r in runs)


def in_window(run: list, start: float) -> tuple:
    """(the record before the window, the records whose whole interval lies after ``start``)."""
    inside = [j for j in range(SKIP_RECORDS, len(run)) if run[j - 1][0] >= start]
    if not inside:
        return None, []
    return run[inside[0] - 1], [run[j] for j in inside]


def startup(child: Child, run: list) -> float:
    """Seconds from the start of the process to fairseq's 'begin training epoch 1' (else its first record)."""
    for arrived, text in child.lines:
        if BEGIN.search(text):
            return arrived - child.started
    return run[0][0] - child.started if run else float("nan")


def trial(command: List[str], k: int, folder: Path, deadline: float, window: float, log_interval: int,
          cpus: int, workers: Optional[int]) -> dict:
    """K concurrent runs of ``command``; stopped once all have trained ``window`` seconds side by side.
    Data-loader workers and CPU threads per run as the grid will have them (``plan``), unless the user set them."""
    workers = data_workers(k, cpus) if workers is None else workers
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(threads(k, cpus))}
    children = []
    for i in range(1, k + 1):
        run_dir = folder / f"run-{i}"
        argv = [*command, "--save-dir", str(run_dir / "checkpoints"), "--no-save", "--disable-validation",
                "--max-update", "1000000000", "--max-epoch", "1000000", "--seed", str(i),
                "--log-interval", str(log_interval), "--num-workers", str(workers)]
        children.append(Child(argv, run_dir / "train.log", env=env))
    result = {"concurrent": k, "num_workers": workers, "omp_num_threads": env["OMP_NUM_THREADS"],
              "log_interval": log_interval}
    try:
        while True:
            time.sleep(0.25)
            failed = [c for c in children if not c.running()]
            if failed:
                return {**result, "status": "failed", "reason": f"a run exited with code {failed[0].returncode}: "
                                                                 f"{failed[0].tail()}"}
            logged = [records(c) for c in children]
            start = window_start(logged)
            if start is not None and time.monotonic() - start >= window and \
                    all(len(in_window(r, start)[1]) >= 2 for r in logged):
                break
            if time.monotonic() >= deadline:
                break
    finally:
        for child in children:
            child.stop()
    logged = [records(c) for c in children]
    start = window_start(logged)
    windows = [in_window(r, start) if start is not None else (None, []) for r in logged]
    if any(not chosen for _, chosen in windows):
        return {**result, "status": "too short", "reason": f"the trial's time ran out before all {k} runs had trained "
                                                           f"side by side (records per run: {[len(r) for r in logged]})"}
    runs = []
    for i, (child, run, (before, chosen)) in enumerate(zip(children, logged, windows), 1):
        runs.append({"log": f"{folder.name}/run-{i}/train.log", "startup_seconds": round(startup(child, run), 2),
                     **rate(chosen, before)})
    aggregate = sum(r["updates_per_s"] for r in runs)
    return {**result, "status": "measured", "reason": "",
            "window_seconds": round(max(c[-1][0] for _, c in windows) - start, 2),
            "startup_seconds": round(max(r["startup_seconds"] for r in runs), 2),
            "aggregate_updates_per_s": round(aggregate, 4),
            "aggregate_updates_per_s_wall": round(sum(r["updates_per_s_wall"] for r in runs), 4),
            "per_run_updates_per_s": round(aggregate / k, 4), "runs": runs}


def measure(command: List[str], packings: List[int], folder: Path, deadline: float, log_interval: int,
            cpus: int, workers: Optional[int], window: Optional[float] = None) -> List[dict]:
    """One trial per packing, sharing the time left until ``deadline`` equally among the trials to come."""
    trials = []
    for index, k in enumerate(packings):
        slot = (deadline - time.monotonic()) / (len(packings) - index)
        target = window if window is not None else max(2.0, slot * 0.3)
        print(f"[packing] {k} concurrent run(s): up to {slot:.0f} s", flush=True)
        found = trial(command, k, folder / f"k-{k}", time.monotonic() + slot, target, log_interval, cpus, workers)
        trials.append(found)
        if found["status"] == "measured":
            print(f"[packing] {k} concurrent: {found['aggregate_updates_per_s']:.2f} updates/s in all, "
                  f"{found['per_run_updates_per_s']:.2f} per run (startup {found['startup_seconds']:.0f} s, "
                  f"window {found['window_seconds']:.0f} s)", flush=True)
        else:
            print(f"[packing] {k} concurrent: {found['status']}: {found['reason']}", flush=True)
    return trials
