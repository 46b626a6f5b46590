"""Read the result files of an experiment's runs: the one place the report knows the run-directory layout.

A run directory (written by the sweep runner and by ``normpos.scoring``) holds ``run.json`` (what was run:
config folder name, slug, label, seed, scheme, optimizer, lr, warm-up, budget, the paper's number, command,
commit, machine), ``status.json`` (finished | diverged | failed, the updates trained and the budget it had;
absent while the run is still going), ``metrics.jsonl`` (one record per validation: epoch, num_updates,
train/valid loss in fairseq's base-2 units, valid BLEU or null) and, once scored, ``score.json`` and the
decoded test set (``test.hyp.detok.txt``). Older run directories lack some keys (``budget``): those read as
unknown. Nothing here imports training code: reports read files only.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

FINISHED, DIVERGED, FAILED, RUNNING = "finished", "diverged", "failed", "running"
OUTCOMES = (FINISHED, DIVERGED, FAILED)


class ReportError(Exception):
    """A bad or missing result file, reported as one line ``normpos: error: ...``."""


@dataclass
class Run:
    path: Path
    info: dict  # run.json
    status: str  # finished | diverged | failed | running (no status.json yet)
    reason: str
    epochs: int | None
    metrics: list = field(default_factory=list)  # metrics.jsonl records, in order, later duplicates win
    score: dict | None = None  # score.json
    budget: dict | None = None  # {"max_update": N, "max_epoch": M}, 0 = no limit; None: not recorded
    num_updates: int | None = None  # updates trained (status.json)

    @property
    def config(self) -> str:
        return self.info["config"]

    def curve(self, metric: str, x: str) -> list:
        """(x, value) points of ``metric`` with a finite value; ``x`` is ``epoch`` or ``num_updates``."""
        points = []
        for record in self.metrics:
            value = record.get(metric)
            if value is not None and record.get(x) is not None and math.isfinite(value):
                points.append((record[x], float(value)))
        return points


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path} must hold a JSON object")
    return value


def _read_metrics(path: Path) -> list:
    """One record per validation; a resumed run may log a validation twice: the later record wins."""
    if not path.exists():
        return []
    records = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ReportError(f"{path}:{number} is not a JSON record") from None
        if not isinstance(record, dict):
            raise ReportError(f"{path}:{number} is not a JSON object")
        # JSON has no NaN/inf literal in strict writers: a diverged loss may come as a string
        for key in ("train_loss", "valid_loss", "valid_bleu"):
            if isinstance(record.get(key), str):
                try:
                    record[key] = float(record[key])
                except ValueError:
                    record[key] = None
        records[(record.get("epoch"), record.get("num_updates"))] = record
    return list(records.values())


def load_run(path: Path) -> Run:
    info = _read_json(path / "run.json")
    missing = [key for key in ("config", "seed") if info.get(key) is None]
    if missing:
        raise ReportError(f"{path}/run.json has no {', '.join(missing)}")
    info.setdefault("label", info["config"])
    status = _read_json(path / "status.json") if (path / "status.json").exists() else {"status": RUNNING}
    if status.get("status") not in (*OUTCOMES, RUNNING):
        raise ReportError(f"{path}/status.json: status {status.get('status')!r} is not one of {', '.join(OUTCOMES)}")
    score = _read_json(path / "score.json") if (path / "score.json").exists() else None
    # status.json's budget is the one the run was last trained to (a larger budget continues a finished run);
    # run.json's is what was asked when it was written
    budget = status.get("budget") or info.get("budget")
    return Run(path=path, info=info, status=status["status"], reason=status.get("reason") or "",
               epochs=status.get("epochs"), metrics=_read_metrics(path / "metrics.jsonl"), score=score,
               budget=budget if isinstance(budget, dict) else None, num_updates=status.get("num_updates"))


def load_runs(root: Path) -> list:
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder of runs (run the sweep first)")
    runs = [load_run(p.parent) for p in sorted(root.rglob("run.json"))]
    if not runs:
        raise ReportError(f"no run directories (run.json) below {root}")
    return runs


def has_warmup(info: dict) -> bool:
    """Only the warm-up schedule warms up: warmup_updates is recorded for every run (a Pre-LN step_once run
    says 4000) but read by that schedule alone."""
    return info.get("lr_scheduler", "warmup_inverse_sqrt") == "warmup_inverse_sqrt" and \
        int(info.get("warmup_updates") or 1) > 1


def experiment_title(runs: list) -> str:
    """``dataset / experiment (paper section)`` of the first run, for titles."""
    info = runs[0].info
    title = f"{info.get('dataset', '')} / {info.get('experiment', '')}"
    return title + (f" ({info['section']})" if info.get("section") else "")


def _order(run: Run) -> tuple:
    # Post-LN before Pre-LN, then optimizer, lr and warm-up: the paper's reading order; slug breaks ties.
    i = run.info
    return (str(i.get("scheme", "")), str(i.get("optimizer", "")), float(i.get("lr") or 0),
            float(i.get("warmup_updates") or 0), run.config)


def by_config(runs: list) -> dict:
    """config slug -> its runs (sorted by seed), configurations in the paper's reading order."""
    groups = {}
    for run in sorted(runs, key=lambda r: (_order(r), r.info["seed"])):
        groups.setdefault(run.config, []).append(run)
    return groups


def mean_std(values: list) -> tuple:
    """(mean, sample standard deviation or None for fewer than 2 values, n); (None, None, 0) when empty."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)
