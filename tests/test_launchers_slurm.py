"""The Slurm path of a sweep against a running Slurm (22.05 from Debian, one node, `make slurm-up`): what
submitit's local executor (test_launchers_submitit.py) cannot show. Slurm parses and runs the sbatch script
submitit writes, the job sees Slurm's environment, Slurm itself sends SIGTERM on a requeue and on scancel and
SIGUSR2 before a time limit (``--signal=USR2@120``), holds a requeued job until its BeginTime, and throttles an
array (``--array=0-1%k``).

One cluster for the file (xdist's ``--dist loadfile`` keeps its tests on one worker): the ``slurm`` fixture
uses it when it is up (CI starts it with `make slurm-up` and stops it with `make slurm-down`), else starts it
with scripts/slurm/cluster.sh and stops it when the file ends, pass or fail. Where it cannot start (not root, no
apt-get) every test skips with the script's one-line reason.

Two sweeps at once (each mostly waits on Slurm), each `make sweep EXPERIMENT=demo ARGS='hydra/launcher=submitit_slurm hydra.launcher.partition=local
...'` over the tiny corpus, whatever the test does to a job done with Slurm's own commands:
- ``grid``: Post-LN with warm-up and Pre-LN, one task at a time (array_parallelism=1); the first task is
  requeued with ``scontrol requeue`` once its run has a checkpoint.
- ``limits``: the same two runs at once; the first gets a time limit (``scontrol update TimeLimit=``, lowered
  so that Slurm's USR2 is due at its next check), the second is cancelled with ``scancel``.
A requeued job waits in PENDING with reason BeginTime (Slurm holds it for 120 s after its end); the tests see
that hold and then lift it with ``scontrol update StartTime=now``, as an administrator can: waiting it out
would only add two minutes per requeue.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from test_experiment_runs import ENV, TINY, metrics, run_dirs

pytestmark = pytest.mark.slow

CLUSTER = REPO / "scripts" / "slurm" / "cluster.sh"
RUN_FILES = ["run.json", "config.yaml", "command.sh", "train.log", "metrics.jsonl", "watch.json", "status.json",
             "score.json", "checkpoints/checkpoint_best.pt", "checkpoints/checkpoint_last.pt"]
GRID = ["variant=postln_warmup,preln_constant", "schedule.warmup_updates=4", "eval.score=true", "eval.beam=2",
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=local", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def slurm():
    """The environment that reaches the local cluster (SLURM_CONF); starts the cluster if it is down and
    stops it again at the end of the file."""
    conf = subprocess.run([CLUSTER, "env"], capture_output=True, text=True, check=True).stdout
    env = {**ENV, "SLURM_CONF": conf.strip().split("=", 1)[1]}
    started = False
    if subprocess.run([CLUSTER, "status"], env=env, capture_output=True).returncode != 0:
        up = subprocess.run([CLUSTER, "up"], env=env, capture_output=True, text=True, timeout=900)
        if up.returncode == 3:
            pytest.skip(up.stderr.strip())
        assert up.returncode == 0, up.stdout + up.stderr
        started = True
    try:
        yield env
    finally:
        if started:
            subprocess.run([CLUSTER, "down"], env=env, capture_output=True, timeout=300)


def slurm_out(env, *argv) -> str:
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60).stdout


class Sweep:
    """`make sweep` with the Slurm launcher on the local partition, and what squeue showed while it ran."""

    def __init__(self, env, tiny_bin: Path, root: Path, *args: str):
        self.env, self.root, self.out = env, root, root.parent / f"{root.name}.out"
        overrides = [*TINY, f"dataset.data_bin={tiny_bin}", f"dataset.ref_dir={tiny_bin.parent / 'ref'}", *GRID,
                     *args]
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                ["make", "--no-print-directory", "sweep", f"PY={sys.executable}", "EXPERIMENT=demo",
                 f"RUN_ROOT={root}", "ARGS=" + " ".join(overrides)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.array = None
        self.seen = set()  # (task, state, reason) from squeue

    def poll(self):
        """The array's id once submitted; each call notes the tasks' states (squeue) and Slurm's reasons."""
        if self.array is None:
            found = list((self.root / ".hydra" / "sweep" / ".submitit").glob("*/*_submission.sh"))
            self.array = found[0].parent.name if found else None
        if self.array is not None:
            for line in slurm_out(self.env, "squeue", "-h", "-r", "-j", self.array, "-o", "%i|%T|%r").splitlines():
                task, state, reason = line.split("|")
                self.seen.add((task, state, reason))

    def wait_for(self, condition, what: str, timeout: float = 300):
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            self.poll()
            value = condition()
            if value:
                return value
            time.sleep(0.3)
        pytest.fail(f"the sweep ended (exit {self.proc.returncode}) or timed out waiting for {what}:\n"
                    + self.out.read_text()[-3000:])

    def run_of(self, task: int):
        """The run folder that array task ``task`` trains (run.json names its Slurm job)."""
        for directory in run_dirs(self.root):
            if json.loads((directory / "run.json").read_text()).get("slurm_job") == f"{self.array}_{task}":
                return directory
        return None

    def training(self, task: int, at_least: int = 1):
        """The run of ``task`` once it has a checkpoint and ``at_least`` metrics rows and has no final status."""
        directory = self.run_of(task)
        if directory and (directory / "checkpoints" / "checkpoint_last.pt").exists() and \
                not (directory / "status.json").exists() and (directory / "metrics.jsonl").exists() and \
                len(metrics(directory)) >= at_least:
            return directory
        return None

    def job(self, task: int) -> dict:
        """``scontrol show job`` of an array task, as a dict."""
        text = slurm_out(self.env, "scontrol", "show", "job", "-o", f"{self.array}_{task}")
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def held_until_begin_time(self, task: int) -> datetime:
        """Wait until the requeued task is PENDING on its BeginTime (with a throttled array, once no other task
        holds its place); the time Slurm would start it."""
        def held():
            job = self.job(task)
            return job if (job["JobState"], job["Reason"]) == ("PENDING", "BeginTime") else None

        return datetime.fromisoformat(self.wait_for(held, f"task {task} to wait on its BeginTime")["StartTime"])

    def accounted(self):
        """Every start of every task as sacct has it (-D: a requeued start keeps its own record), once each has
        ended: the sweep ends when the last result file appears, a moment before Slurm's record of the job."""
        rows = [line.split("|") for line in slurm_out(
            self.env, "sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State,Start,End", "-j", self.array).splitlines()]
        return rows if rows and all(end != "Unknown" for *_, end in rows) else None

    def finish(self, timeout: float = 600) -> SimpleNamespace:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            self.poll()
            time.sleep(0.5)
        if self.proc.poll() is None:
            self.stop()
            pytest.fail("the sweep did not end in time:\n" + self.out.read_text()[-3000:])
        deadline = time.time() + 60
        while not self.accounted() and time.time() < deadline:
            time.sleep(0.5)
        rows = self.accounted()
        assert rows, "sacct did not record the end of every task within 60 s"
        return SimpleNamespace(code=self.proc.returncode, out=self.out.read_text(), root=self.root,
                               array=self.array, seen=self.seen, sacct=rows, runs={t: self.run_of(t) for t in (0, 1)},
                               script=self.root / ".hydra" / "sweep" / ".submitit" / self.array /
                               f"{self.array}_submission.sh", env=self.env)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.array is not None:
            subprocess.run(["scancel", self.array], env=self.env, capture_output=True)


