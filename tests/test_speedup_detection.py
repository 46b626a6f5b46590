"""The speed-up figure (Xiong et al. 2020, sec. 4: Pre-LN's 9th epoch ~ Post-LN's 15th) finds its pairs in
run.json files exactly as ``run_one.describe`` writes them for the real sec. 4 variants: the IWSLT14 Pre-LN run
records ``lr_scheduler: step_once`` and ``warmup_updates: 4000`` (the base value, unread by its schedule), the
WMT14 one ``constant_then_inverse_sqrt``; each is paired with the Post-LN warm-up run at its own learning
rate, and the RAdam runs (no warm-up on either side) make no pair."""

import json

import pytest

from normpos.experiment import command, run_one
from normpos.experiment.schema import validate
from normpos.report.figures import make_figures
from test_experiment_configs import composed
from test_experiment_grids import grid


def post_ln_curve(epoch):
    return 4 + 6 / epoch  # 4.4 at epoch 15


def pre_ln_curve(epoch):
    return 4 + 3.5 / epoch  # 4.389 at epoch 9, 4.4375 at epoch 8: reaches 4.4 first at epoch 9


def described_runs(experiment: str, root) -> dict:
    """Every grid point of ``experiment`` (seed 1) as the sweep writes it: run.json from describe(), a finished
    status, and 15 epochs of valid loss (the Pre-LN curve for pre_ln runs); returns {config: run.json}."""
    infos = {}
    for overrides in grid(experiment, with_seeds=False):
        cfg = validate(composed(f"experiment={experiment}", *overrides, f"run.root={root}"))
        directory = command.run_dir(cfg)
        info = run_one.describe(cfg, command.train_argv(cfg, directory))
        directory.mkdir(parents=True)
        (directory / "run.json").write_text(json.dumps(info))
        (directory / "status.json").write_text(json.dumps({"status": "finished", "reason": "", "epochs": 15}))
        curve = pre_ln_curve if info["scheme"] == "pre_ln" else post_ln_curve
        (directory / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e, "num_updates": 100 * e, "valid_loss": curve(e)}) + "\n" for e in range(1, 16)))
        infos[info["config"]] = info
    return infos


def test_iwslt14_pre_ln_step_once_is_paired_with_post_ln_warmup(tmp_path):
    infos = described_runs("sec4_preln_vs_postln", tmp_path)
    pre = next(c for c, i in infos.items() if i["scheme"] == "pre_ln")
    post = next(c for c, i in infos.items() if i["scheme"] == "post_ln")
    # what makes this case worth testing: the Pre-LN run's record carries a warm-up value its schedule never reads
    assert (infos[pre]["lr_scheduler"], infos[pre]["warmup_updates"]) == ("step_once", 4000)
    made = make_figures(tmp_path / "iwslt14" / "sec4_preln_vs_postln", tmp_path / "out")
    (result,) = made["speedup_results"]
    assert (result["pre_ln"], result["post_ln"], result["post_ln_at"]) == (pre, post, 15)
    assert result["target"] == pytest.approx(4.4) and result["pre_ln_reaches_at"] == 9


def test_wmt14_pairs_each_learning_rate_with_its_own_post_ln_run(tmp_path):
    infos = described_runs("sec4_wmt_preln_vs_postln", tmp_path)
    assert {i["lr_scheduler"] for i in infos.values() if i["scheme"] == "pre_ln"} == {"constant_then_inverse_sqrt"}
    made = make_figures(tmp_path / "wmt14" / "sec4_wmt_preln_vs_postln", tmp_path / "out")
    pairs = {(infos[r["pre_ln"]]["lr"], infos[r["post_ln"]]["lr"]) for r in made["speedup_results"]}
    assert pairs == {(7e-4, 7e-4), (1.5e-3, 1.5e-3)}
    assert {r["pre_ln_reaches_at"] for r in made["speedup_results"]} == {9}


def test_radam_runs_without_warmup_make_no_pair(tmp_path):
    infos = described_runs("sec4_radam", tmp_path)
    assert {(i["scheme"], i["lr_scheduler"]) for i in infos.values()} == {("post_ln", "linear_decay"),
                                                                          ("pre_ln", "linear_decay")}
    made = make_figures(tmp_path / "iwslt14" / "sec4_radam", tmp_path / "out")
    assert made["speedup_results"] == [] and not (tmp_path / "out" / "speedup.json").exists()
