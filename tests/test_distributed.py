"""Data-parallel training on CPU (torch.distributed, gloo) through the sweep app, and stopping a run's whole
process tree (scripts/normpos/experiment/launch.py).

The data-parallel test is the one that makes ``train.gpus=N`` trustworthy: 2 ranks with batch B must reach
the same parameters, optimizer state and logged losses after k updates as one process with
``train.update_freq=2``: fairseq gives batch i to rank i mod N, and with update_freq=2 one process
accumulates batches 2u and 2u+1 for update u, so both sum the gradients of the same sentences. The stop tests
look at the processes with ``ps``, not at what the runner believes it started.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_experiment_runs import ENV, metrics, run_dirs, sweep_argv

pytestmark = pytest.mark.slow

NO_DROPOUT = ["model.dropout=0", "model.attention_dropout=0", "model.activation_dropout=0"]
# validate and save only when training stops (at update 6): checkpoint_best.pt is then the final state, on
# Multi30k (6 updates in epoch 1) and on conftest's synthetic corpus (epochs of 2 updates) alike
EQUIVALENCE = ["hydra.sweeper.params.variant=preln_constant", "train.max_update=6",
               "train.extra_args=[--validate-interval,1000,--save-interval,1000]", *NO_DROPOUT]
# what fairseq logs per update, and the runner per validation, that does not depend on timing
LOGGED = ("epoch", "update", "num_updates", "loss", "nll_loss", "ppl", "wpb", "bsz", "gnorm", "lr")
METRICS = ("epoch", "num_updates", "train_loss", "valid_loss", "lr")


def processes():
    """{pid: (pgid, state, args)} of every process, as ``ps`` reports them."""
    # -ww: the whole command line (without it, ps cuts lines at 80 columns when run under pytest here)
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    table = {}
    for line in out.splitlines():
        pid, pgid, stat, *args = line.split(None, 3)
        table[int(pid)] = (int(pgid), stat, args[0] if args else "")
    return table


def running(pids=None, pgid=None, text=None):
    """Processes (not zombies: this machine's init does not reap orphans) matching all given filters."""
    return {pid: row for pid, row in processes().items()
            if not row[1].startswith("Z") and (pids is None or pid in pids) and (pgid is None or row[0] == pgid)
            and (text is None or text in row[2])}


def training_processes(root: Path):
    """The running fairseq-train processes (ranks) of the runs under ``root``."""
    return {pid: row for pid, row in running(text=str(root)).items() if "fairseq_run train" in row[2]}


class Recorder(threading.Thread):
    """Polls ``ps`` and remembers every training process whose command line names ``root``."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.seen, self.done = root, {}, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.seen.update(training_processes(self.root))
            time.sleep(0.5)


def train_inner(log: Path):
    rows = [json.loads(line.split("train_inner:", 1)[1]) for line in log.read_text().splitlines()
            if "INFO:train_inner:" in line]
    return [{key: row[key] for key in LOGGED} for row in rows]


def final_checkpoint(directory: Path):
    import torch

    # a finished run keeps checkpoint_best.pt; with one validation (when training stops) it is the final state
    state = torch.load(directory / "checkpoints" / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 6
    return state


def test_two_cpu_ranks_equal_one_process_with_update_freq_2(tiny_bin, tmp_path):
    single = subprocess.run(sweep_argv(tiny_bin, tmp_path / "one", *EQUIVALENCE, "train.update_freq=2"),
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = subprocess.run(sweep_argv(tiny_bin, tmp_path / "two", *EQUIVALENCE, "train.gpus=2"),
                           cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    (one,), (two,) = run_dirs(tmp_path / "one"), run_dirs(tmp_path / "two")
    for d in (one, two):
        assert json.loads((d / "status.json").read_text())["status"] == "finished"

    # it really ran as 2 ranks over gloo, each its own process, rank 1 logging to its own file
    assert "--distributed-world-size 2" in (two / "command.sh").read_text()
    rank1 = (two / "train.rank1.log").read_text()
    assert "distributed init (rank 1): tcp://127.0.0.1:" in rank1
    assert "distributed init (rank 0): tcp://127.0.0.1:" in (two / "train.log").read_text()
    assert not (one / "train.rank1.log").exists()

    # the same updates: same losses, gradient norms, and batch sizes (words and sentences per update)
    logged = train_inner(one / "train.log")
    assert [r["num_updates"] for r in logged] == ["1", "2", "3", "4", "5", "6"]
    assert train_inner(two / "train.log") == logged
    # one row per validation: only rank 0's log is read
    rows = [{key: row[key] for key in METRICS} for row in metrics(one)]
    assert len(rows) == 1 and rows[0]["num_updates"] == 6
    assert [{key: row[key] for key in METRICS} for row in metrics(two)] == rows
    assert "train_inner" not in rank1    # fairseq logs training progress on the master only

    # the same parameters and Adam state, tensor by tensor. Tolerance: the ranks' gradients are summed by
    # gloo's all-reduce, one process sums them in place; float32 addition in another order may differ in the
    # last bits (here it was exact: max difference 0.0)
    import torch

    a, b = final_checkpoint(one), final_checkpoint(two)
    assert b["cfg"]["distributed_training"]["distributed_world_size"] == 2
    assert a["cfg"]["distributed_training"]["distributed_world_size"] == 1
    assert a["model"].keys() == b["model"].keys() and len(a["model"]) > 50
    for name in a["model"]:
        assert torch.allclose(a["model"][name], b["model"][name], rtol=1e-5, atol=1e-7), name
    state_a, state_b = a["last_optimizer_state"]["state"], b["last_optimizer_state"]["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for index in state_a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(state_a[index][key], state_b[index][key], rtol=1e-5, atol=1e-9), (index, key)
    assert all(state_a[i]["exp_avg"].abs().sum() > 0 for i in state_a)  # gradients reached every tensor


def test_diverged_two_rank_admin_run_is_stopped_whole(tiny_bin, tmp_path):
    """The watcher trips on the loss (lr 50), the runner stops the run: no process of its tree is left. Admin's
    profile exists once, as valid JSON: the ranks share the save dir and only rank 0 writes it."""
    recorder = Recorder(tmp_path)
    recorder.start()
    try:
        proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, "hydra.sweeper.params.variant=admin_warmup",
                                         "schedule.name=constant", "optim.lr=50", "train.gpus=2",
                                         "train.num_workers=1", "train.max_update=200", "train.extra_args=[]"),
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    finally:
        recorder.done.set()
        recorder.join()
    assert proc.returncode == 0, proc.stderr[-2000:]
    (directory,) = run_dirs(tmp_path)
    status = json.loads((directory / "status.json").read_text())
    assert status["status"] == "diverged" and status["num_updates"] < 200, status

    # the tree: both ranks (and data loader workers, when ps caught them), in one group of their own
    seen = recorder.seen
    for rank in (0, 1):
        assert any(f"--distributed-rank {rank} " in args for _, _, args in seen.values()), seen
    (pgid,) = {row[0] for row in seen.values()}
    assert pgid in seen and pgid != os.getpgrp()
    assert not training_processes(tmp_path), "a rank outlived the stop"
    assert not running(pgid=pgid), "a process of the run's group outlived the stop"

    profiles = sorted(p.name for p in directory.rglob("*admin_profile*"))
    assert profiles == ["admin_profile.json"]
    profile = json.loads((directory / "checkpoints" / "admin_profile.json").read_text())
    # the model's 10 residual joins: 2 encoder layers x 2 sub-layers + 2 decoder layers x 3
    assert profile["scheme"] == "admin" and len(profile["sublayers"]) == 10
    assert "Admin: profiled on" in (directory / "train.log").read_text()


def test_killed_sweep_leaves_no_training_process(tiny_bin, tmp_path):
    """SIGKILL to the sweep process alone (no handler can run): the ranks die by the parent-death signal, and
    their data loader workers (forked, so with the rank's command line) when they notice their parent is gone
    (torch checks every 5 s)."""
    sweep = subprocess.Popen(sweep_argv(tiny_bin, tmp_path, "hydra.sweeper.params.variant=preln_constant",
                                        "train.gpus=2", "train.num_workers=1", "train.max_update=500",
                                        "train.extra_args=[]"),
                             cwd=REPO, env=ENV, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        tree = {}
        while time.time() < deadline:  # wait until both ranks train, with data loader workers beside them
            tree = training_processes(tmp_path)
            both = all(any(f"--distributed-rank {r} " in args for _, _, args in tree.values()) for r in (0, 1))
            dirs = run_dirs(tmp_path)
            if both and len(tree) > 2 and dirs and "INFO:train_inner:" in (dirs[0] / "train.log").read_text():
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the 2-rank run did not start training in time: {tree}")
        (pgid,) = {row[0] for row in tree.values()}
        assert pgid != os.getpgid(sweep.pid)
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
        deadline = time.time() + 15
        while running(pgid=pgid) and time.time() < deadline:
            time.sleep(0.2)
        assert not running(pgid=pgid), "a process of the run outlived the sweep that started it"
        assert not training_processes(tmp_path)
    finally:
        for pid in running(text=str(tmp_path)):
            os.kill(pid, signal.SIGKILL)  # only if the test failed: leave nothing behind


@pytest.mark.parametrize("cpu, processes, backend, no_spawn, ddp", [
    (True, 2, "gloo", True, "legacy_ddp"),     # the runner starts each rank
    (False, 1, "nccl", False, "pytorch_ddp"),  # fairseq's defaults: it spawns one rank per GPU itself
])
def test_gpus_means_ranks_and_who_starts_them(cpu, processes, backend, no_spawn, ddp):
    """What fairseq's own parser makes of the command for train.gpus=2, on CPU and on GPUs."""
    from fairseq import options
    from normpos.experiment import command
    from normpos.experiment.schema import validate
    from normpos.fairseq_run import with_plugin
    from test_experiment_configs import composed

    cfg = validate(composed("experiment=demo", "train.gpus=2", f"train.cpu={str(cpu).lower()}"))
    argv = command.train_argv(cfg, Path("unused"))
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       with_plugin(argv[argv.index(cfg.dataset.data_bin):]))
    assert command.local_processes(cfg) == processes
    assert (args.distributed_world_size, args.distributed_backend, args.distributed_no_spawn, args.ddp_backend,
            args.cpu) == (2, backend, no_spawn, ddp, cpu)
    assert args.distributed_init_method is None  # CPU: launch.py adds it per rank; GPU: fairseq picks a port


# --- launch.Training on its own, with small real processes ---------------------------------------------

IGNORES_TERM = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
child = subprocess.Popen([sys.executable, "-c", ignore])
print("ready", child.pid, flush=True)
time.sleep(120)
"""


def test_stop_kills_a_tree_that_ignores_sigterm_after_the_grace_period(tmp_path):
    from normpos.experiment import launch

    training = launch.Training([sys.executable, "-c", IGNORES_TERM], dict(ENV), processes=2, log_dir=tmp_path,
                               grace=1.5)
    try:
        _, grandchild = next(training.lines).split()
        deadline = time.monotonic() + 60
        # the log starts with the command (which holds the word): wait for the line rank 1 prints
        while not any(line.startswith("ready ") for line in (tmp_path / "train.rank1.log").read_text().splitlines()):
            assert time.monotonic() < deadline, "rank 1 did not start"
            time.sleep(0.1)
        members = running(pgid=training.pgid)
        assert {training.procs[0].pid, training.procs[1].pid, int(grandchild)} <= set(members)
        assert len(members) == 4  # both ranks and their children
        start = time.monotonic()
        training.stop()
        took = time.monotonic() - start
        assert 1.5 <= took < 10, took  # SIGTERM ignored by all; SIGKILL once the grace period is over
        assert not running(pgid=training.pgid) and not running(pids=set(members))
        assert training.wait() == -signal.SIGKILL
    finally:
        training.stop(grace=0)  # when an assertion failed: leave nothing behind


FAILS_AS_RANK_1 = """
import sys, time
rank = sys.argv[sys.argv.index("--distributed-rank") + 1]
print("rank", rank, flush=True)
if rank == "1":
    sys.exit(3)
time.sleep(120)  # rank 0 would wait for its dead peer
"""


def test_a_failed_rank_stops_the_others_and_wait_reports_it(tmp_path):
    from normpos.experiment import launch

    training = launch.Training([sys.executable, "-c", FAILS_AS_RANK_1], dict(ENV), processes=2, log_dir=tmp_path,
                               grace=1)
    try:
        assert next(training.lines).strip() == "rank 0"
        start = time.monotonic()
        assert training.wait() == 3
        assert time.monotonic() - start < 30
        assert not running(pgid=training.pgid)
        assert "rank 1" in (tmp_path / "train.rank1.log").read_text()
    finally:
        training.stop(grace=0)


DRIVER = """
import os, sys
from normpos.experiment import launch
child = ("import signal, sys, time, pathlib\\n"
         "def done(*_):\\n"
         "    pathlib.Path(sys.argv[1]).write_text('stopped gracefully')\\n"
         "    sys.exit(0)\\n"
         "signal.signal(signal.SIGTERM, done)\\n"
         "print('ready', flush=True)\\n"
         "time.sleep(120)\\n")
training = launch.Training([sys.executable, "-c", child, sys.argv[1]], dict(os.environ))
print(training.pgid, next(training.lines).strip(), flush=True)
try:
    for line in training.lines:
        pass
finally:
    training.wait()
"""


@pytest.mark.parametrize("signum, returncode", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
def test_sigterm_or_sigint_to_the_runner_stops_the_run_first(tmp_path, signum, returncode):
    """The runner's handler stops the group with SIGTERM (the child records it), then the runner ends as the
    signal would have ended it (for SIGINT: KeyboardInterrupt, after which Python exits by SIGINT)."""
    marker = tmp_path / "marker"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker)], cwd=REPO, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pgid, ready = driver.stdout.readline().split()
    assert ready == "ready"
    driver.send_signal(signum)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == returncode, err
    # the child got SIGTERM from the handler's stop (the parent-death SIGKILL alone would leave no marker)
    assert marker.read_text() == "stopped gracefully"
    assert not running(pgid=int(pgid))
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in err


def test_command_sh_starts_every_rank_as_the_runner_does():
    """command.sh reruns a CPU data-parallel run: one fairseq-train per rank, the runner's rank flags, one port."""
    from normpos.experiment import command, run_one
    from normpos.experiment.schema import validate
    from test_experiment_configs import composed

    cfg = validate(composed("experiment=demo", "train.gpus=2"))
    script = run_one.command_script(cfg, command.train_argv(cfg, Path("RUN")))
    ranks = [line for line in script.splitlines() if "normpos.fairseq_run train" in line]
    assert len(ranks) == 2 and script.rstrip().endswith("wait")
    for rank, line in enumerate(ranks):
        assert f"--distributed-rank {rank} --distributed-init-method 'tcp://127.0.0.1:$PORT'" in line or \
            f"--distributed-rank {rank} --distributed-init-method tcp://127.0.0.1:$PORT" in line
        assert "--distributed-no-spawn" in line and line.endswith(" &")