def lift_begin_time(sweep: Sweep, env, task: int, *fields: str) -> None:
    """Start the requeued task now, as an administrator can (``scontrol update StartTime=now``), but not within
    the second of its requeue: slurmd refuses a credential issued in the second its job's old one was revoked
    (seen here when the hold was lifted 0.3 s after submitit's requeue: "Killing non-startable batch
    JobId=12: Job credential revoked", and the start FAILED). Slurm's own 120 s hold exists for that."""
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={sweep.array}_{task}", "StartTime=now", *fields], env=env,
                   check=True)


def drive_grid(sweep: Sweep, env) -> SimpleNamespace:
    """Requeue task 0 with `scontrol requeue` while its run trains; lift its BeginTime hold."""
    run = sweep.wait_for(lambda: sweep.training(0), "task 0's run to have a checkpoint")
    subprocess.run(["scontrol", "requeue", f"{sweep.array}_0"], env=env, check=True)
    before = metrics(run)
    begin = sweep.held_until_begin_time(0)
    lift_begin_time(sweep, env, 0)
    done = sweep.finish()
    done.requeued, done.rows_before, done.begin = run, before, begin
    return done


def drive_limits(sweep: Sweep, env) -> SimpleNamespace:
    """Give task 0 a time limit that Slurm signals (USR2) at its next check once its run has a checkpoint;
    scancel task 1 once its run has one; lift the requeued task 0's BeginTime hold."""
    timed = sweep.wait_for(lambda: sweep.training(0), "task 0's run to have a checkpoint")
    # a time limit 60-120 s away: within the 120 s of --signal=USR2@120, so Slurm sends USR2 at its next
    # time-limit check (every 30 s), and would end the job at the limit if nothing requeued it
    elapsed = sum(int(x) * 60 ** i for i, x in enumerate(reversed(sweep.job(0)["RunTime"].split(":"))))
    subprocess.run(["scontrol", "update", f"JobId={sweep.array}_0", f"TimeLimit={elapsed // 60 + 2}"], env=env,
                   check=True)
    lowered_at = time.time()
    cancelled = sweep.wait_for(lambda: sweep.training(1), "task 1's run to have a checkpoint")
    subprocess.run(["scancel", f"{sweep.array}_1"], env=env, check=True)
    begin = sweep.held_until_begin_time(0)
    requeued_after = time.time() - lowered_at
    # back to its own limit (10 min) as it starts again: else the next start would be signalled at once
    lift_begin_time(sweep, env, 0, "TimeLimit=10")
    done = sweep.finish()
    done.timed, done.cancelled, done.begin, done.requeued_after = timed, cancelled, begin, requeued_after
    return done


