"""The checkpoints of a run directory: which one a retry resumes from, and what a finished run keeps.

fairseq writes them (``<run dir>/checkpoints/``). Its ``save_checkpoint`` (fairseq/checkpoint_utils.py) writes
the newest interval or epoch checkpoint atomically (temp file + rename), then *copies* it onto
``checkpoint_best.pt`` and ``checkpoint_last.pt`` in place. A run killed during that copy, or a disk that fills
up during it, leaves a truncated ``checkpoint_last.pt``, and every retry then fails with "PytorchStreamReader
failed reading zip archive" although good checkpoints sit beside it. So before a retry ``repair_resume_point``
checks that ``checkpoint_last.pt`` loads. If it does not, the newest good checkpoint (by the update count stored
in it, not by file time) is put in its place, or, when none is good, training restarts from update 0. Damaged
files are kept aside as ``NAME.damaged``: never deleted, and never read by fairseq, scoring or pruning, which
only look at names ending in ``.pt``. Checkpoints are read as fairseq reads them, under torch's weights_only
protection (``normpos_fairseq.checkpoint_compat.load_checkpoint``): one that asks for more than fairseq's types
counts as not loading, and is kept aside without any of it running.
"""

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from normpos.files import atomic_output

from .watch import load_metrics, save_metrics

LAST = "checkpoint_last.pt"
# the names fairseq gives the checkpoints a run can resume from: checkpoint<epoch>.pt,
# checkpoint_<epoch>_<updates>.pt (--save-interval-updates), checkpoint_best.pt and
# checkpoint.best_<metric>_<value>.pt (--keep-best-checkpoints)
RESUMABLE = re.compile(r"checkpoint(\d+|_\d+_\d+|_best|\.best_.+)\.pt")
DAMAGED = ".damaged"


def prune_checkpoints(folder: Path, keep: bool, keep_last: bool = True) -> None:
    """Disk is finite: scoring uses checkpoint_best.pt and the kept epoch checkpoints; checkpoint_last.pt is
    what continuing a finished run with a larger budget needs (``keep_last``; ``run.keep_last=false`` trades
    that for the disk). Interval checkpoints serve only resuming a killed run. A diverged run keeps none."""
    for path in folder.glob("*.pt"):
        interval = re.fullmatch(r"checkpoint_\d+_\d+\.pt", path.name)  # --save-interval-updates ones
        if not keep or interval or (path.name == "checkpoint_last.pt" and not keep_last):
            path.unlink()


@dataclass
class Inspected:
    path: Path
    damage: Optional[str]  # why it does not load; None when it does
    updates: int = -1
    epoch: int = 0


