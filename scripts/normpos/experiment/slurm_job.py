"""What Slurm is doing to the job a run trains in, once its training was stopped from outside.

Slurm stops a job's processes with SIGTERM (then SIGKILL ``KillWait`` seconds later, 30 by default) in two
different cases, and the runner must tell them apart:

- the job is **requeued** (``scontrol requeue``, a preemption with ``PreemptMode=REQUEUE``): this start is
  over and another start of the same job follows, which resumes the run. The run has no outcome yet: it must
  record none, and the job must leave no result for submitit (Hydra's launcher would take it for the run's
  end and stop waiting for the requeued start).
- the job **ends** (``scancel``, its time limit without a requeue, a node failure): no other start follows,
  so the run is recorded as failed with Slurm's word for why (``sacct``'s state, e.g. ``CANCELLED by 0``).

Slurm counts a job's starts: ``scontrol show job`` gives ``Restarts=N`` and each start sees the count it was
started with in ``SLURM_RESTART_COUNT`` (absent on the first). Slurm raises ``Restarts`` before it signals a
requeued job, so a count above the one this start got means "requeued" (checked against Slurm 22.05:
``tests/test_launchers_slurm.py``). A requeue through submitit's SIGUSR2 handler (a time limit with
``--signal``) never gets here: submitit requeues the job itself and leaves with ``SystemExit``.
"""

import os
import re
import subprocess
import time
from typing import Optional

# sacct's states of a job that still runs, or that Slurm has not yet told slurmdbd the end of
NOT_ENDED = ("", "RUNNING", "PENDING", "REQUEUED", "COMPLETING", "SUSPENDED", "RESIZING")


def job_id() -> Optional[str]:
    """The id of the Slurm job this process runs in (an array task's own id), None outside Slurm."""
    return os.environ.get("SLURM_JOB_ID") or None


def label() -> Optional[str]:
    """The job as Slurm and submitit name it: ``<array>_<task>`` for an array task (``squeue``'s JobID, the
    name of the task's folder under ``.submitit/``), else the job id; None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else job_id()


def _ask(argv) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def restarts(job: str) -> Optional[int]:
    """Slurm's count of the job's starts so far, beyond the first (None when scontrol does not answer)."""
    found = re.search(r"\bRestarts=(\d+)", _ask(["scontrol", "show", "job", "-o", job]))
    return int(found.group(1)) if found else None


def end_state(job: str, wait: float = 5.0) -> str:
    """sacct's state of the job once Slurm has recorded its end (e.g. "CANCELLED by 0", "TIMEOUT"); "" when
    sacct does not answer (no accounting) or has not heard of the end within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        # one line per start of the job is possible (sacct keeps a requeued start's record): the last is this one
        lines = _ask(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job]).splitlines()
        state = lines[-1].strip() if lines else ""
        if state.split(" ")[0] not in NOT_ENDED:
            return state
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.5)


def stopped() -> Optional[tuple]:
    """Why the job this process runs in is being stopped: ``("requeued", words)``, ``("ended", words)``, or
    None outside Slurm and when the job goes on (the training failed by itself)."""
    job = job_id()
    if job is None:
        return None
    count = restarts(job)
    if count is not None and count > int(os.environ.get("SLURM_RESTART_COUNT") or 0):
        return "requeued", f"Slurm requeued job {label()}"
    state = end_state(job)
    if state:
        return "ended", f"Slurm ended job {label()}: {state}"
    return None
