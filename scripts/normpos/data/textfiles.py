"""Reading the data steps' text files line-exactly, counting and hashing them; and where the staged data
and the usable cores are. Every write goes through ``normpos.files`` (atomic writes have one home).

Text is UTF-8 and a line ends at ``\\n`` only. Python's default universal-newline mode would also split at
a lone ``\\r`` (Common Crawl has some), which the Moses perl scripts do not, and would silently misalign the
two sides of a parallel corpus; ``normpos.files.write_lines`` writes by the same rule.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from normpos.files import TEXT_ERRORS


def cpu_count() -> int:
    """Cores this process may use (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def shared_data_dir() -> Path:
    """The offline real data staged next to the repository (``../shared/data``), or $NORMPOS_SHARED_DATA."""
    repo = Path(__file__).resolve().parents[3]
    return Path(os.environ.get("NORMPOS_SHARED_DATA", repo.parent / "shared" / "data"))


def open_text(path: Path, mode: str = "r"):
    """Open a text file (``.gz`` transparently) as UTF-8 with ``\\n``-only line ends."""
    path = Path(path)
    if path.suffix == ".gz":
        if "r" in mode:
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors=TEXT_ERRORS, newline="\n")
        raise ValueError("writing .gz is not needed here")
    return open(path, mode, encoding="utf-8", errors=TEXT_ERRORS, newline="\n")


def read_lines(path: Path) -> Iterator[str]:
    """Stream the lines of a text file without their ``\\n`` (perl ``chomp``)."""
    with open_text(path) as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def count_lines(path: Path) -> int:
    """Number of ``\\n``-terminated lines (plus a last unterminated one), counted on bytes for speed."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def hash_file(path: Path) -> dict:
    """Size, sha256, md5 and git blob id of a file in one pass.

    The git blob id (sha1 of ``b"blob <size>\\0" + bytes``) is listed because several known identities in
    shared/data/PROVENANCE.md are git blobs of the files as committed in public repositories.
    """
    path = Path(path)
    size = path.stat().st_size
    sha256, md5, blob = hashlib.sha256(), hashlib.md5(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
            blob.update(block)
    return {"size": size, "sha256": sha256.hexdigest(), "md5": md5.hexdigest(), "git_blob": blob.hexdigest()}


def text_hash(lines: Iterable[str], algorithm: str = "md5") -> str:
    """Hash of lines written one per line, as ``md5sum``/``sha256sum`` of the plain-text file would give."""
    h = hashlib.new(algorithm)
    for line in lines:
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()
