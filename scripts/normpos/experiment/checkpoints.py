"""The checkpoints of a run directory: what a finished run keeps.

fairseq writes them (``<run dir>/checkpoints/``); this module decides which survive once a run is final.
"""

import re
from pathlib import Path


def prune_checkpoints(folder: Path, keep: bool, keep_last: bool = True) -> None:
    """Disk is finite: scoring uses checkpoint_best.pt and the kept epoch checkpoints; checkpoint_last.pt is
    what continuing a finished run with a larger budget needs (``keep_last``; ``run.keep_last=false`` trades
    that for the disk). Interval checkpoints serve only resuming a killed run. A diverged run keeps none."""
    for path in folder.glob("*.pt"):
        interval = re.fullmatch(r"checkpoint_\d+_\d+\.pt", path.name)  # --save-interval-updates ones
        if not keep or interval or (path.name == "checkpoint_last.pt" and not keep_last):
            path.unlink()
