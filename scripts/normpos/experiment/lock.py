"""One trainer per run directory at a time.

Two sweeps over one grid (two terminals, or a Slurm requeue beside a job that is still alive) must not train
the same run at once: both would append to train.log and metrics.jsonl and fight over checkpoint_last.pt.
Each run holds an exclusive ``flock`` on ``<run dir>/.lock`` while it trains and scores. The kernel drops
the lock when its holder dies however it dies (SIGKILL included), so a killed sweep never leaves a stale
lock behind; the file itself holds the holder's pid and host for the message a second sweep prints.
"""

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


class Busy(Exception):
    """The run directory is locked by another live process."""


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold the run's lock for the block, or raise :class:`Busy` at once (never waits)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"being trained by {holder(path) or 'another process'}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing drops the lock


def holder(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
