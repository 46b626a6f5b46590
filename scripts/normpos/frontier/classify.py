"""The rule that reads one run of the map as *trains*, *stalls* or *diverges*.

- **diverges**: the run was stopped by the sweep's divergence watcher (``normpos.experiment.watch``: a
  non-finite training loss, fairseq's fp16 minimum loss scale, or a training loss above 1.5 x its first
  value), so it ended before update N;
- **trains**: it finished its N updates and its valid ``nll_loss`` at update N (fairseq's, base 2, per target
  token, without label smoothing) is below the bar ``H_unigram - margin``: the valid cross-entropy of a
  model that knows only the training targets' token frequencies (``unigram.py``), minus a margin that makes
  "below" clear (0.5 bit in the presets: a perplexity 1.4 x lower than word frequencies alone give);
- **stalls**: it finished and does not train (Post-LN without warm-up in the CPU demo: its valid loss sits at
  the unigram level). A stalled run is not stopped early: a slow start looks the same at N/2 (Post-LN at
  d 64, 6 layers, lr 1e-3 was above the bar at update 50 and below it at 100);
- **failed**: fairseq failed (not an outcome of the experiment: the map reports it and exits 1).

The label-smoothed ``valid_loss`` is not compared: it adds a smoothing term (0.1 of the loss against the
uniform distribution) that the unigram cross-entropy does not have. Reads only the run's files
(``normpos.report.runs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from normpos.report.runs import DIVERGED, FAILED, FINISHED, RUNNING, load_run

from .plan import TRAINS

STALLS, DIVERGES, NOT_RUN = "stalls", "diverges", "not run"
# the map's cell letters, also the table's legend
LETTER = {TRAINS: "T", STALLS: "S", DIVERGES: "D", FAILED: "F", RUNNING: "R", NOT_RUN: "·"}


@dataclass
class Outcome:
    kind: str                       # trains | stalls | diverges | failed | running
    nll: Optional[float]            # valid nll (bits/token) at the last validation, None if none
    at_update: Optional[int]        # that validation's update
    updates: Optional[int]          # updates trained
    wall_seconds: Optional[float]   # the runner's wall time for the run (start-up included)
    reason: str = ""


def classify(directory: Path, bar_bits: float) -> Outcome:
    """The outcome of the run in ``directory`` under the bar (bits per target token)."""
    run = load_run(Path(directory))
    status = _status_extra(Path(directory))
    rows = [r for r in run.metrics if r.get("valid_nll_loss") is not None]
    last = max(rows, key=lambda r: r["num_updates"]) if rows else None
    nll, at = (float(last["valid_nll_loss"]), int(last["num_updates"])) if last else (None, None)
    common = dict(nll=nll, at_update=at, updates=run.num_updates, wall_seconds=status.get("wall_seconds"))
    if run.status == DIVERGED:
        return Outcome(DIVERGES, reason=run.reason, **common)
    if run.status in (FAILED, RUNNING):
        return Outcome(run.status, reason=run.reason, **common)
    assert run.status == FINISHED
    if nll is None:
        return Outcome(FAILED, reason="finished without a valid nll_loss (is the criterion label_smoothed_cross_entropy?)",
                       **common)
    if nll < bar_bits:
        return Outcome(TRAINS, reason=f"valid nll {nll:.3f} < bar {bar_bits:.3f}", **common)
    return Outcome(STALLS, reason=f"valid nll {nll:.3f} >= bar {bar_bits:.3f}", **common)


def _status_extra(directory: Path) -> dict:
    import json

    try:
        return json.loads((directory / "status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
