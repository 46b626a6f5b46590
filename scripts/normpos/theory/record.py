"""The output folder's ``measurements.csv`` as the cache of ``python -m normpos.theory``: measure what is new.

Fig. 3 for a new scheme (issue 26) needs that scheme's models only: the 14 of ``results/theory/schemes`` took
32 minutes and do not change when a scheme is added. So when ``--out`` already holds ``measurements.csv`` and
``run.json``, the command measures only the models (setting, depth, seed) missing from it and writes the
record's rows followed by the new ones; report and figures are re-rendered from the merged file.

Rows of different measurements must not stand in one report, so the record is used only when it was made
under the same settings: every option in :data:`SAME` and the same data (the sha256 of its files, as
run.json names them). Otherwise the command refuses in one line (measure into another ``--out``, or delete
the record to measure it again): re-measuring a 32-minute record silently is never what a one-scheme call
means. The models of a record are not re-measured under the current code (as the frontier's runs are not,
``normpos.frontier.record``): run.json's ``sessions`` say which commit measured which schemes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .sweep import Job, setting_name

#: the options that define a measurement (run.json's ``options``); --schemes adds to it, the rest only say
#: where and how fast it runs (out, threads, progress)
SAME = ("inits", "depths", "seeds", "batches", "max_tokens", "per_layer_depth", "theory_depths", "theory_seeds",
        "dropout", "checkpoint", "checkpoint_label", "model_args", "device")
#: run.json's fields of one invocation, kept per invocation in ``sessions`` when a record grows
SESSION = ("command", "git_commit", "machine", "wall_seconds", "cpu_seconds", "models_measured_now",
           "load_average_start_end", "finished")


class RecordMismatch(ValueError):
    """The folder's record was measured under other settings; the message is one line."""


@dataclass
class Record:
    rows: List[dict] = field(default_factory=list)  # measurements.csv as read (strings: written back as they were)
    meta: Optional[dict] = None                     # its run.json (None: no record)
    models: set = field(default_factory=set)        # job_key of every model in it

    def has(self, job: Job) -> bool:
        return job_key(job) in self.models


def job_key(job: Job) -> tuple:
    """A model as its rows name it: (state, setting, depth, seed) at init; a checkpoint's rows name the
    checkpoint's own scheme and depth, so (state, seed) there."""
    if job.state != "init":
        return (job.state, job.seed)
    return ("init", setting_name(job.setting), job.depth, job.seed)


def row_key(row: dict) -> tuple:
    if row["state"] != "init":
        return (row["state"], int(row["seed"]))
    return ("init", row["setting"], int(row["depth"]), int(row["seed"]))


def read(out: Path, options: dict, data: dict) -> Record:
    """The record in ``out`` if it was measured under ``options`` (run.json's form) on ``data`` (its
    data_record); an empty Record when there is none; :class:`RecordMismatch` when it differs."""
    out = Path(out)
    if not (out / "measurements.csv").is_file() or not (out / "run.json").is_file():
        return Record()
    meta = json.loads((out / "run.json").read_text())
    old = meta["options"]
    changed = [f"{k} {old.get(k)!r} (this command: {options.get(k)!r})" for k in SAME if old.get(k) != options.get(k)]
    if meta.get("data_sha256", data["data_sha256"]) != data["data_sha256"] or meta["dictionary_types"] != data["dictionary_types"]:
        changed.append(f"data {meta.get('data_dir')} with other files (this command: {data['data_dir']})")
    if changed:
        raise RecordMismatch(f"{out / 'measurements.csv'} was measured with {'; '.join(changed)}: measure into "
                             "another --out, or delete that record to measure it again")
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return Record(rows, meta, {row_key(r) for r in rows})


def merged_meta(record: Record, now: dict, schemes_now: List[str]) -> dict:
    """run.json of the merged record: this invocation's fields at the top (as before), the schemes of both,
    and ``sessions``: per invocation that measured models, its command, commit, machine, time and schemes.
    ``schemes_now``: the schemes whose models this invocation added (none: the record's run.json unchanged)."""
    if record.meta is None:
        return now
    old = record.meta
    if not schemes_now:
        return old  # nothing was added: the record and its provenance stay as they were
    sessions = old.get("sessions") or [{**{k: old[k] for k in SESSION if k in old},
                                        "schemes_measured": list(old["options"]["schemes"])}]
    sessions = sessions + [{**{k: now[k] for k in SESSION}, "schemes_measured": schemes_now}]
    schemes = list(dict.fromkeys([*old["options"]["schemes"], *now["options"]["schemes"]]))
    return {**now, "options": {**now["options"], "schemes": schemes},
            "schemes": {**old.get("schemes", {}), **now["schemes"]}, "sessions": sessions}