@pytest.fixture(scope="module")
def sweeps(slurm, tiny_bin, tmp_path_factory) -> dict:
    """Both sweeps at once (each mostly waits on Slurm), driven by two threads; each one's result, or the
    exception that ended its driver."""
    base = tmp_path_factory.mktemp("slurm")
    every = "train.extra_args=[--validate-interval-updates,{0},--save-interval-updates,{0}]"
    started = {
        # one task at a time; 100 updates: long enough to requeue after the first checkpoint
        "grid": (drive_grid, Sweep(slurm, tiny_bin, base / "grid", "train.max_update=100", every.format(5),
                                   "hydra.launcher.array_parallelism=1")),
        # 500 updates: the time-limited run still trains when USR2 comes, up to 30 s after its limit was lowered
        # (3 to 13 updates/s on 2 cores, by load); max_num_timeout=1: submitit requeues a job at its time limit once
        "limits": (drive_limits, Sweep(slurm, tiny_bin, base / "limits", "train.max_update=500", every.format(25),
                                       "hydra.launcher.array_parallelism=2", "hydra.launcher.max_num_timeout=1",
                                       "eval.score=false")),
    }
    results = {}

    def drive(name):
        function, sweep = started[name]
        try:
            results[name] = function(sweep, slurm)
        except BaseException as error:  # pytest.fail's exception too: raised again by the fixture that asks
            results[name] = error

    try:
        thread = threading.Thread(target=drive, args=("limits",))
        thread.start()
        drive("grid")
        thread.join()
    finally:
        for _, sweep in started.values():
            sweep.stop()
    return results


