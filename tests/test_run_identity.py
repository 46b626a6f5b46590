"""A run's identity: a config that differs in anything that reaches fairseq never reuses a finished run;
a larger budget continues one; other data is refused. Through the real sweep app and Hydra."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from normpos.experiment import command, identity
from normpos.experiment.schema import ExperimentCfg, validate
from test_experiment_configs import composed
from test_experiment_runs import ENV, metrics, run_dirs, sweep_argv


def leaves(node, prefix=""):
    """Every scalar key of the schema, dotted (lists count as one value)."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value * 0.5 + 0.01
    if isinstance(value, list):
        return value + ["--fp16-no-flatten-grads"] if not value or isinstance(value[0], str) else [v * 0.5 for v in value]
    return None  # strings: choices with their own checks; covered below by the scheme/optimizer/schedule ones


BUDGET_AND_PLACES = {"train.max_update", "train.max_epoch", "seed", "train.num_workers", "train.log_interval",
                     "run.root", "train.tensorboard"}  # tensorboard: where fairseq logs, not what it trains


def test_every_value_that_reaches_fairseq_changes_the_run_directory():
    base = validate(composed("experiment=sec3_postln_adam"))
    base_argv, base_dir = command.train_argv(base, Path("X")), command.run_dir(base)
    checked = 0
    for key, value in leaves(ExperimentCfg()):
        new = changed(OmegaConf.select(OmegaConf.structured(base), key))
        if new is None:
            continue
        cfg = OmegaConf.structured(base)
        OmegaConf.update(cfg, key, new)
        try:
            cfg = validate(cfg)
        except Exception:
            continue  # a value the schema refuses is not a run
        reaches = command.train_argv(cfg, Path("X")) != base_argv
        if key in BUDGET_AND_PLACES:
            assert command.config_name(cfg) == command.config_name(base), key
        elif reaches:
            assert command.config_name(cfg) != command.config_name(base), f"{key} reaches fairseq but not the identity"
            checked += 1
    assert checked >= 20  # clip norm, betas, weight decay, lr_shrink, anneal/decay epochs, max_tokens, sizes, ...
    for key, value in (("model.scheme", "pre_ln"), ("optim.optimizer", "radam"), ("schedule.name", "step_once")):
        cfg = OmegaConf.structured(base)
        OmegaConf.update(cfg, key, value)
        assert command.run_dir(validate(cfg)) != base_dir


def test_budget_comparison():
    b = identity.budget
    assert identity.compare_budget(b(300, 0), b(150, 0))[0] == "more"
    assert identity.compare_budget(b(0, 30), b(0, 20))[0] == "more"
    assert identity.compare_budget(b(0, 0), b(150, 0))[0] == "more"   # no limit is more than any
    assert identity.compare_budget(b(100, 0), b(150, 0))[0] == "less"
    assert identity.compare_budget(b(150, 0), b(150, 0))[0] == "same"


@pytest.mark.slow
def test_changed_config_gets_its_own_run_and_a_larger_budget_continues(tiny_bin, tmp_path):
    overrides = ["variant=preln_constant", "train.extra_args=[--validate-interval-updates,4,--save-interval-updates,4]"]

    def sweep(*more):
        proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides, *more), cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    sweep("train.max_update=8")
    (first,) = run_dirs(tmp_path)
    # the user's case from the issue: another clip norm is another run, not "finished already"
    out = sweep("train.max_update=8", "optim.clip_norm=1.0")
    assert "finished already" not in out
    assert len(run_dirs(tmp_path)) == 2
    # a larger budget continues the finished run from its last checkpoint
    out = sweep("train.max_update=12")
    assert "continuing (max_update 8 -> 12)" in out and "resuming" in out
    assert len(run_dirs(tmp_path)) == 2
    assert "Loaded checkpoint" in (first / "train.log").read_text()
    status = json.loads((first / "status.json").read_text())
    assert status["status"] == "finished" and status["budget"]["max_update"] == 12
    updates = [r["num_updates"] for r in metrics(first)]  # every 4 updates, and at each epoch's end
    assert updates == sorted(set(updates)) and {4, 8, 12} <= set(updates) and updates[-1] == 12
    # a smaller one keeps the longer run and says so
    out = sweep("train.max_update=4")
    assert "finished already (12 updates; asked 4 updates); skipped" in out
    # other data under the same path: refused in one line, the run untouched
    (tiny_bin / "dict.en.txt").write_text((tiny_bin / "dict.en.txt").read_text() + "zzz 1\n")
    try:
        proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides, "train.max_update=12"), cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=600)
    finally:
        lines = (tiny_bin / "dict.en.txt").read_text().splitlines()[:-1]
        (tiny_bin / "dict.en.txt").write_text("\n".join(lines) + "\n")
    assert proc.returncode == 1
    assert "was trained on other data" in proc.stdout and "Traceback" not in proc.stderr
    assert json.loads((first / "status.json").read_text()) == status
