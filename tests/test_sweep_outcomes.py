"""Sweeps side by side and at their end: two sweeps over one grid train each run once (the run lock), and a
sweep ends with a summary and a non-zero exit status when a run failed (a diverged run is no failure)."""

import json
import subprocess

import pytest

from conftest import REPO
from test_experiment_runs import ENV, metrics, run_dirs, sweep_argv

pytestmark = pytest.mark.slow


def trainings(directory):
    """How many times training started in this run directory (each start writes one header line)."""
    return sum(line.startswith("# ") for line in (directory / "train.log").read_text().splitlines())


def test_two_sweeps_at_once_train_each_run_once(tiny_bin, tmp_path):
    grid = ["variant=preln_constant", "optim.lr=1e-3,5e-4", "train.max_update=6",
            "train.extra_args=[--validate-interval-updates,3]"]
    procs = [subprocess.Popen(sweep_argv(tiny_bin, tmp_path, *grid), cwd=REPO, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    for d in dirs:
        assert trainings(d) == 1, (d / "train.log").read_text()[-2000:]
        updates = [r["num_updates"] for r in metrics(d)]
        assert updates == sorted(set(updates)) and updates[-1] == 6
        assert json.loads((d / "status.json").read_text())["status"] == "finished"
    said = "".join(o[0] for o in outs)
    # the second sweep met each run either while it trained (busy) or after (finished already)
    assert said.count("; skipped") == 2, said
    assert said.count("sweep: 2 runs (") == 2 and said.count("sweep: 2 runs: ") == 2  # count up front, summary at the end


def test_a_failed_run_makes_the_sweep_exit_1_with_a_summary(tiny_bin, tmp_path):
    # max_tokens 5 is below every sentence's length: fairseq itself refuses to batch (a real failure)
    grid = ["variant=postln_constant", "train.max_tokens=800,5", "train.max_update=3"]
    proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, *grid), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    statuses = {d: json.loads((d / "status.json").read_text())["status"] for d in run_dirs(tmp_path)}
    assert sorted(statuses.values()) == ["failed", "finished"]
    (failed,) = [d for d, s in statuses.items() if s == "failed"]
    assert "sweep: 2 runs: 1 finished, 1 failed" in proc.stdout
    assert f"  failed: {failed}: " in proc.stdout
