"""Follow fairseq's training log: per-validation metrics rows, and divergence of the training loss.

A run is *diverged* (an outcome, not an error; the sweep goes on) when its training loss is not finite, when
fairseq prints one of ``fairseq_log.DIVERGENCE_MARKERS`` (e.g. fp16's minimum loss scale), or when the loss
climbs above ``factor`` x its first logged value.
"""

import json
from pathlib import Path
from typing import Dict, Optional

from normpos.files import write_text

from . import fairseq_log


class Watcher:
    """Follows fairseq's log: collects per-epoch metrics, spots divergence in the training loss."""

    def __init__(self, factor: float, metrics: Dict[int, dict]):
        self.factor = factor
        self.metrics = metrics
        self.first_loss: Optional[float] = None
        self.train_summary: dict = {}
        self.progress: Optional[float] = None
        self.diverged: Optional[str] = None
        self.saw_marker: Optional[str] = None
        self.os_error: Optional[str] = None  # the last "[Errno N] ..." fairseq printed: why it may have stopped

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
            print(f"  update {int(stats.get('num_updates', 0))}: train loss {stats.get('loss')}, "
                  f"lr {stats.get('lr')}", flush=True)
            self.train_summary = {"train_loss": stats.get("loss"), "train_lr": stats.get("lr"),
                                  "train_num_updates": stats.get("num_updates"), "epoch": stats.get("epoch")}
            self.progress = stats.get("update")
            self._check_loss(stats.get("loss"), int(stats.get("num_updates", 0) or 0))
        elif kind == "train":
            self.train_summary = stats
            self.progress = stats.get("epoch")
            self._check_loss(stats.get("train_loss"), int(stats.get("train_num_updates", 0) or 0))
        elif kind == "valid":
            record = fairseq_log.epoch_record(self.train_summary, stats, self.progress)
            self.metrics[record["num_updates"]] = record
            return True
        return False

    def _check_loss(self, loss, updates: int) -> None:
        if loss is None or self.diverged:
            return
        if not fairseq_log.is_finite(loss):
            self.diverged = f"training loss {loss} at update {updates}"
        elif self.first_loss is None:
            self.first_loss = loss
        elif loss > self.factor * self.first_loss:
            self.diverged = (f"training loss {loss:.2f} at update {updates} is above {self.factor} x "
                             f"its first value {self.first_loss:.2f}")


def load_metrics(path: Path) -> Dict[int, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["num_updates"]: row for row in rows}


def save_metrics(path: Path, metrics: Dict[int, dict]) -> None:
    write_text(path, "".join(json.dumps(metrics[e], sort_keys=True) + "\n" for e in sorted(metrics)))
