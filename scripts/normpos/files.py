"""Atomic writes: the one place every step of the pipeline (data, runs, scoring, reports) writes files with.

A file appears under its final name only when complete: it is written under a temporary name in the same
folder and renamed into place, so an existing output is always a finished one and a killed step loses
nothing (style guide, rule 5). Text is UTF-8 with ``\\n`` line ends (reading by the same rule:
``normpos.data.textfiles``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Undecodable bytes become U+FFFD instead of aborting an hour into WMT14; the perl tools also carry on.
TEXT_ERRORS = "replace"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file or a folder); rename it onto ``path`` on success.

    On any exception the temporary is removed and ``path`` is left as it was, so a failed or killed step
    never leaves a partial output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            _remove(path)  # os.replace cannot replace a non-empty folder
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, value, sort_keys: bool = False) -> None:
    """Write ``value`` as indented JSON (one trailing newline) to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write ``lines`` (without ``\\n``) to ``path`` atomically, ``\\n`` after each; return how many."""
    n = 0
    with atomic_output(Path(path)) as tmp, open(tmp, "w", encoding="utf-8", errors=TEXT_ERRORS, newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
            n += 1
    return n


def concat_files(paths: Iterable[Path], out: Path) -> None:
    """``cat paths > out``, atomically."""
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        for p in paths:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
