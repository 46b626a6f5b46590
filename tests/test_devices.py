"""GPU placement and the packing default (normpos.experiment.devices): which GPU each job of a sweep gets for
several visible-GPU situations, and when a sweep is packed with the joblib launcher. No GPU is needed: the
visible GPUs are passed in (or set through CUDA_VISIBLE_DEVICES for the command line), the configs are
composed by Hydra from configs/, and the printed overrides are composed by Hydra again."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO
from normpos.experiment import devices
from normpos.experiment.schema import ConfigError, validate


def composed(*overrides: str):
    # version_base 1.1 as in test_experiment_configs: Hydra's version base is process-wide and fairseq,
    # used by other tests in the same process, still calls hydra.experimental.initialize
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def run_cfg(*overrides: str):
    return validate(composed("experiment=sec3_postln_adam", *overrides))


def placements(cfg, visible, jobs=6):
    return [devices.gpu_for_job(cfg, k, visible) for k in range(jobs)]


# ---- placement: job k -> which CUDA_VISIBLE_DEVICES value

def test_jobs_round_robin_over_the_visible_gpus():
    assert placements(run_cfg(), ["0", "1", "2", "3"]) == ["0", "1", "2", "3", "0", "1"]


def test_round_robin_uses_the_names_in_cuda_visible_devices():
    # a Slurm job given GPUs 2 and 3 sees CUDA_VISIBLE_DEVICES=2,3: its jobs alternate between them
    assert placements(run_cfg(), ["2", "3"], 4) == ["2", "3", "2", "3"]
    uuids = ["GPU-1a2b3c4d", "MIG-5e6f7a8b"]
    assert placements(run_cfg(), uuids, 3) == [uuids[0], uuids[1], uuids[0]]


def test_one_or_no_gpu_sets_nothing():
    assert placements(run_cfg(), ["0"]) == [None] * 6
    assert placements(run_cfg(), []) == [None] * 6


def test_gpu_ids_are_positions_in_the_visible_list():
    assert placements(run_cfg("run.gpu_ids=[1,3]"), ["0", "1", "2", "3"], 4) == ["1", "3", "1", "3"]
    assert placements(run_cfg("run.gpu_ids=[0,1]"), ["4", "5"], 3) == ["4", "5", "4"]


def test_gpu_ids_beyond_the_visible_gpus_are_a_config_error():
    with pytest.raises(ConfigError, match=r"run.gpu_ids=\[0, 2\] names GPU 2, but this process sees 2 GPU"):
        placements(run_cfg("run.gpu_ids=[0,2]"), ["0", "1"], 2)
    with pytest.raises(ConfigError, match="sees 0 GPU"):
        devices.gpu_for_job(run_cfg("run.gpu_ids=[0]"), 0, [])


def test_data_parallel_and_cpu_jobs_are_not_pinned():
    assert placements(run_cfg("train.gpus=2"), ["0", "1", "2", "3"]) == [None] * 6
    assert placements(run_cfg("train.gpus=2", "run.gpu_ids=[0,1]"), ["0", "1"]) == [None] * 6
    assert placements(run_cfg("train.cpu=true"), ["0", "1"]) == [None] * 6


def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does():
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": " 3 , 1 "}) == ["3", "1"]
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == ["0"]  # CUDA stops at an invalid entry
    # unset: what torch counts on this machine (none here; every device on a GPU machine)
    assert devices.visible_gpus({}) == [str(i) for i in range(torch.cuda.device_count())]


# ---- packing: how many runs per GPU, and the overrides a sweep gets

def write_packing(folder, slug, gpu, best):
    (folder / slug).mkdir(parents=True)
    (folder / slug / "packing.json").write_text(json.dumps({"gpu": gpu, "best_jobs_per_gpu": best}))


def test_jobs_per_gpu_comes_from_the_measurement_for_this_gpu_model(tmp_path):
    write_packing(tmp_path, "a100", "NVIDIA A100-SXM4-80GB", 4)
    write_packing(tmp_path, "h200", "NVIDIA H200", 3)
    assert devices.jobs_per_gpu(None, "NVIDIA H200", tmp_path)[0] == 3
    assert devices.jobs_per_gpu(None, "nvidia h200", tmp_path)[0] == 3
    assert devices.jobs_per_gpu(None, "NVIDIA L4", tmp_path)[0] == devices.DEFAULT_JOBS_PER_GPU
    assert devices.jobs_per_gpu(None, None, tmp_path)[0] == devices.DEFAULT_JOBS_PER_GPU
    assert devices.jobs_per_gpu("5", "NVIDIA H200", tmp_path) == (5, "JOBS_PER_GPU")  # the user's wins


@pytest.mark.parametrize("requested", ["0", "-2", "two", "1.5"])
def test_bad_jobs_per_gpu_is_refused(requested, tmp_path):
    with pytest.raises(ConfigError, match="JOBS_PER_GPU must be a whole number >= 1"):
        devices.jobs_per_gpu(requested, None, tmp_path)


def test_a_damaged_packing_file_is_refused_by_name(tmp_path):
    write_packing(tmp_path, "h200", "NVIDIA H200", 0)
    with pytest.raises(ConfigError, match=r"h200/packing.json: best_jobs_per_gpu must be"):
        devices.jobs_per_gpu(None, "NVIDIA H200", tmp_path)
    (tmp_path / "h200" / "packing.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not readable JSON"):
        devices.jobs_per_gpu(None, "NVIDIA H200", tmp_path)


def test_two_gpus_pack_jobs_per_gpu_times_two():
    chosen, why = devices.launcher_overrides(composed("experiment=sec3_postln_adam"), ["experiment=sec3_postln_adam"],
                                             n_gpus=2, per_gpu=3)
    assert chosen == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=6"]
    assert why == "6 runs at once: 3 per GPU x 2 GPU(s)"


@pytest.mark.parametrize("overrides, n_gpus, per_gpu, why", [
    (["experiment=sec3_postln_adam"], 0, 2, "no GPU visible"),
    (["experiment=sec3_postln_adam"], 1, 1, "one run per GPU on one GPU: jobs run in order"),
    (["experiment=sec3_postln_adam", "hydra/launcher=submitit_slurm"], 2, 2, "hydra/launcher=submitit_slurm was chosen; kept"),
    (["experiment=sec3_postln_adam", "hydra/launcher=basic"], 2, 2, "hydra/launcher=basic was chosen; kept"),
    (["experiment=sec3_postln_adam", "train.gpus=2"], 2, 2, "train.gpus=2: each run is data-parallel over the GPUs it sees"),
    (["experiment=demo"], 2, 2, "train.cpu=true: runs on the CPU"),  # the CPU demo sets train.cpu itself
    (["experiment=sec3_postln_adam", "run.dry_run=true"], 2, 2, "a dry run trains nothing"),
])
def test_no_packing_where_it_does_not_apply(overrides, n_gpus, per_gpu, why):
    assert devices.launcher_overrides(composed(*overrides), overrides, n_gpus, per_gpu) == ([], why)


def cli(*args, visible, cwd=REPO):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
    return subprocess.run([sys.executable, "-m", "normpos.experiment.devices", "launcher-args", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_command_line_prints_overrides_that_hydra_composes(tmp_path):
    write_packing(tmp_path, "fake", "no GPU of this name exists", 7)
    done = cli("--measured", str(tmp_path), "--", "experiment=sec3_postln_adam", "optim.lr=1e-3,5e-4",
               "hydra.sweeper.params.seed=1,2", visible="0,1")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split()
    assert printed == ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={2 * devices.DEFAULT_JOBS_PER_GPU}"]
    assert done.stderr.startswith("normpos: packing 4 runs at once: 2 per GPU x 2 GPU(s) (runs per GPU: the default")
    launcher = composed("experiment=sec3_postln_adam", *printed).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 4


def test_command_line_keeps_the_users_launcher_and_refuses_bad_jobs_per_gpu():
    kept = cli("--", "experiment=sec3_postln_adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", visible="0,1")
    assert (kept.returncode, kept.stdout.strip()) == (0, "")
    assert kept.stderr == "normpos: no packing: hydra/launcher=joblib was chosen; kept\n"
    bad = cli("--jobs-per-gpu", "0", "--", "experiment=sec3_postln_adam", visible="0,1")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "normpos: error: JOBS_PER_GPU must be a whole number >= 1, got '0'\n"
    none = cli("--", "experiment=sec3_postln_adam", visible="")
    assert (none.returncode, none.stdout.strip(), none.stderr) == (0, "", "")  # a CPU machine: silent


def test_sweep_refuses_gpu_ids_beyond_the_visible_gpus_before_anything_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "normpos.sweep", "experiment=sec3_postln_adam", "run.gpu_ids=[2]",
                           "seed=1", f"run.root={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("normpos: error: run.gpu_ids=[2] names GPU 2, but this process "
                                                    "sees 2 GPU(s) (0,1); ids count from 0 within CUDA_VISIBLE_DEVICES")
    assert not list(tmp_path.rglob("run.json"))


def test_a_cpu_only_torch_sees_no_gpu_without_being_imported():
    """`make sweep` asks for the GPUs first; a +cpu torch wheel has none, which its version says (no import)."""
    code = ("import sys, importlib.metadata as m; from normpos.experiment import devices; "
            "print(m.version('torch'), devices.visible_gpus({}), devices.gpu_name(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split()
    if not out[0].endswith("+cpu"):
        pytest.skip(f"torch {out[0]} is not a CPU-only build")
    assert out[1:] == ["[]", "None", "False"]
    assert torch.cuda.device_count() == 0  # what importing it would have said
