"""Every point of every experiment's sweep grid, not only each experiment's base: composed by Hydra, validated,
turned into its fairseq-train command, parsed by fairseq and its model built (the variants preln_step_once,
preln_constant_then_inverse_sqrt, the RAdam ones, every scheme overlay...); and every ``make reproduce-*``
target's DRY_RUN lists exactly one command per grid point and seed (51 for reproduce-iwslt, the number docs/experiments.md states).

The grids are read from the experiment files' ``hydra.sweeper.params`` (comma-separated values), the
experiments of each target from the Makefile, so a new variant or target is covered without editing this file.
"""

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from normpos.experiment import command
from normpos.experiment.schema import validate
from normpos.fairseq_build import build_task_and_model
from normpos_fairseq.schemes import scheme_names
from test_experiment_configs import EXPERIMENTS, composed

pytestmark = pytest.mark.slow

SHAPES = {"iwslt_de_en": (6, 512, 1024, 4), "wmt_en_de_base": (6, 512, 2048, 8)}  # layers, d, FFN, heads
README_IWSLT_RUNS = 51  # docs/experiments.md: make reproduce-iwslt DRY_RUN=1 lists 51 runs
DOCS_IWSLT_RUNS = re.search(r"make reproduce-iwslt DRY_RUN=1 .*\((\d+) runs\)",
                            (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text())


def sweep_params(experiment: str) -> dict:
    params = yaml.safe_load((REPO / "configs" / "experiment" / f"{experiment}.yaml").read_text())
    params = ((params.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    return {key: [v.strip() for v in str(values).split(",") if v.strip()] for key, values in params.items()}


def grid(experiment: str, with_seeds: bool) -> list:
    """Every combination of the experiment's sweep values, as Hydra overrides (seeds left out unless asked)."""
    params = {k: v for k, v in sweep_params(experiment).items() if with_seeds or k != "seed"}
    keys = sorted(params)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*(params[k] for k in keys))]


# model options -> the built model's (layers, d, FFN, heads): every lr and schedule point of one model, in any
# experiment of this file, shares its build (a model at the IWSLT size takes about a second to build)
BUILT = {}


def test_grids_are_read_from_the_experiment_files():
    # the parsing this file relies on, checked on two grids the paper states (sec. 3.2: 2 lr x 3 warm-up x 3 seeds)
    assert len(grid("sec3_postln_adam", with_seeds=True)) == 18 and len(grid("sec3_postln_adam", False)) == 6
    assert grid("sec4_preln_vs_postln", False) == [["variant=postln_warmup"], ["variant=preln_step_once"]]
    assert len(grid("schemes_warmup", False)) == len(scheme_names()) * 2  # every registered scheme x warm-up {1, 4000}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_grid_point_composes_validates_and_builds_its_model(experiment, dict_dir):
    for overrides in grid(experiment, with_seeds=False):
        cfg = validate(composed(f"experiment={experiment}", *overrides))
        for override in overrides:  # each grid value reached the validated config (a variant is checked below)
            key, value = override.split("=", 1)
            if key != "variant":
                got = _select(cfg, key)
                want = None if value == "null" else type(got)(value) if isinstance(got, (int, float)) else value
                assert got == want, (experiment, override)
        argv = command.train_argv(cfg, Path("unused"))
        options = argv[argv.index(cfg.dataset.data_bin) + 1:]
        langs = (cfg.dataset.source_lang, cfg.dataset.target_lang)
        model_options = tuple(options[:options.index("--optimizer")])
        if model_options not in BUILT:
            fairseq_cfg, _, model = build_task_and_model(dict_dir, *options, langs=langs)
            layer = model.decoder.layers[-1]
            BUILT[model_options] = [len(model.encoder.layers), layer.fc1.in_features, layer.fc1.out_features,
                                    layer.self_attn.num_heads]
            del model
        else:  # fairseq still parses every point's full command (optimizer, scheduler options)
            from normpos.fairseq_build import train_cfg

            fairseq_cfg = train_cfg(dict_dir, *options, langs=langs)
        m = cfg.model
        want = [override or default for override, default in
                zip((m.layers, m.embed_dim, m.ffn_embed_dim, m.attention_heads), SHAPES[m.shape])]
        assert BUILT[model_options] == want, (experiment, overrides)
        assert fairseq_cfg.model.arch == f"normpos_{m.shape}_{m.scheme}", (experiment, overrides)
        assert fairseq_cfg.lr_scheduler._name == command.SCHEDULER[cfg.schedule.name], (experiment, overrides)
        assert fairseq_cfg.optimization.lr[0] == pytest.approx(cfg.optim.lr)
        if cfg.schedule.name == "warmup_inverse_sqrt":
            assert fairseq_cfg.lr_scheduler.warmup_updates == cfg.schedule.warmup_updates


def _select(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def reproduce_targets() -> dict:
    """{make target: (dataset, [experiments])} of every target built on the Makefile's ``reproduce`` macro."""
    makefile = (REPO / "Makefile").read_text()
    variables = {k: v.split() for k, v in re.findall(r"^([A-Z0-9_]+_EXPERIMENTS) = (.*)$", makefile, re.M)}
    targets = {}
    for target, dataset, experiments in re.findall(r"^([a-z0-9-]+):.*\n\t\$\(call reproduce,(\w+),([^)]*\)?)\)",
                                                   makefile, re.M):
        name = re.fullmatch(r"\$\((\w+)\)", experiments)
        targets[target] = (dataset, variables[name.group(1)] if name else experiments.split())
    return targets


def test_every_reproduce_targets_dry_run_lists_one_command_per_grid_point(tmp_path):
    targets = reproduce_targets()
    assert set(targets) == {"reproduce-iwslt", "reproduce-wmt", "reproduce-multi30k", "schemes-demo"}
    # all targets at once: each is a few Hydra processes that mostly import fairseq
    procs = {target: subprocess.Popen(["make", "-s", "--no-print-directory", target, "DRY_RUN=1", f"PY={sys.executable}",
                                       f"RUN_ROOT={tmp_path / target}"], cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for target in targets}
    counts = {}
    for target, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
        commands = [line for line in out.splitlines() if "normpos.fairseq_run train" in line]
        dataset, experiments = targets[target]
        assert all(f"data/{dataset}/" in c for c in commands), target
        assert len(commands) == sum(len(grid(e, with_seeds=True)) for e in experiments), target
        assert len(set(commands)) == len(commands), target  # every run once
        counts[target] = len(commands)
    assert counts["reproduce-iwslt"] == README_IWSLT_RUNS == int(DOCS_IWSLT_RUNS.group(1))
    assert not list(tmp_path.rglob("status.json"))  # a dry run trains nothing
