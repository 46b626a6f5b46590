"""Follow fairseq's training log: per-validation metrics rows, and divergence of the training loss.

A run is *diverged* (an outcome, not an error; the sweep goes on) when its training loss is not finite, when
fairseq prints one of ``fairseq_log.DIVERGENCE_MARKERS`` (e.g. fp16's minimum loss scale), or when the loss
climbs above ``factor`` x its first logged value. That first value is the run's, not the session's: it is
kept in ``<run dir>/watch.json`` so that a resumed run compares against the loss it started from, not the
(already lower) loss it resumed at.
"""

import json
import time
from pathlib import Path
from typing import Dict, Optional

from normpos.files import write_json, write_text

from . import convergence, fairseq_log


class Watcher:
    """Follows fairseq's log: collects per-epoch metrics, spots divergence in the training loss."""

    def __init__(self, factor: float, metrics: Dict[int, dict], state: Optional[Path] = None,
                 max_update: int = 0, max_epoch: int = 0, converge_window: int = 0, converge_min_bits: float = 0.0):
        self.factor = factor
        self.metrics = metrics
        self.state = state  # watch.json: the divergence baseline, kept across resumes
        self.first_loss: Optional[float] = _read_baseline(state)
        self.max_update, self.max_epoch = max_update, max_epoch
        self.eta_seconds: Optional[float] = None
        self._since: Optional[tuple] = None  # (time, fractional epoch) of the first progress seen
        self.train_summary: dict = {}
        self.progress: Optional[float] = None
        self.diverged: Optional[str] = None
        self.saw_marker: Optional[str] = None
        self.os_error: Optional[str] = None  # the last "[Errno N] ..." fairseq printed: why it may have stopped
        self.converge = (converge_window, converge_min_bits)
        self.converged: Optional[str] = None  # the convergence rule's words once it holds (convergence.py)

    def feed(self, line: str) -> bool:
        """Take one log line; return True when the epoch metrics changed."""
        for marker in fairseq_log.DIVERGENCE_MARKERS:
            if marker in line:
                self.saw_marker = marker
        os_error = fairseq_log.OS_ERROR.search(line)
        if os_error:
            self.os_error = os_error.group(0).strip()
        parsed = fairseq_log.parse_line(line)
        if not parsed:
            return False
        kind, stats = parsed
        if kind == "train_inner":
            updates = int(stats.get("num_updates", 0) or 0)
            ups = stats.get("ups")
            self.eta_seconds = self._time_left(updates, ups, stats.get("update"))
            eta = f", ~{self.eta_seconds / 60:.1f} min left" if self.eta_seconds is not None else ""
            print(f"  update {updates}: train loss {stats.get('loss')}, lr {stats.get('lr')}, "
                  f"{ups} updates/s{eta}", flush=True)
            self.train_summary = {"train_loss": stats.get("loss"), "train_lr": stats.get("lr"),
                                  "train_num_updates": stats.get("num_updates"), "epoch": stats.get("epoch"),
                                  "train_ups": ups, "train_wps": stats.get("wps")}
            self.progress = stats.get("update")
            self._check_loss(stats.get("loss"), int(stats.get("num_updates", 0) or 0))
        elif kind == "train":
            self.train_summary = stats
            self.progress = stats.get("epoch")
            self._check_loss(stats.get("train_loss"), int(stats.get("train_num_updates", 0) or 0))
        elif kind == "valid":
            record = fairseq_log.epoch_record(self.train_summary, stats, self.progress)
            self.metrics[record["num_updates"]] = record
            self._check_convergence()
            return True
        return False

    def _time_left(self, updates: int, ups, progress) -> Optional[float]:
        """Seconds to the nearer budget: updates left at fairseq's measured updates/s, or epochs left at the
        rate of fractional epochs per second seen in this session."""
        left = []
        if self.max_update and isinstance(ups, float) and ups > 0:
            left.append(max(0.0, (self.max_update - updates) / ups))
        if self.max_epoch and isinstance(progress, float):
            now = time.time()
            if self._since is None:
                self._since = (now, progress)
            elif progress > self._since[1]:
                rate = (progress - self._since[1]) / (now - self._since[0])
                left.append(max(0.0, (self.max_epoch - progress) / rate))
        return min(left) if left else None

    def _check_convergence(self) -> None:
        """Apply the convergence rule to the valid losses so far, one per epoch (a resumed run's earlier ones too)."""
        window, min_bits = self.converge
        if window < 1 or self.converged:
            return
        per_epoch = {}
        for row in sorted(self.metrics.values(), key=lambda r: r["num_updates"]):
            if row.get("valid_loss") is not None:
                per_epoch[row["epoch"]] = row["valid_loss"]  # the epoch's last validation
        seen = convergence.verdict([per_epoch[e] for e in sorted(per_epoch)], window, min_bits)
        if seen.state == convergence.CONVERGED:
            self.converged = seen.words(window, min_bits)

    def _check_loss(self, loss, updates: int) -> None:
        if loss is None or self.diverged:
            return
        if not fairseq_log.is_finite(loss):
            self.diverged = f"training loss {loss} at update {updates}"
        elif self.first_loss is None:
            self.first_loss = loss
            if self.state is not None:
                write_json(self.state, {"first_loss": loss, "at_update": updates})
        elif loss > self.factor * self.first_loss:
            self.diverged = (f"training loss {loss:.2f} at update {updates} is above {self.factor} x "
                             f"its first value {self.first_loss:.2f}")


def _read_baseline(state: Optional[Path]) -> Optional[float]:
    try:
        return float(json.loads(state.read_text())["first_loss"]) if state else None
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def load_metrics(path: Path) -> Dict[int, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["num_updates"]: row for row in rows}


def save_metrics(path: Path, metrics: Dict[int, dict]) -> None:
    write_text(path, "".join(json.dumps(metrics[e], sort_keys=True) + "\n" for e in sorted(metrics)))