def outcome(sweeps: dict, name: str) -> SimpleNamespace:
    if isinstance(sweeps[name], BaseException):
        raise sweeps[name]
    return sweeps[name]


@pytest.fixture(scope="module")
def grid(sweeps):
    """The 2-run grid, one task at a time, task 0 requeued by `scontrol requeue` while its run trained."""
    return outcome(sweeps, "grid")


@pytest.fixture(scope="module")
def limits(sweeps):
    """The same 2 runs at once: task 0 reached a time limit (USR2 from Slurm, submitit requeued it), task 1 was
    scancelled."""
    return outcome(sweeps, "limits")


def starts(done, task: int):
    """sacct's states of every start of one array task, in order ("CANCELLED by 0" is "CANCELLED")."""
    return [state.split()[0] for job, state, _, _ in done.sacct if job == f"{done.array}_{task}"]


def held_seconds(done, task: int) -> float:
    """How long after the end of its first start (sacct's End of the REQUEUED record) Slurm would have started
    the requeued task: its BeginTime."""
    (end,) = [end for job, state, _, end in done.sacct if job == f"{done.array}_{task}" and state == "REQUEUED"]
    return (done.begin - datetime.fromisoformat(end)).total_seconds()


def submitit_log(done, task: int) -> str:
    """What the task's starts printed (submitit's stdout and stderr files, appended to by each start)."""
    folder = done.root / ".hydra" / "sweep" / ".submitit" / f"{done.array}_{task}"
    return "".join((folder / f"{done.array}_{task}_0_log.{kind}").read_text() for kind in ("out", "err"))


def assert_resumed(run: Path, max_update: int, rows_before=None):
    """Finished, each metrics row once up to the budget, two starts in train.log and fairseq's own line that
    it resumed from checkpoint_last.pt."""
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    rows = metrics(run)
    updates = [r["num_updates"] for r in rows]
    assert updates == sorted(set(updates)) and updates[-1] == max_update
    if rows_before is not None:
        # a validation logged after the last checkpoint before the requeue is done again on resuming (same losses,
        # since training is deterministic, but its own speed): compare all but fairseq's updates/s
        def losses(rs):
            return [{k: v for k, v in r.items() if k != "updates_per_s"} for r in rs]

        assert losses(rows[:len(rows_before)]) == losses(rows_before) and len(rows_before) < len(rows)
    log = (run / "train.log").read_text()
    assert log.count("\n# ") == 2
    resumed = re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ (\d+) updates\)", log)
    assert resumed and 0 < int(resumed.group(1)) < max_update


def assert_scored(run: Path):
    """score.json from the run's own best checkpoint (the scorer's sha256 of it)."""
    score = json.loads((run / "score.json").read_text())
    best = run / "checkpoints" / "checkpoint_best.pt"
    assert score["scored"] and score["inputs"]["checkpoints"] == {best.name: hashlib.sha256(best.read_bytes()).hexdigest()}


def test_make_sweep_on_slurm_trains_records_and_scores_a_2_run_grid(grid):
    assert grid.code == 0, grid.out[-3000:]
    assert "sweep: 2 runs: 2 finished" in grid.out
    assert sorted(grid.runs.values()) == run_dirs(grid.root)  # one run per task, each named by its run.json
    for task, run in grid.runs.items():
        assert [f for f in RUN_FILES if not (run / f).is_file()] == []
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        assert_scored(run)
        assert starts(grid, task)[-1] == "COMPLETED"
        # submitit's own result and Slurm's logs of the task, in the folder run.json names
        assert "Job completed successfully" in submitit_log(grid, task)
    names = [run.parent.name.rsplit("_", 1)[0] for run in (grid.runs[0], grid.runs[1])]
    assert names == ["post_ln_adam_lr-2e-3_warmup-inverse-sqrt_wu-4_L2", "pre_ln_adam_lr-2e-3_constant_L2"]
    # the job script is kept, and it is the one Slurm stored and ran (scontrol writes Slurm's copy)
    kept = grid.script.read_text()
    assert kept == slurm_out(grid.env, "scontrol", "write", "batch_script", grid.array, "-")
    assert {"#SBATCH --partition=local", "#SBATCH --array=0-1%1", "#SBATCH --signal=USR2@120",
            "#SBATCH --time=10", "#SBATCH --cpus-per-task=1"} <= set(kept.splitlines())
    assert f"{sys.executable} -u -m submitit.core._submit" in kept  # the Python that submitted runs each task


