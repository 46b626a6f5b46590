"""The golden cases' data: the first 400 / 40 sentence pairs of Multi30k's tokenized training text, binarized
by fairseq-preprocess with a joined dictionary (deterministic: the same files give the same dictionary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SPLITS = {"train": (0, 400), "valid": (400, 440)}
LANGS = ("de", "en")


class GoldenError(RuntimeError):
    """A golden case that cannot run here; the message says why."""


def source_dir() -> Path:
    """Multi30k's tokenized, lowercased text in the shared data folder (``NORMPOS_SHARED_DATA`` to move it)."""
    shared = Path(os.environ.get("NORMPOS_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared / "multi30k" / "task1" / "tok"


def build(dest: Path) -> Path:
    """``dest/bin``, fairseq's binarized tiny corpus (made once; reused when its dictionary exists)."""
    bin_dir = dest / "bin"
    if (bin_dir / "dict.en.txt").exists():
        return bin_dir
    src = source_dir()
    texts = {lang: src / f"train.lc.norm.tok.{lang}" for lang in LANGS}
    missing = [str(p) for p in texts.values() if not p.is_file()]
    if missing:
        raise GoldenError(f"golden curves need Multi30k's tokenized text; {missing[0]} is absent "
                          "(set NORMPOS_SHARED_DATA to the shared data folder)")
    dest.mkdir(parents=True, exist_ok=True)
    for lang, path in texts.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for split, (a, b) in SPLITS.items():
            (dest / f"{split}.{lang}").write_text("\n".join(lines[a:b]) + "\n", encoding="utf-8")
    tmp = dest / "bin.partial"
    subprocess.run(
        [sys.executable, "-m", "normpos.fairseq_run", "preprocess", "--source-lang", "de", "--target-lang", "en",
         "--joined-dictionary", "--trainpref", str(dest / "train"), "--validpref", str(dest / "valid"),
         "--destdir", str(tmp), "--workers", "1"],
        check=True, capture_output=True,
    )
    tmp.rename(bin_dir)
    return bin_dir
