"""The checkpoints of a run directory: what a finished run keeps.

fairseq writes them (``<run dir>/checkpoints/``); this module decides which survive once a run is final.
"""

import re
from pathlib import Path


def prune_checkpoints(folder: Path, keep: bool) -> None:
    """Disk is finite: a final run needs no checkpoint_last.pt (only resuming does); scoring uses
    checkpoint_best.pt and the kept epoch checkpoints. A diverged run keeps none."""
    for path in folder.glob("*.pt"):
        interval = re.fullmatch(r"checkpoint_\d+_\d+\.pt", path.name)  # --save-interval-updates ones
        if not keep or path.name == "checkpoint_last.pt" or interval:
            path.unlink()
