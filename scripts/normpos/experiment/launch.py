"""Start a run's training processes in one process group of their own, and stop that whole group.

One run can be several processes: the fairseq-train process(es) the runner starts, the rank workers fairseq
spawns on GPUs (``torch.multiprocessing.spawn``), and data loader workers. They all live in ONE new process
group (its id is the first process's pid), so a stop reaches every one of them:

- **One process** (a single device, or ``train.gpus=N`` on GPUs: fairseq spawns the N ranks itself, with
  nccl): the runner starts fairseq-train once.
- **One process per rank** (``train.gpus=N`` with ``train.cpu=true``): fairseq's spawn starts
  ``min(torch.cuda.device_count(), N)`` processes, none on CPU, so the runner starts the N ranks itself with
  ``--distributed-no-spawn`` (``command.py`` adds the flags common to all ranks; here each gets
  ``--distributed-rank R`` and the rendezvous ``tcp://127.0.0.1:<free port>``). Rank 0's merged
  stdout/stderr is ``lines``, the log the runner reads; rank R > 0 writes ``<log_dir>/train.rank<R>.log``.

Stopping: ``stop()`` sends SIGTERM to the group and SIGKILL ``grace`` seconds later to whatever is left.
If one rank fails, the others are stopped (a rank waiting for a dead peer would otherwise hang until gloo's
30-minute timeout), and ``wait()`` returns the failing rank's exit code.

When the runner itself dies, nothing of the run may live on (it would keep writing into a run directory
that a resumed sweep is using): every process started here carries the parent-death signal SIGKILL
(Linux ``prctl(PR_SET_PDEATHSIG)``, set between fork and exec), fairseq's spawned GPU ranks carry SIGINT
(torch's spawn sets it), and torch's data loader workers exit when their parent goes. SIGTERM or SIGINT to
the runner (``kill``, Ctrl-C, Slurm's scancel) stops the group gracefully first, then takes its usual course.
"""

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

GRACE_SECONDS = 5.0       # between SIGTERM and SIGKILL: enough for fairseq to exit, short enough to wait for
PR_SET_PDEATHSIG = 1      # <linux/prctl.h>
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (rank 0 binds it a few seconds later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_argv(argv: List[str], rank: int, port: int) -> List[str]:
    """fairseq-train's argv for one rank started by us (``--distributed-no-spawn`` is in ``argv``)."""
    return [*argv, "--distributed-rank", str(rank), "--distributed-init-method", f"tcp://127.0.0.1:{port}"]


def _die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that gives the child SIGKILL when its parent dies; None where prctl does not exist.

    The signal follows the death of the *thread* that forked, so a Training must be created and waited for by
    one thread (run_one does both in ``train()``). libc is looked up here, in the parent: between fork and
    exec only the prctl call itself runs.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
              ctypes.c_ulong(0))
        if os.getppid() != parent:  # the parent died before prctl took effect: nobody would signal us
            os._exit(1)

    return preexec


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies, which only wait for their exit status
    to be read, do not count: a container's init may never reap them)."""
    if os.path.isdir("/proc/self"):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                    stat = f.read()
            except OSError:  # it ended while we looked
                continue
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Training:
    """The processes of one training run, in one new process group.

    ``lines`` yields rank 0's merged stdout/stderr line by line; ``stop()`` ends the whole group; ``wait()``
    returns 0, or the exit code of the first process that failed.
    """

    def __init__(self, argv: List[str], env: dict, processes: int = 1, log_dir: Optional[Path] = None,
                 grace: float = GRACE_SECONDS):
        if processes > 1 and log_dir is None:
            raise ValueError("several processes need a log_dir for the logs of ranks > 0")
        self.grace = grace
        self.procs: List[subprocess.Popen] = []
        self.pgid: Optional[int] = None
        self._first_failure: Optional[int] = None  # exit code of the first process seen failing
        self._stopping = threading.RLock()
        self._ended = False
        self._previous_handlers: dict = {}
        port = free_port() if processes > 1 else 0
        try:
            for rank in range(processes):
                self._start(argv if processes == 1 else rank_argv(argv, rank, port), env, rank, log_dir)
        except BaseException:
            self.stop()
            raise
        self.lines = self.procs[0].stdout
        if processes > 1:
            threading.Thread(target=self._stop_on_failure, name="normpos-rank-monitor", daemon=True).start()
        self._install_handlers()

    def _start(self, argv: List[str], env: dict, rank: int, log_dir: Optional[Path]) -> None:
        if rank == 0:
            out, err = subprocess.PIPE, subprocess.STDOUT
        else:
            out = open(Path(log_dir) / f"train.rank{rank}.log", "a", encoding="utf-8")
            out.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
            out.flush()
            err = subprocess.STDOUT
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True, env=env,
                process_group=0 if self.pgid is None else self.pgid, preexec_fn=_die_with_parent())
        finally:
            if rank:
                out.close()  # the child has its own copy
        self.procs.append(proc)
        if self.pgid is None:
            self.pgid = proc.pid

    def _stop_on_failure(self) -> None:
        """With several ranks: when one fails, stop the others instead of letting them wait for it."""
        while True:
            codes = [p.poll() for p in self.procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                if self._first_failure is None:
                    self._first_failure = failed[0]
                self.stop()
                return
            if all(c is not None for c in codes):
                return
            time.sleep(0.5)

    def alive(self) -> bool:
        """Whether a process of the run still runs. Once none does, the answer stays False: the group's id
        may then be given to another process, which must never be signalled."""
        if self._ended or self.pgid is None:
            return False
        self._reap()
        self._ended = not group_alive(self.pgid)
        return not self._ended

    def _reap(self) -> bool:
        """Collect the exit codes of our own children that ended (so they do not linger as zombies); whether
        all have. Never a blocking ``Popen.wait``: a signal handler that stops the run may interrupt it, and
        its own wait would deadlock on the lock the interrupted one holds."""
        return all(p.poll() is not None for p in self.procs)

    def stop(self, grace: Optional[float] = None) -> None:
        """SIGTERM to every process of the run; SIGKILL to those left after ``grace`` seconds."""
        grace = self.grace if grace is None else grace
        with self._stopping:  # the rank monitor and a signal handler may both stop (re-entrant: same thread)
            if not self.alive():
                return
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.05)
            if self.alive():
                self._signal_group(signal.SIGKILL)
            while not self._reap():
                time.sleep(0.05)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """Wait for every rank; stop what is left of the group; 0, or the first failing exit code."""
        try:
            while not self._reap():
                time.sleep(0.1)
            if self.alive():  # e.g. a worker that outlived its rank
                self.stop()
        finally:
            self._restore_handlers()
        if self._first_failure is not None:
            return self._first_failure
        return next((p.returncode for p in self.procs if p.returncode != 0), 0)

    def _install_handlers(self) -> None:
        """SIGTERM/SIGINT to the runner stop the run first (Python runs handlers in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in HANDLED_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_handlers(self) -> None:
        while self._previous_handlers:
            sig, previous = self._previous_handlers.popitem()
            signal.signal(sig, previous)

    def _on_signal(self, signum: int, frame) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self.stop()
        self._restore_handlers()
        if callable(previous):
            previous(signum, frame)  # e.g. Python's SIGINT handler: KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action, now that the run is stopped
