"""The data of the proof: Multi30k prepared as ``make data-multi30k`` does, or a binarized folder given.

On a lent GPU the prepared folder ``data/multi30k/bpe8000`` (16 MB) is usually carried along; when it is
absent it is prepared here by ``python -m normpos.data prepare multi30k`` from ``--source`` (the raw
Multi30k files: there is no internet to download them), which takes about a minute. A folder given with
``--data`` (the tests' tiny corpus) must hold fairseq's binarized splits, with the untokenized references in
``ref/`` beside it, as the data recipes write them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from normpos.gpu_proof import ProofError
from normpos.gpu_proof.children import REPO, python_module, run_until

PREPARED = REPO / "data" / "multi30k" / "bpe8000" / "bin"


def is_binarized(folder: Path) -> bool:
    return all((folder / f"{split}.de-en.{lang}.bin").is_file() for split in ("train", "valid", "test")
               for lang in ("de", "en"))


def ensure_data(data: Optional[Path], source: Optional[str], log: Path, deadline: float) -> Path:
    """The binarized folder to train on; prepares Multi30k from ``source`` when it is not there."""
    if data is not None:
        if not is_binarized(data):
            raise ProofError(f"--data {data} is not a binarized de-en folder (train/valid/test .bin files)")
        if not (data.parent / "ref" / "test.en").is_file():
            raise ProofError(f"--data {data}: the untokenized references {data.parent / 'ref' / 'test.en'} are missing")
        return data
    if is_binarized(PREPARED):
        print(f"[data] {PREPARED.relative_to(REPO)}: prepared", flush=True)
        return PREPARED
    print(f"[data] {PREPARED.relative_to(REPO)} is absent: preparing Multi30k"
          + (f" from {source}" if source else " (no SOURCE given: from ../shared/data or the internet)"), flush=True)
    start = time.monotonic()
    prep = run_until(python_module("normpos.data", "prepare", "multi30k", *(["--source", source] if source else [])),
                     log, "[data] ", deadline=deadline)
    if prep.returncode != 0 or not is_binarized(PREPARED):
        raise ProofError(f"preparing Multi30k failed ({prep.tail(1)}); carry data/multi30k or pass "
                         f"SOURCE=<folder with the raw Multi30k files>")
    print(f"[data] prepared in {time.monotonic() - start:.0f} s", flush=True)
    return PREPARED
