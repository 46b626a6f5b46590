"""Sweeps through Hydra's submitit launcher (the Slurm path) without a Slurm cluster.

- ``hydra/launcher=submitit_local`` runs submitit's own job code (pickled job, signal handlers, the launcher's
  ``checkpoint()`` that requeues it) on this machine: a 2-configuration tiny grid trains, records and scores
  end to end, and one of its jobs is preempted mid-run (the Slurm signal, SIGUSR2, then the job's processes
  stopped as a requeue does) and resumes from checkpoint_last.pt.
- The Slurm example of docs/gpus-and-clusters.md goes through the real sweep app and submitit's Slurm executor up to the
  scheduler: a stand-in ``sbatch`` keeps the job script submitit wrote, and the test reads its #SBATCH lines.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_experiment_runs import ENV, TINY, metrics, run_dirs, sweep_argv

pytestmark = pytest.mark.slow


def repo_leftovers():
    """Files git does not track, ignored ones included: a launcher writing into the repository shows here."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if "__pycache__" not in line and not line.endswith(".pyc")}


def processes():
    """(pid, parent pid, command line) of every process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), ppid, cmdline))
    return found


def training_process(run_dir: Path):
    """The fairseq-train process of a run (its --save-dir names the run) and the submitit job running it."""
    for pid, ppid, cmdline in processes():
        if "normpos.fairseq_run train" in cmdline and str(run_dir / "checkpoints") in cmdline:
            return pid, ppid
    return None


def modified(path: Path, mtime_ns: int) -> bool:
    """Whether ``path`` was rewritten since ``mtime_ns`` (submitit replaces it: it may be absent a moment)."""
    try:
        return path.stat().st_mtime_ns != mtime_ns
    except FileNotFoundError:
        return False


def wait_for(condition, what: str, sweep: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline and sweep.poll() is None:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"the sweep ended (exit {sweep.returncode}) or timed out waiting for {what}")


def test_submitit_sweep_trains_scores_and_resumes_after_a_preemption(tiny_bin, tmp_path):
    overrides = ["hydra/launcher=submitit_local", "variant=postln_warmup,preln_constant",
                 "schedule.warmup_updates=4", "train.max_update=20", "eval.score=true", "eval.beam=2",
                 "train.extra_args=[--validate-interval-updates,5,--save-interval-updates,5]"]
    before = repo_leftovers()
    with open(tmp_path / "sweep.out", "w") as out:
        sweep = subprocess.Popen(sweep_argv(tiny_bin, tmp_path / "root", *overrides), cwd=REPO, env=ENV,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # preempt the Pre-LN run once it has a checkpoint to resume from and is still training
        runs = tmp_path / "root" / "multi30k" / "demo"
        preempted = wait_for(lambda: next(runs.glob("pre_ln_adam_lr-2e-3_constant_L2_*/seed-1"), None),
                             "the Pre-LN run's folder", sweep)
        fairseq_pid, job_pid = wait_for(
            lambda: (preempted / "checkpoints" / "checkpoint_last.pt").exists() and training_process(preempted),
            "the Pre-LN run's first checkpoint", sweep)
        table = {pid: (ppid, cmdline) for pid, ppid, cmdline in processes()}
        assert "submitit.core._submit" in table[job_pid][1]
        job_id = str(table[job_pid][0])  # submitit_local names a job after its controller process
        logs = tmp_path / "root" / ".hydra" / "sweep" / ".submitit"
        submission = logs / job_id / f"{job_id}_submitted.pkl"
        submitted = submission.stat().st_mtime_ns
        updates_at_preemption = metrics(preempted)[-1]["num_updates"]
        os.kill(job_pid, signal.SIGUSR2)  # what Slurm sends before a time limit or on preemption (--signal)
        # submitit calls the launcher's checkpoint() and saves the DelayedSubmission it returns in place of the
        # job's submission: that is what the requeued job runs
        wait_for(lambda: modified(submission, submitted), "submitit to save the requeued job", sweep, timeout=60)
        try:
            os.kill(fairseq_pid, signal.SIGTERM)  # a requeue stops every process of the job; Slurm sends SIGTERM
        except ProcessLookupError:
            pass  # training ended by itself meanwhile: the requeued job still resumes (and has nothing left)
        assert sweep.wait(timeout=900) == 0, (tmp_path / "sweep.out").read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)

    dirs = run_dirs(tmp_path / "root")
    # run folders are <slug>_<hash of the training identity>/seed-<n>
    assert [d.parent.name.rsplit("_", 1)[0] for d in dirs] == ["post_ln_adam_lr-2e-3_warmup-inverse-sqrt_wu-4_L2",
                                                              "pre_ln_adam_lr-2e-3_constant_L2"]
    assert dirs[1] == preempted
    for run_dir in dirs:
        assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
        rows = metrics(run_dir)
        updates = [r["num_updates"] for r in rows]
        assert updates == sorted(set(updates)) and updates[-1] == 20  # each validation once, in order
        assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["valid_loss"] < rows[0]["valid_loss"]
    # the preempted run was requeued by the launcher's checkpoint() and resumed where its checkpoint was
    log = (preempted / "train.log").read_text()
    starts = re.findall(r"^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.+)$", log, re.M)
    # two attempts, each headed by its command. A stop that lands while fairseq copies checkpoint_last.pt (it
    # saves every 5 updates here) leaves that file truncated: the requeued start then resumes from the newest
    # good checkpoint and says so in a "recovered:" line (seen on CI), which is the runner doing its job
    commands = [line for line in starts if not line.startswith("recovered: ")]
    assert len(commands) == 2 and "normpos.fairseq_run train" in commands[1], starts
    assert all("resumed from" in line for line in starts if line.startswith("recovered: ")), starts
    assert "Loaded checkpoint" in log and updates_at_preemption < 20
    assert "this job is preempted" in (logs / job_id / f"{job_id}_0_log.err").read_text()
    # each run was scored from its own best checkpoint (the scorer's sha256 of it), and the two differ. (BLEU
    # after 20 tiny updates is 0 for any checkpoint, so comparing BLEU would not tell runs apart.)
    scored = [json.loads((d / "score.json").read_text()) for d in dirs]
    for run_dir, score in zip(dirs, scored):
        best = run_dir / "checkpoints" / "checkpoint_best.pt"
        assert score["scored"]
        assert score["inputs"]["checkpoints"] == {best.name: hashlib.sha256(best.read_bytes()).hexdigest()}
    assert scored[0]["inputs"]["checkpoints"] != scored[1]["inputs"]["checkpoints"]
    # submitit's own files sit under the run root's .hydra folder, one folder per job; none in the repository
    assert len([p for p in logs.iterdir() if p.is_dir() and p.name != "%j"]) == 2
    assert repo_leftovers() == before


SLURM_EXAMPLE = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                 "hydra.launcher.cpus_per_task=8", "hydra.launcher.mem_gb=32", "hydra.launcher.timeout_min=720",
                 "hydra.launcher.array_parallelism=6", "hydra.launcher.max_num_timeout=3"]


def test_slurm_example_becomes_this_job_script(tmp_path):
    """The Slurm example of docs/gpus-and-clusters.md, through the sweep app and submitit's Slurm executor: 18 array jobs (the
    sec. 3.2 Adam grid), 6 at a time, one GPU, 8 CPUs, 32 GB and 12 hours each, USR2 120 s before the limit,
    logs under the run root."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    # submitit only builds a Slurm executor where srun exists; it is never run here
    (stubs / "srun").write_text("#!/bin/sh\nexit 1\n")
    (stubs / "sbatch").write_text('#!/bin/sh\n# stands in for Slurm: keeps the job script, submits nothing\n'
                                  'cp "$1" "$SBATCH_RECORD"\necho "no Slurm controller here" >&2\nexit 1\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    root, record = tmp_path / "root", tmp_path / "job.sh"
    env = {**ENV, "PATH": f"{stubs}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    done = subprocess.run([sys.executable, "-m", "normpos.sweep", "-m", "experiment=sec3_postln_adam",
                           f"run.root={root}", *SLURM_EXAMPLE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "no Slurm controller here" in done.stderr  # it got as far as sbatch
    script = record.read_text()
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    logs = root / ".hydra" / "sweep" / ".submitit" / "%A_%a"
    assert flags == {
        "#SBATCH --array=0-17%6", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --time=720", "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120", "#SBATCH --open-mode=append",
        "#SBATCH --job-name=sweep", "#SBATCH --wckey=submitit",
        f"#SBATCH --output={logs}/%A_%a_0_log.out", f"#SBATCH --error={logs}/%A_%a_0_log.err",
    }
    # each array task runs this Python (the nodes must see it and the repository at the same paths) with the
    # submitting shell's environment (sbatch's default), which carries make's PYTHONPATH
    assert f"{sys.executable} -u -m submitit.core._submit {root}/.hydra/sweep/.submitit/%j" in script
