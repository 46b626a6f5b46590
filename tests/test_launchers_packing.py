"""Packing through `make sweep`: on a machine whose CUDA_VISIBLE_DEVICES names two GPUs, the Makefile asks
normpos.experiment.devices for the launcher, gets Hydra's joblib launcher with n_jobs = JOBS_PER_GPU x 2,
and the two runs train at the same time, each pinned to its own GPU and each in its own folder.

This machine has no GPU and CPU torch: fairseq trains on the CPU whatever CUDA_VISIBLE_DEVICES says, so the
test watches the real training processes (/proc) for the GPU each was given and for the two running at once.
"""

import json
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO
from test_experiment_runs import ENV, TINY, metrics, run_dirs
from test_launchers_submitit import processes

pytestmark = pytest.mark.slow


def fairseq_trainings(root: Path):
    """{save dir: CUDA_VISIBLE_DEVICES} of the fairseq-train processes now training under ``root``."""
    found = {}
    for pid, _, cmdline in processes():
        if "normpos.fairseq_run train" not in cmdline or str(root) not in cmdline:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        save_dir = re.search(r"--save-dir (\S+)", cmdline).group(1)
        found[save_dir] = next((e.decode().split("=", 1)[1] for e in environ
                                if e.startswith(b"CUDA_VISIBLE_DEVICES=")), None)
    return found


def log_span(run_dir: Path):
    """(start, end) of a run's training in seconds: its log's header time and the log's last write."""
    header = re.search(r"^# (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", (run_dir / "train.log").read_text(), re.M).group(1)
    return datetime.strptime(header, "%Y-%m-%d %H:%M:%S").timestamp(), (run_dir / "train.log").stat().st_mtime


def test_make_sweep_packs_two_runs_at_once_each_on_its_own_gpu(tiny_bin, tmp_path):
    root = tmp_path / "root"
    overrides = [o for o in TINY if o != "train.cpu=true"] + [
        "train.cpu=false",  # the demo trains on the CPU on purpose; a GPU sweep does not (fairseq falls back here)
        f"dataset.data_bin={tiny_bin}", f"dataset.ref_dir={tiny_bin.parent / 'ref'}",
        "variant=postln_constant,preln_constant", "train.max_update=12"]
    with open(tmp_path / "make.out", "w") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "sweep", f"PY={sys.executable}", "EXPERIMENT=demo", f"RUN_ROOT={root}",
             "JOBS_PER_GPU=1", f"ARGS={shlex.join(overrides)}"],
            cwd=REPO, env={**ENV, "CUDA_VISIBLE_DEVICES": "0,1"}, stdout=out, stderr=subprocess.STDOUT)
    pinned, most_at_once = {}, 0
    while make.poll() is None:  # watch the training processes while the sweep runs
        now = fairseq_trainings(root)
        pinned.update(now)
        most_at_once = max(most_at_once, len(now))
        time.sleep(0.1)
    output = (tmp_path / "make.out").read_text()
    assert make.returncode == 0, output[-3000:]
    assert "normpos: packing 2 runs at once: 1 per GPU x 2 GPU(s) (runs per GPU: JOBS_PER_GPU)" in output
    assert "Joblib.Parallel(n_jobs=2" in output  # Hydra's joblib launcher says how it launched

    post, pre = run_dirs(root)  # <slug>_<hash>/seed-1, in slug order
    assert [d.parent.name.rsplit("_", 1)[0] for d in (post, pre)] == ["post_ln_adam_lr-2e-3_constant_L2",
                                                                      "pre_ln_adam_lr-2e-3_constant_L2"]
    # job 0 (Post-LN) on GPU 0, job 1 (Pre-LN) on GPU 1: not both on the first GPU
    assert pinned == {str(post / "checkpoints"): "0", str(pre / "checkpoints"): "1"}
    assert most_at_once == 2
    (post_start, post_end), (pre_start, pre_end) = log_span(post), log_span(pre)
    assert max(post_start, pre_start) + 2 < min(post_end, pre_end)  # the logs' time spans overlap (1 s clock)

    for run_dir, scheme, other in ((post, "post_ln", pre), (pre, "pre_ln", post)):
        assert {p.name for p in run_dir.iterdir()} >= {"run.json", "config.yaml", "command.sh", "train.log",
                                                       "metrics.jsonl", "status.json", "checkpoints"}
        assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
        assert [r["num_updates"] for r in metrics(run_dir)][-1] == 12
        run = json.loads((run_dir / "run.json").read_text())
        log = (run_dir / "train.log").read_text()
        # no cross-talk: one attempt, this run's own command, and nothing of the other run's folder
        command = (run_dir / "command.sh").read_text().splitlines()[1]
        (header,) = [line for line in log.splitlines() if line.startswith("# ")]
        assert run["scheme"] == scheme and header.endswith(f" {command}") and run["command"] == command
        assert str(other) not in log and str(other) not in (run_dir / "metrics.jsonl").read_text()
        assert (run_dir / "checkpoints" / "checkpoint_best.pt").exists()
