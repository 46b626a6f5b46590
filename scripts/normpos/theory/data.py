"""Which real text the theory check reads, binarized for fairseq (Xiong et al. 2020, sec. 3.4: "same model and data").

Three sources, in this order of preference:

1. a prepared fairseq data folder (``--data DIR``, e.g. ``data/iwslt14/.../bin`` from the data pipeline):
   its ``valid`` split and its own dictionary (built from train) are used as they are;
2. ``iwslt14`` (default): fairseq's own BPE'd IWSLT14 valid set in ``../shared/data`` (every 23rd line of
   the cleaned *training* corpus, so real training-split text). No IWSLT14 train text is available offline,
   so the joined dictionary is built from valid+test: 9.9K types instead of the 10K a train-built one has;
3. ``multi30k`` (fallback): the Multi30k tokenized, lowercased text (no BPE), dictionary from its train
   split cut to 10K words like the IWSLT one; its ``val`` split is measured.

2 and 3 are binarized once with ``fairseq-preprocess`` into ``data/theory-cache/NAME/`` (gitignored),
written to a temporary folder and renamed only when fairseq succeeded.

A source is recorded by name and by the sha256 of the files it reads (:func:`checksums`), never by this
machine's absolute paths, so a committed ``run.json`` or report reads the same on every clone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / "data" / "theory-cache"
SPLIT = "valid"  # the split every source is measured on (issue 4: "the prepared IWSLT14 valid data")
SOURCES = ("iwslt14", "multi30k")


class DataMissing(Exception):
    """The data asked for is not there; the message says where it was looked for."""


@dataclass(frozen=True)
class DataSource:
    bin_dir: Path  # fairseq data folder with dict.de.txt and the SPLIT split
    description: str  # one line for the report: what text, which dictionary (no absolute path)
    files: tuple = ()  # the files the measurement's text comes from, checksummed in the record


def shared_data() -> Path:
    return Path(os.environ.get("NORMPOS_SHARED_DATA", REPO.parent / "shared" / "data"))


def record_name(path: Path) -> str:
    """How a record names a file: ``shared:<path under the shared data folder>`` for the shared data,
    relative to the checkout inside it, else as given."""
    from normpos.provenance import portable_path

    try:
        return "shared:" + Path(path).resolve().relative_to(shared_data().resolve()).as_posix()
    except ValueError:
        return portable_path(path)


def checksums(source: DataSource) -> dict:
    """{record name: sha256} of every file the source's text comes from."""
    sums = {}
    for path in source.files:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sums[record_name(path)] = digest.hexdigest()
    return sums


def _require(paths: list[Path], hint: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataMissing(f"{missing[0]} is absent ({hint})")


def _binarize(dest: Path, dict_prefs: list[Path], valid_pref: Path, extra: list[str]) -> None:
    """fairseq-preprocess with one joined dictionary built from the ``dict_prefs`` texts; the split is
    ``valid_pref``. Written to a temporary folder and renamed, so a killed or concurrent run leaves no half
    folder behind."""
    if (dest / "dict.de.txt").exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        # fairseq-preprocess builds the dictionary from --trainpref only: give it the texts concatenated
        for lang in ("de", "en"):
            with open(tmp / f"dict-text.{lang}", "w") as out:
                for pref in dict_prefs:
                    out.write(Path(f"{pref}.{lang}").read_text())
        cmd = [
            sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "de", "--target-lang", "en",
            "--trainpref", str(tmp / "dict-text"), "--validpref", str(valid_pref), "--destdir", str(tmp / "bin"),
            "--joined-dictionary", "--workers", "1", *extra,
        ]
        print(f"binarizing {valid_pref} with fairseq-preprocess -> {dest}", file=sys.stderr)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
            raise DataMissing(f"fairseq-preprocess failed (exit {done.returncode}): {tail}")
        # recorded as one would rerun it: final folder, and what the temporary dictionary text was
        text = "+".join(map(str, dict_prefs))
        record = " ".join(cmd[1:]).replace(str(tmp / "bin"), str(dest)).replace(str(tmp / "dict-text"), text)
        (tmp / "bin" / "command.txt").write_text(record + "\n")
        try:
            (tmp / "bin").rename(dest)
        except OSError:
            if not (dest / "dict.de.txt").exists():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _iwslt14() -> DataSource:
    src = shared_data() / "iwslt14" / "fairseq-prepared-partial"
    files = [src / f"{split}.{lang}" for split in ("valid", "test") for lang in ("de", "en")]
    _require(files, "set NORMPOS_SHARED_DATA, or pass --data with a prepared fairseq folder")
    dest = CACHE / "iwslt14"
    _binarize(dest, [src / "valid", src / "test"], src / "valid", [])
    return DataSource(
        dest,
        f"IWSLT14 de-en valid (fairseq prepare-iwslt14.sh, 7,283 pairs of training-split text, "
        f"{record_name(src)}); joined dictionary from valid+test, not train (no train text offline)",
        tuple(files),
    )


def _multi30k() -> DataSource:
    tok = shared_data() / "multi30k" / "task1" / "tok"
    files = [tok / f"{split}.lc.norm.tok.{lang}" for split in ("train", "val") for lang in ("de", "en")]
    _require(files, "set NORMPOS_SHARED_DATA, or pass --data with a prepared fairseq folder")
    dest = CACHE / "multi30k"
    # 10K words, the size of the paper's IWSLT14 BPE vocabulary (App. A.1)
    _binarize(dest, [tok / "train.lc.norm.tok"], tok / "val.lc.norm.tok", ["--nwordssrc", "10000"])
    return DataSource(dest, f"Multi30k de-en val (1,014 pairs, {record_name(tok)}); joined dictionary from its train, "
                      "10K words", tuple(files))


def resolve(source: str) -> DataSource:
    """``iwslt14``, ``multi30k`` or a prepared fairseq data folder (with ``dict.de.txt``, or its ``bin/``)."""
    if source == "iwslt14":
        return _iwslt14()
    if source == "multi30k":
        return _multi30k()
    folder = Path(source)
    for cand in (folder, folder / "bin"):
        if (cand / "dict.de.txt").exists():
            if not any(cand.glob(f"{SPLIT}.de-en.de.*")):
                raise DataMissing(f"{cand} has no {SPLIT} split (expected {SPLIT}.de-en.de.bin/.idx)")
            files = (cand / "dict.de.txt", *sorted(cand.glob(f"{SPLIT}.de-en.*")))
            return DataSource(cand, f"prepared fairseq data {record_name(cand)}, split {SPLIT}, its own dictionary",
                              files)
    raise DataMissing(
        f"--data {source}: neither {', '.join(SOURCES)} nor a fairseq data folder with dict.de.txt"
    )
