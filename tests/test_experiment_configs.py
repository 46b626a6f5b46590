"""Every experiment config composes and validates; the command it makes builds the paper's model; the dry
run lists the full IWSLT sweep; bad values are one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from normpos.experiment import command
from normpos.experiment.schema import ConfigError, validate
from normpos.fairseq_build import build_task_and_model
from normpos_fairseq.schemes import scheme_names

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def composed(*overrides: str):
    # version_base 1.1: Hydra's version base is process-wide, and fairseq (used in the same test process to
    # build the model) still calls hydra.experimental.initialize, which versions >= 1.2 refuse.
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        return compose("train", overrides=list(overrides))


def sweep(*overrides: str, root: Path):
    return subprocess.run(
        [sys.executable, "-m", "normpos.sweep", "-m", *overrides, f"run.root={root}"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds_the_papers_model(name, dict_dir):
    cfg = validate(composed(f"experiment={name}"))
    assert cfg.experiment == name and cfg.section
    argv = command.train_argv(cfg, Path("unused"))
    # the Hydra path ends in a fairseq-train command; build the model from exactly that command
    options = argv[argv.index(cfg.dataset.data_bin) + 1:]
    langs = (cfg.dataset.source_lang, cfg.dataset.target_lang)
    _, _, model = build_task_and_model(dict_dir, *options, langs=langs)
    want = list({"iwslt_de_en": (6, 512, 1024, 4), "wmt_en_de_base": (6, 512, 2048, 8)}[cfg.model.shape])
    m = cfg.model  # an experiment may shrink the model on purpose (the CPU demo)
    for i, override in enumerate((m.layers, m.embed_dim, m.ffn_embed_dim, m.attention_heads)):
        want[i] = override or want[i]
    layer = model.decoder.layers[-1]
    got = (len(model.encoder.layers), layer.fc1.in_features, layer.fc1.out_features, layer.self_attn.num_heads)
    assert got == tuple(want)  # not FFN 2048 for IWSLT (fairseq issue #4675 under fairseq-hydra-train)
    assert (model.encoder.layer_norm is not None) == (cfg.model.scheme == "pre_ln")


def test_dry_run_lists_the_full_iwslt_sweep(tmp_path):
    proc = sweep("experiment=sec3_postln_adam", "run.dry_run=true", root=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    commands = [line for line in proc.stdout.splitlines() if "normpos.fairseq_run train" in line]
    assert len(commands) == 2 * 3 * 3  # lr x warm-up x seeds
    grid = {(c.split("--lr ")[1].split()[0], c.split("--warmup-updates ")[1].split()[0],
             c.split("--seed ")[1].split()[0]) for c in commands}
    assert grid == {(lr, w, s) for lr in ("0.0005", "0.001") for w in ("1", "500", "4000") for s in "123"}
    save_dirs = {c.split("--save-dir ")[1].split()[0] for c in commands}
    assert len(save_dirs) == 18 and not any(":" in d or "=" in d for d in save_dirs)
    assert all("--arch normpos_iwslt_de_en_post_ln" in c and "--max-epoch 15" in c for c in commands)
    assert not any(tmp_path.joinpath("iwslt14").rglob("status.json"))  # a dry run trains nothing


@pytest.mark.parametrize("override, message", [
    ("schedule.warmup_updates=0", "schedule.warmup_updates must be >= 1 (1 = no warm-up), got 0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
    ("model.scheme=mid_ln", f"unknown model.scheme 'mid_ln'; valid: {', '.join(scheme_names())}"),
    ("+optim.lrr=1", "Key 'lrr' not in 'OptimCfg'"),
])
def test_bad_values_are_one_line_errors(tmp_path, override, message):
    proc = sweep("experiment=sec4_preln_vs_postln", "run.dry_run=true", override, root=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "HYDRA" not in line]
    assert proc.returncode == 2
    assert lines == [f"normpos: error: {lines[0][len('normpos: error: '):]}"] and message in lines[0]


def test_validate_refuses_unknown_dataset_key():
    cfg = composed("experiment=demo")
    OmegaConf.set_struct(cfg, False)  # as a config file adding a key would
    cfg.dataset.extra = 1
    with pytest.raises(ConfigError, match="extra"):
        validate(cfg)


def test_slurm_launcher_composes_a_job_config():
    """The cluster launcher (Hydra's submitit plugin) composes with our configs: Slurm job settings and the
    sweep's deterministic directory."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        cfg = compose("train", overrides=["experiment=sec4_preln_vs_postln", "hydra/launcher=submitit_slurm",
                                          "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=600",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.timeout_min, launcher.partition) == (1, 600, "gpu")
    assert launcher.submitit_folder == "results/runs/.hydra/sweep/.submitit/%j"  # under the sweep's fixed dir
    validate(cfg)  # the job config itself is still valid


def test_joblib_launcher_composes_for_packing_runs_on_one_gpu():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        cfg = compose("train", overrides=["experiment=sec3_postln_adam", "hydra/launcher=joblib",
                                          "hydra.launcher.n_jobs=4", "run.gpu_ids=[0,1]"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 4
    assert list(validate(cfg).run.gpu_ids) == [0, 1]
