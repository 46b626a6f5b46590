"""How the proof spends its budget, and the rules that size the grid from what (a) and (b) measured.

The budget (seconds, from the start of the command) is split after the wheels and the data are ready:
the benchmark gets 16% of what is left, the packing measurement 22%, the grid the rest but for
``PACKAGE_SECONDS`` kept for writing the results. Parts that finish early leave their time to the grid, whose
end is fixed. A part that runs out of time is stopped and says so; the results are written in any case.

The grid is 6 Post-LN runs (one Hydra sweep) and 1 Pre-LN run (a second sweep; see
configs/experiment/gpu_proof.yaml). With K runs at a time they take ``waves(K)`` rounds (``layout``). Each
run's update budget
is what one run does at the measured per-run rate ``aggregate(K) / K`` in the time of one round, less the
startup of fairseq-train and of the scorer (measured in (b)), of which ``TRAIN_SHARE`` goes to updates: the
rest pays for the per-epoch validation, the checkpoint writes and the test decoding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

from normpos.gpu_proof import ProofError

SHARES = {"bench": 0.16, "packing": 0.22}
PACKAGE_SECONDS = 10.0     # tarball and copies of the results folder
REPORT_SECONDS = 20.0      # normpos.report table + figures after the sweeps (two Python starts, matplotlib)
TRAIN_SHARE = 0.8          # of a round's time, after the startups, spent in updates
POST_LN_RUNS, PRE_LN_RUNS = 6, 1
MIN_BUDGET = 60.0
PACKING_TOLERANCE = 0.05   # aggregate speeds this close count as equal (run-to-run noise of a short trial)


def layout(k: int) -> dict:
    """How the 6 Post-LN runs and the 1 Pre-LN run share K slots, in the fewest rounds: the Post-LN sweep
    with K - 1 joblib workers and the Pre-LN run beside it, or the Pre-LN run first and then the Post-LN sweep
    with K workers (K = 2: 4 rounds instead of 6). The Pre-LN run never goes last: it is sec. 4's half of the
    comparison, and a grid stopped at its deadline loses its last runs. K = 1: all 7 one after the other,
    the Pre-LN run first."""
    if k == 1:
        return {"post_ln_jobs": 1, "pre_ln_beside": False, "waves": POST_LN_RUNS + PRE_LN_RUNS}
    beside = min(POST_LN_RUNS, k - 1)
    before = min(POST_LN_RUNS, k)
    options = [{"post_ln_jobs": beside, "pre_ln_beside": True, "waves": math.ceil(POST_LN_RUNS / beside)},
               {"post_ln_jobs": before, "pre_ln_beside": False, "waves": PRE_LN_RUNS + math.ceil(POST_LN_RUNS / before)}]
    return min(options, key=lambda o: o["waves"])  # on a tie, beside: no slot waits


def waves(k: int) -> int:
    """Rounds of the grid with K runs at a time."""
    return layout(k)["waves"]


def data_workers(k: int, cpus: int) -> int:
    """fairseq's data-loader workers per run: the CPUs left per run after its main process, 1 to 4."""
    return max(1, min(4, cpus // k - 1))


def threads(k: int, cpus: int) -> int:
    """torch CPU threads per run (OMP_NUM_THREADS): the CPUs shared out, so K runs do not oversubscribe them."""
    return max(1, cpus // k)


def best_jobs_per_gpu(trials: list) -> Optional[int]:
    """Runs per GPU for any sweep on this GPU model (``normpos.experiment.devices`` reads it from
    packing.json): the fewest concurrent runs whose aggregate speed is within ``PACKING_TOLERANCE`` of the
    best measured one (more runs for a gain inside the noise only cost memory and contention)."""
    measured = [t for t in trials if t.get("status") == "measured"]
    if not measured:
        return None
    top = max(t["aggregate_updates_per_s"] for t in measured)
    return min(t["concurrent"] for t in measured if t["aggregate_updates_per_s"] >= top * (1 - PACKING_TOLERANCE))


def size_grid(trial: dict, grid_seconds: float, cap: Optional[int] = None) -> dict:
    """max_update of every grid run with this trial's packing in the grid's time, and the stop-time guard;
    ``cap`` (``--max-update``) lowers it for a quick check."""
    k = trial["concurrent"]
    per_run = trial["aggregate_updates_per_s"] / k
    startup = trial["startup_seconds"]
    per_wave = (grid_seconds - REPORT_SECONDS) / waves(k)
    train_seconds = per_wave * TRAIN_SHARE - 2 * startup  # fairseq-train's start, then the scorer's
    sized = max(1, int(train_seconds * per_run))
    max_update = min(sized, cap) if cap else sized
    return {
        "concurrent": k, **layout(k),
        "per_run_updates_per_s": round(per_run, 3), "startup_seconds": round(startup, 1),
        "grid_seconds": round(grid_seconds, 1), "seconds_per_wave": round(per_wave, 1),
        "train_seconds_per_run": round(train_seconds, 1), "updates_in_time": round(train_seconds * per_run, 1),
        "sized_max_update": sized, "max_update": max_update, "fits": train_seconds > 0,
        # fairseq stops a run that trains 30% longer than planned (slower than measured), so that it still
        # ends, is scored and reported rather than killed at the deadline
        "stop_time_hours": round(max(train_seconds, 1.0) * 1.3 / 3600, 5),
        "rule": f"max_update = (({grid_seconds:.0f} s - {REPORT_SECONDS:.0f} s report) / {waves(k)} waves x "
                f"{TRAIN_SHARE} - 2 x {startup:.1f} s startup) x {per_run:.2f} updates/s per run = {sized}"
                + (f", capped at {cap} (--max-update)" if cap and cap < sized else ""),
    }


def choose_packing(trials: list, grid_seconds: float, cap: Optional[int] = None) -> dict:
    """The measured packing that gives every grid run the most updates in the grid's time (``size_grid``:
    faster packed runs against more rounds and their start-ups); on a tie, fewer runs at a time."""
    measured = [t for t in trials if t.get("status") == "measured"]
    if not measured:
        raise ProofError("no packing trial was measured, so the grid cannot be sized (see packing.json)")
    sizings = [size_grid(t, grid_seconds, cap) for t in measured]
    best = max(sizings, key=lambda s: s["updates_in_time"])  # max() keeps the first of equals
    return {**best, "updates_in_time_by_packing": {s["concurrent"]: s["updates_in_time"] for s in sizings}}


@dataclass
class Plan:
    """Deadlines (``time.monotonic()``) of each part, from the budget and the time already spent."""

    budget: float
    start: float
    parts: dict = field(default_factory=dict)   # name -> planned seconds
    used: dict = field(default_factory=dict)    # name -> seconds taken

    @property
    def end(self) -> float:
        return self.start + self.budget

    def left(self) -> float:
        return self.end - time.monotonic()

    def split(self) -> None:
        """Share out what is left (after wheels and data) among the parts."""
        left = self.left() - PACKAGE_SECONDS
        if self.budget < MIN_BUDGET or left < MIN_BUDGET / 2:
            raise ProofError(f"a budget of {self.budget:.0f} s leaves {left:.0f} s after setup: give at least "
                             f"{MIN_BUDGET:.0f} s (BUDGET=540 on a GPU)")
        for name, share in SHARES.items():
            self.parts[name] = left * share
        self.parts["grid"] = left - sum(self.parts.values())
        self.parts["results"] = PACKAGE_SECONDS

    def deadline(self, name: str, started: float) -> float:
        """When part ``name``, started at ``started``, must end; the grid and the results end at fixed times."""
        if name == "grid":
            return self.end - PACKAGE_SECONDS
        if name == "results":
            return self.end
        return min(started + self.parts[name], self.end - PACKAGE_SECONDS)

    def describe(self, precisions, packings) -> str:
        p = self.parts
        return "\n".join([
            f"  a. benchmark ours vs fairseq's Transformer (IWSLT shape) in {' '.join(precisions)}: "
            f"{p['bench']:.0f} s ({p['bench'] / len(precisions):.0f} s each)",
            f"  b. packing: aggregate updates/s of {' '.join(map(str, packings))} concurrent fairseq-train runs: "
            f"{p['packing']:.0f} s (~{p['packing'] / len(packings):.0f} s each, after the grid's dry run)",
            f"  c. grid: 6 Post-LN runs (lr 5e-4, 1e-3 x warm-up 1, 500, 4000) + 1 Pre-LN run, packed, equal "
            f"updates, test BLEU, table and figures: {p['grid']:.0f} s and whatever a and b leave",
            f"  d. results folder (8 files at most): {p['results']:.0f} s",
        ])
