"""The measurements of Xiong et al. 2020, sec. 3.4 / Fig. 3 as a list of jobs and the rows of one CSV.

A job is one model: a setting (scheme, FFN init or the theory's assumptions), a depth and a seed. Its
result becomes long-format CSV rows (one number per row, with what it is and what the theory predicts
for it), so the report and any later analysis read the same file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from . import predict
from .model import Setting

COLUMNS = [
    "setting", "scheme", "ffn_init", "theory_assumptions", "dropout", "state", "d", "ffn_dim",
    "depth", "seed", "batch", "stack", "layer", "param", "quantity", "value",
    "pred_low", "pred_high", "paper_low", "paper_high",
]
THEORY = "theory"  # the setting name used for the theory's assumptions (FFN init does not apply)


def setting_name(setting: Setting, state: str = "init") -> str:
    init = THEORY if setting.theory_assumptions else setting.ffn_init
    return f"{setting.scheme}/{init}" + ("" if state == "init" else f"/{state}")


@dataclass(frozen=True)
class Job:
    setting: Setting
    depth: int
    seed: int
    batches: int
    per_layer: bool  # measure every layer's W^1 and W^2 (Fig. 3a,b), not only the last W^2
    checkpoint: Optional[Path] = None
    state: str = "init"  # "init", or the label of the checkpoint (e.g. "after-warmup")

    @property
    def key(self) -> str:
        """Identifies the job in a resumed run's partial file."""
        return f"{setting_name(self.setting, self.state)}|{self.depth}|{self.seed}|{self.batches}|{int(self.per_layer)}"


#: the schemes that Lemma 2 and Theorem 1 describe; the theory setting is measured for these only
THEORY_SCHEMES = ("post_ln", "pre_ln")


def plan(
    schemes: Iterable[str], inits: Iterable[str], depths: Iterable[int], seeds: int, batches: int,
    per_layer_depth: int, theory_depths: Iterable[int], theory_seeds: int, dropout: float,
    model_args: tuple = (), checkpoint: Optional[Path] = None, checkpoint_label: str = "after-warmup",
) -> list:
    """Every job of a run: per scheme, each FFN init then the theory's assumptions, by depth, then seed."""
    jobs = []
    for scheme in schemes:
        for init in inits:
            setting = Setting(scheme, init, False, dropout, model_args)
            jobs += [Job(setting, depth, seed, batches, depth == per_layer_depth)
                     for depth in sorted(depths) for seed in range(1, seeds + 1)]
        if scheme not in THEORY_SCHEMES:
            continue  # the theory's assumptions (and its predictions) are Post-LN's and Pre-LN's
        theory = Setting(scheme, "xavier", True, 0.0, model_args)
        jobs += [Job(theory, depth, seed, batches, depth == per_layer_depth)
                 for depth in sorted(theory_depths) for seed in range(1, theory_seeds + 1)]
    if checkpoint is not None:
        # the checkpoint fixes scheme, shape and init (read back from it in ``rows``)
        label = Setting("checkpoint", "-", False, dropout, model_args)
        jobs += [Job(label, 0, seed, batches, True, checkpoint, checkpoint_label) for seed in range(1, seeds + 1)]
    return jobs


def rows(job: Job, result: dict) -> Iterator[dict]:
    """The CSV rows of one job's result (see ``measure.measure_model``), with the predictions beside them."""
    s = job.setting
    if job.checkpoint is not None:
        # a loaded model is what its checkpoint says it is
        s = Setting(result["scheme"], result["ffn_init"], False, result["dropout"], s.model_args)
    d, ffn_dim = result["d"], result["ffn_dim"]
    base = {
        "setting": setting_name(s, job.state), "scheme": s.scheme, "ffn_init": s.ffn_init,
        "theory_assumptions": int(s.theory_assumptions), "dropout": s.effective_dropout, "state": job.state,
        "d": d, "ffn_dim": ffn_dim, "depth": result["depth"], "seed": job.seed,
    }
    init = predict.Init(d, ffn_dim, s.ffn_init, s.theory_assumptions, s.effective_dropout)
    for quantity in ("loss", "ntokens", "nsentences"):
        for b, value in enumerate(result[quantity]):
            yield {**base, "batch": b, "quantity": quantity, "value": value}
    for (stack, layer, param), values in result["grad_norm"].items():
        for b, value in enumerate(values):
            yield {**base, "batch": b, "stack": stack, "layer": layer, "param": param,
                   "quantity": "grad_norm", "value": value}
        yield {**base, "batch": "mean", "stack": stack, "layer": layer, "param": param,
               "quantity": "expected_grad_norm", "value": result["expected_grad_norm"][(stack, layer, param)]}
    for quantity in ("hidden_sq", "ffn_ln_input_sq"):
        for (stack, layer), value in result[quantity].items():
            row = {**base, "batch": "mean", "stack": stack, "layer": layer, "quantity": quantity, "value": value}
            ours = predict.lemma2(s.scheme, quantity, stack, layer, init) if job.state == "init" else None
            paper = predict.lemma2_paper(s.scheme, quantity, layer) if job.state == "init" else None
            if ours:
                row["pred_low"], row["pred_high"] = ours[0] * d, ours[1] * d
            if paper:
                row["paper_low"], row["paper_high"] = paper[0] * d, paper[1] * d
            yield row


class PartialCSV:
    """Rows of finished jobs, appended as each job ends, so that a killed run resumes where it stopped.

    A job's rows end with a marker row (quantity ``done``); rows of a job without its marker are ignored.
    """

    def __init__(self, path: Path):
        self.path = path
        self.done: dict = {}
        if path.exists():
            pending: dict = {}
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    key = row.pop("job")
                    if row["quantity"] == "done":
                        self.done[key] = pending.pop(key, [])
                    else:
                        pending.setdefault(key, []).append(row)
        new = not path.exists()
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, ["job", *COLUMNS])
        if new:
            self._writer.writeheader()

    def add(self, job: Job, job_rows: list) -> None:
        for row in job_rows:
            self._writer.writerow({"job": job.key, **row})
        self._writer.writerow({"job": job.key, "quantity": "done"})
        self._file.flush()
        self.done[job.key] = job_rows

    def close(self) -> None:
        self._file.close()


def write_csv(path: Path, all_rows: Iterable[dict]) -> None:
    """Write the final CSV under a temporary name, then rename: a partial file is never mistaken for it."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for row in all_rows:
            writer.writerow(row)
    tmp.replace(path)
