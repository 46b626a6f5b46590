"""Child processes of the proof, each under a deadline.

Each child runs in its own process group, so that stopping it also stops what it started (Hydra's joblib
workers, fairseq-train, fairseq's data loaders). Its output (stdout and stderr) is streamed line by line to
a log file and, when asked, to our stdout with a prefix (the progress a user watches); every line is kept
with the time it arrived, which the packing measurement needs to know when all runs were training at once.
Since each child has its own process group, a signal to the proof does not reach it: the proof stops every
child still running (``stop_all``) before it exits, however it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[3]
LIVE: set = set()  # children started and not yet known to have ended


def python_module(module: str, *args: str) -> List[str]:
    """``python -m module args``, with the interpreter running the proof (``make gpu-proof PY=...``)."""
    return [sys.executable, "-m", module, *args]


# unbuffered: lines are timed as they come; native numerics: a GPU proof measures speed, and its packing step
# sets each child's CPU threads itself (normpos.numerics would fix them at 2; GPU kernels are not pinned anyway)
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "NORMPOS_NUMERICS": "native"}


class Child:
    """One child process; ``lines`` holds ``(time.monotonic(), line)`` for every line it printed."""

    def __init__(self, argv: Sequence[str], log: Path, prefix: Optional[str] = None, env: Optional[dict] = None,
                 echo: Optional[Callable[[str], bool]] = None):
        self.argv = list(argv)
        self.echo = echo  # which lines to show (with ``prefix``); all when None
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.started = time.monotonic()
        self.lines: List[Tuple[float, str]] = []
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=REPO, env={**os.environ, **CHILD_ENV, **(env or {})},
                                     start_new_session=True)
        LIVE.add(self)
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        with open(self.log, "w", encoding="utf-8") as log:
            for line in self.proc.stdout:
                arrived = time.monotonic()
                log.write(line)
                log.flush()  # a log a user can tail while the part runs
                self.lines.append((arrived, line.rstrip("\n")))
                if self.prefix is not None and (self.echo is None or self.echo(line)):
                    print(f"{self.prefix}{line.rstrip()}", flush=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, deadline: float) -> bool:
        """Wait for the child to exit by itself until ``deadline`` (monotonic); True if it did."""
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        self._pump.join(timeout=5)
        LIVE.discard(self)
        return True

    def stop(self, grace: float = 5.0) -> None:
        """Stop the child and everything it started: SIGTERM to its group, SIGKILL after ``grace`` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.running():
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + grace
            while self.running() and time.monotonic() < end:
                time.sleep(0.1)
        self.proc.wait()
        self._pump.join(timeout=5)
        # the group may outlive its leader (a joblib worker still decoding): make sure nothing is left
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        LIVE.discard(self)

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def tail(self, count: int = 3) -> str:
        """The last non-empty lines, joined: the reason shown when the child failed."""
        lines = [text for _, text in self.lines if text.strip()]
        return " / ".join(lines[-count:]) or "(no output)"


def stop_all() -> None:
    """Stop every child still running (the proof is ending: normally, on an error or on a signal)."""
    for child in list(LIVE):
        child.stop(grace=2.0)


def run_until(argv: Sequence[str], log: Path, prefix: Optional[str] = None, *, deadline: float,
              env: Optional[dict] = None, echo: Optional[Callable[[str], bool]] = None) -> Child:
    """Run one child to its end or to ``deadline``, whichever comes first (then it is stopped)."""
    child = Child(argv, log, prefix=prefix, env=env, echo=echo)
    if not child.wait(deadline):
        child.stop()
    return child
