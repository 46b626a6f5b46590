"""Which code made a result: the git commit, marked ``+dirty`` when the code differs from it.

Outputs (``results/``, ``data/``) do not count as changes: a run writes its own results into the working
tree (and a sweep its neighbours'), and those must not make the code that produced them look modified.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT_DIRS = ("results", "data")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def git_commit(short: bool = False) -> str:
    """``<sha>``, ``<sha>+dirty`` (code changed or added outside results/ and data/), or ``unknown``."""
    head = _git("rev-parse", *(["--short"] if short else []), "HEAD")
    if head.returncode != 0:
        return "unknown"
    excludes = [f":(exclude){d}" for d in OUTPUT_DIRS]
    dirty = _git("status", "--porcelain", "--", ".", *excludes).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def portable_path(path) -> str:
    """A path as a committed record should hold it: relative to the checkout when it lies inside it (so the
    record reads the same on every clone and names no machine's folders), otherwise as given."""
    text = str(path)
    try:
        return Path(text).resolve().relative_to(REPO).as_posix() or "."
    except ValueError:
        return text
