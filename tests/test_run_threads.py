"""train.threads: the CPU threads a run pins, set by its config (make demo's three runs side by side, one thread
each) instead of the caller's environment. The training child, run.json and the scoring child all get it, and
the sweep's progress lines name the update a validation came at (issue 27)."""

import json
import re
import subprocess

import pytest

from conftest import REPO
from normpos import numerics
from normpos.experiment import run_one
from normpos.experiment.schema import ConfigError
from normpos.golden.curves import composed
from normpos.scoring.score_run import recorded_numerics
from test_experiment_runs import ENV, run_dirs, sweep_argv


def test_the_config_sets_the_child_threads_whatever_the_caller_says():
    caller = {"NORMPOS_NUMERICS_THREADS": "2", "OMP_NUM_THREADS": "2"}
    demo = run_one.child_env(composed(["experiment=demo"]), 0, caller)
    assert (demo["OMP_NUM_THREADS"], demo["MKL_NUM_THREADS"]) == ("1", "1")
    former = run_one.child_env(composed(["experiment=demo_d256"]), 0, {"NORMPOS_NUMERICS_THREADS": "1"})
    assert former["OMP_NUM_THREADS"] == "2"
    unset = run_one.child_env(composed(["experiment=demo", "train.threads=null"]), 0, {"NORMPOS_NUMERICS_THREADS": "3"})
    assert unset["OMP_NUM_THREADS"] == "3"  # null: the caller's, as before the option existed


def test_zero_threads_is_one_line():
    with pytest.raises(ConfigError, match="train.threads must be >= 1"):
        composed(["experiment=demo", "train.threads=0"])


def test_native_numerics_leave_the_threads_alone():
    env = run_one.child_env(composed(["experiment=demo", "train.numerics=native"]), 0, {"OMP_NUM_THREADS": "4"})
    assert env["OMP_NUM_THREADS"] == "4"
    assert recorded_numerics({"numerics": numerics.describe("native")}) == ("native", None)


@pytest.mark.slow
def test_a_run_records_its_threads_scores_with_them_and_names_the_update(tiny_bin, tmp_path):
    proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, "variant=preln_constant", "train.max_update=8",
                                     "train.threads=1", "eval.score=true", "eval.beam=1",
                                     "train.extra_args=[--validate-interval-updates,4]"),
                          cwd=REPO, env={**ENV, "NORMPOS_NUMERICS_THREADS": "2"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (directory,) = run_dirs(tmp_path)
    run = json.loads((directory / "run.json").read_text())
    assert run["numerics"]["settings"]["OMP_NUM_THREADS"] == "1"
    assert recorded_numerics(run) == ("pinned", 1)
    # validations inside the first epoch (400 sentences make more than 8 batches): named by their update
    assert re.search(r"\] update 4 \(epoch 1\): valid loss [0-9.]+", proc.stdout), proc.stdout[-1500:]
    assert re.search(r"\] update 8 \(epoch 1\): valid loss [0-9.]+", proc.stdout)
    assert json.loads((directory / "score.json").read_text())["sacrebleu_signature"]


def test_the_sweep_eta_names_the_later_runs_and_assumes_they_take_as_long():
    from normpos.experiment.run_one import sweep_eta

    # 60 s left of a run 120 s in; 3 later runs of 180 s each, 2 at once: 60 + 3 x 180 / 2 = 330 s
    assert sweep_eta(60, 120, 3, 2) == "; ~1.0 min left in this run, ~6 min in the sweep (3 later runs of it)"
    assert sweep_eta(60, 120, 1, 2).endswith("(1 later run of it)")
    assert sweep_eta(60, 120, 0, 2) == "; ~1.0 min left in this run" and sweep_eta(None, 5, 3, 2) == ""