def inspect(path: Path) -> Inspected:
    """Whether ``path`` loads, and the update count and epoch stored in it.

    An OSError (a disk that cannot be read) says nothing about the file and is raised, not called damage."""
    # fairseq's types only, under torch's weights_only protection (memory-mapped): a file that asks for more is
    # refused before it runs, and counts as not loading
    from normpos_fairseq.checkpoint_compat import load_checkpoint

    if path.stat().st_size == 0:
        return Inspected(path, "empty file")
    try:
        state = load_checkpoint(path)
    except OSError:
        raise
    except Exception as err:  # ValueError (damaged; refused), or whatever else torch raises for a bad file
        # the loader's first line says it ("is damaged or not a torch checkpoint (RuntimeError: PytorchStreamReader
        # failed reading zip archive: failed finding central directory)"); the path is the note's already
        first = (str(err).splitlines() or [""])[0].removeprefix(f"checkpoint {path} ")
        return Inspected(path, f"{type(err).__name__}: {first}"[:200])
    try:
        updates = int(state["optimizer_history"][-1]["num_updates"])  # what fairseq's trainer restores
    except (KeyError, IndexError, TypeError, ValueError):
        return Inspected(path, "no update count stored (not a fairseq-train checkpoint)")
    epoch = ((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch", 0)
    return Inspected(path, None, updates, int(epoch))


def _aside_name(path: Path) -> Path:
    aside, n = path.with_name(path.name + DAMAGED), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}{DAMAGED}-{n}")
    return aside


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``NAME.damaged`` (``-2``, ``-3``, ... if taken); return the new path."""
    aside = _aside_name(path)
    os.rename(path, aside)
    return aside


def put_in_place(good: Path, last: Path) -> Path:
    """Copy ``good`` onto ``last`` atomically, keeping the damaged ``last`` aside; return where it went."""
    aside = _aside_name(last)
    with atomic_output(last) as tmp:
        shutil.copyfile(good, tmp)
        try:
            # a second name for the damaged bytes: checkpoint_last.pt is then replaced in one step, so a kill at
            # any moment leaves either the damaged file (repaired again next time) or the good one
            os.link(last, aside)
        except OSError:
            os.rename(last, aside)  # a file system without hard links: a moment without checkpoint_last.pt
    return aside


def remove_partial_writes(folder: Path) -> List[str]:
    """Delete fairseq's unfinished ``*.pt.tmp`` files; return their names.

    fairseq's torch_persistent_save writes ``NAME.pt.tmp`` and renames it only once complete, so a leftover one
    is a save that failed (full disk) or was killed: it holds no checkpoint, only the space that the failed
    run's status.json needs."""
    removed = []
    for path in folder.glob("*.pt.tmp"):
        path.unlink()
        removed.append(path.name)
    return removed


def drop_metrics_after(path: Path, updates: int) -> None:
    """Rows validated after ``updates`` belong to training that was lost: the resumed run logs them again."""
    rows = load_metrics(path)
    kept = {u: row for u, row in rows.items() if u <= updates}
    if len(kept) != len(rows):
        save_metrics(path, kept)


def repair_resume_point(directory: Path) -> Optional[str]:
    """Make sure a retry of the run in ``directory`` resumes from a checkpoint that loads.

    Nothing to do (None) when there is no ``checkpoints/checkpoint_last.pt`` or it loads. Otherwise resume
    from the newest good checkpoint (interval and epoch ones before best at the same update count), or restart
    from update 0 when none is good; metrics rows after the resume point are dropped; every damaged checkpoint
    is kept aside. Returns the note the runner records in status.json (also written to train.log and stdout).
    """
    folder = directory / "checkpoints"
    last = folder / LAST
    if not last.is_file():
        return None
    damage = inspect(last).damage
    if damage is None:
        return None
    candidates = [inspect(p) for p in sorted(folder.glob("*.pt")) if RESUMABLE.fullmatch(p.name)]
    good = [c for c in candidates if c.damage is None]
    # damaged ones could be picked by scoring or by fairseq's --keep-* pruning, which ranks by name
    damaged_others: List[str] = [set_aside(c.path).name + ("" if c.damage == damage else f" ({c.damage})")
                                 for c in candidates if c.damage]
    if good:
        newest = max(good, key=lambda c: (c.updates, "best" not in c.path.name))
        aside = put_in_place(newest.path, last)
        resumed = newest.updates
        note = (f"{LAST} did not load ({damage}); resumed from {newest.path.name} "
                f"(epoch {newest.epoch} @ {newest.updates} updates); the damaged file is checkpoints/{aside.name}")
    else:
        aside = set_aside(last)
        resumed = 0
        note = f"{LAST} did not load ({damage}) and no other checkpoint does; restarted from update 0; " \
               f"the damaged file is checkpoints/{aside.name}"
    if damaged_others:
        note += "; also damaged, set aside as: " + ", ".join(damaged_others)
    drop_metrics_after(directory / "metrics.jsonl", resumed)
    with open(directory / "train.log", "a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} recovered: {note}\n")
    print(f"[{directory}] recovered: {note}", flush=True)
    return note