def test_scontrol_requeue_resumes_the_run_from_its_last_checkpoint(grid):
    assert grid.code == 0, grid.out[-3000:]
    # Slurm's record: the first start ended REQUEUED, the second COMPLETED
    assert starts(grid, 0) == ["REQUEUED", "COMPLETED"]
    assert grid.requeued == grid.runs[0]
    # Slurm held the requeued job on its BeginTime, 120 s after the requeue (plus the seconds the first start
    # took to end, at most KillWait); the test lifted the hold
    assert 120 <= held_seconds(grid, 0) <= 150
    assert_resumed(grid.requeued, 100, grid.rows_before)
    assert_scored(grid.requeued)
    # the first start left no outcome: the sweep's log has one line per run
    (log,) = (grid.root / ".sweeps").glob("*.jsonl")
    assert sorted(json.loads(line)["outcome"] for line in log.read_text().splitlines()) == ["finished", "finished"]


def test_array_parallelism_runs_at_most_k_tasks_at_once(grid):
    assert grid.code == 0, grid.out[-3000:]
    # every start of every task, from sacct: never two at once (k = 1), though the node had CPUs for both (the
    # other sweep takes 2 of its 4)
    spans = sorted((datetime.fromisoformat(start), datetime.fromisoformat(end)) for _, _, start, end in grid.sacct)
    assert len(spans) == 3
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    # and Slurm says why a task waited: the array's throttle
    assert any(state == "PENDING" and reason == "JobArrayTaskLimit" for _, state, reason in grid.seen)


def test_time_limit_signal_requeues_through_checkpoint_and_the_run_finishes(limits):
    # USR2 came from Slurm at one of its time-limit checks (every 30 s) after the limit was lowered, long before
    # the limit itself (60 s or more away); submitit requeued the job and the test saw it held on its BeginTime
    assert limits.requeued_after < 60
    log = submitit_log(limits, 0)
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log
    assert re.search(r"Requeued job \S+ \(0 remaining timeouts\)", log)
    assert starts(limits, 0) == ["REQUEUED", "COMPLETED"]
    assert 120 <= held_seconds(limits, 0) <= 150  # held on BeginTime, lifted by the test
    assert_resumed(limits.timed, 500)
    assert limits.runs[0] == limits.timed
    # one outcome per run in the sweep's log: the requeued start left none
    (log,) = (limits.root / ".sweeps").glob("*.jsonl")
    outcomes = {json.loads(line)["run"]: json.loads(line)["outcome"] for line in log.read_text().splitlines()}
    assert len(log.read_text().splitlines()) == 2
    assert outcomes == {str(limits.timed): "finished", str(limits.cancelled): "failed"}


def test_scancel_records_the_run_with_the_reason_and_the_sweep_fails(limits):
    assert limits.code != 0
    run = limits.cancelled
    status = json.loads((run / "status.json").read_text())
    job = f"{limits.array}_1"
    assert status["status"] == "failed"
    assert re.fullmatch(rf"Slurm ended job {job}: CANCELLED by 0 \(stopped at update \d+, exit code -?\d+\)",
                        status["reason"]), status["reason"]
    assert starts(limits, 1) == ["CANCELLED"]
    assert (run / "checkpoints" / "checkpoint_last.pt").is_file()  # a later sweep resumes it
    # the summary counts it and names it with the reason; the other run finished
    assert "sweep: 2 runs: 1 finished, 1 failed" in limits.out
    assert f"  failed: {run}: {status['reason']}" in limits.out
