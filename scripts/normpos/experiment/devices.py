"""Which GPU each job of a sweep trains on, and how many jobs a sweep runs at once on this machine's GPUs.

Placement (``gpu_for_job``, used where run_one builds the training process's environment): a sweep launched
with several jobs at once (Hydra's joblib launcher) would otherwise start every fairseq-train on cuda:0,
because each child sees every GPU and takes the first. So job k is pinned through CUDA_VISIBLE_DEVICES:
to ``run.gpu_ids[k mod n]`` when given, else round-robin over the GPUs this process sees. A data-parallel
job (``train.gpus > 1``: fairseq spawns one rank per visible GPU) and a CPU job are left alone, and so is
a machine with one GPU or none: there is nothing to choose. Under Slurm (submitit) each job already sees
only the GPUs it was given, so the same rule applies inside the allocation.

Packing (``launcher_overrides``, the Makefile's sweeps; issue 13): one IWSLT-size run leaves a large GPU
mostly idle, so on a machine with GPUs a sweep runs J x (number of GPUs) jobs at once with Hydra's joblib
launcher, unless the user or the experiment chose a launcher. J is ``JOBS_PER_GPU`` when set, else the
measured best for this GPU model (``best_jobs_per_gpu`` of a ``results/multi30k/<gpu>/packing.json`` whose
``gpu`` is this GPU's name, written by ``make gpu-proof``), else ``DEFAULT_JOBS_PER_GPU``:

    python -m normpos.experiment.devices launcher-args [--jobs-per-gpu J] -- experiment=NAME [OVERRIDE ...]

prints the overrides to add (or nothing) on stdout, and why on stderr.
"""

import argparse
import importlib.metadata
import json
import os
import sys
import warnings
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from .schema import ConfigError

REPO = Path(__file__).resolve().parents[3]
# Where `make gpu-proof` leaves its packing measurement, one folder per GPU model.
MEASURED = REPO / "results" / "multi30k"
# Runs per GPU when this GPU model has no measurement: 2 overlaps one run's data loading, validation and
# checkpoint writing with another's compute, and two IWSLT-size models (36M parameters, 4096-token batches)
# fit together on any GPU the paper's setup runs on. A measured packing.json replaces it.
DEFAULT_JOBS_PER_GPU = 2


def visible_gpus(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """The GPUs this process may use, as CUDA names them: the entries of CUDA_VISIBLE_DEVICES when it is set
    (indices or GPU-/MIG- UUIDs; CUDA ignores everything from the first invalid entry on, so "-1" hides
    all), else "0".."n-1" for the n devices torch counts."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for entry in (part.strip() for part in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus
    if cpu_only_torch():
        return []
    try:
        import torch
    except ImportError:
        return []
    return [str(index) for index in range(torch.cuda.device_count())]


def cpu_only_torch() -> bool:
    """Whether the installed torch is a CPU-only build (its version's local part is ``+cpu``), which sees no
    GPU: then nothing needs torch imported, 2 s of every `make sweep`'s start on a CPU machine."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def gpu_for_job(cfg, job_num: int, visible: Optional[Sequence[str]] = None) -> Optional[str]:
    """The CUDA_VISIBLE_DEVICES value that pins job ``job_num`` of a sweep to one GPU, or None to leave the
    training process's GPUs as they are. ``cfg`` is the validated run config (train.cpu, train.gpus,
    run.gpu_ids are read); ``visible`` defaults to ``visible_gpus()``.

    ``run.gpu_ids`` are positions in the visible list (torch's cuda:N numbering), so with
    CUDA_VISIBLE_DEVICES=2,3 the ids [0, 1] mean physical GPUs 2 and 3.
    """
    if cfg.train.cpu or cfg.train.gpus > 1:
        return None  # a CPU run uses no GPU; a data-parallel one spreads over every GPU it sees
    visible = visible_gpus() if visible is None else list(visible)
    gpu_ids = list(cfg.run.gpu_ids)
    if gpu_ids:
        position = gpu_ids[job_num % len(gpu_ids)]
        if not 0 <= position < len(visible):
            raise ConfigError(f"run.gpu_ids={gpu_ids} names GPU {position}, but this process sees "
                              f"{len(visible)} GPU(s) ({','.join(visible) or 'none'}); ids count from 0 "
                              "within CUDA_VISIBLE_DEVICES")
        return visible[position]
    if len(visible) <= 1:
        return None
    return visible[job_num % len(visible)]


def measured_jobs_per_gpu(gpu_name: Optional[str], folder: Path = MEASURED) -> Optional[Tuple[int, Path]]:
    """``best_jobs_per_gpu`` from the first ``folder/*/packing.json`` (in path order) measured on a GPU of
    this name (compared without case), with the file it came from; None when there is none."""
    if not gpu_name:
        return None
    for path in sorted(Path(folder).glob("*/packing.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path} is not readable JSON ({err}); fix or remove it") from None
        if not isinstance(record, dict) or str(record.get("gpu", "")).strip().lower() != gpu_name.strip().lower():
            continue
        best = record.get("best_jobs_per_gpu")
        if isinstance(best, bool) or not isinstance(best, int) or best < 1:
            raise ConfigError(f"{path}: best_jobs_per_gpu must be a whole number >= 1, got {best!r}")
        return best, path
    return None


def _shown(path: Path) -> str:
    """A path as a message shows it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def jobs_per_gpu(requested: Optional[str], gpu_name: Optional[str], folder: Path = MEASURED) -> Tuple[int, str]:
    """How many runs share one GPU, and where that number comes from: JOBS_PER_GPU (``requested``), the
    measurement for this GPU model, or the default."""
    if requested not in (None, ""):
        try:
            count = int(requested)
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"JOBS_PER_GPU must be a whole number >= 1, got {requested!r}")
        return count, "JOBS_PER_GPU"
    found = measured_jobs_per_gpu(gpu_name, folder)
    if found:
        return found[0], f"measured on this GPU model: {_shown(found[1])}"
    return DEFAULT_JOBS_PER_GPU, f"the default; no packing.json under {_shown(folder)} for {gpu_name or 'this GPU'}"


def launcher_overrides(cfg, overrides: Sequence[str], n_gpus: int, per_gpu: int) -> Tuple[List[str], str]:
    """The Hydra overrides that pack a sweep onto ``n_gpus`` GPUs, ``per_gpu`` runs each, and why (or why
    not). ``cfg`` is the sweep's config composed with Hydra's node (``return_hydra_config=True``) from
    ``overrides``, the user's; a launcher they name (even ``basic``, the default) or an experiment chose is
    kept."""
    launcher = cfg.hydra.runtime.choices.get("hydra/launcher")
    named = any(o.lstrip("+~").split("=")[0] == "hydra/launcher" or o.lstrip("+~").startswith("hydra.launcher.")
                for o in overrides)
    if named or launcher != "basic":
        return [], f"hydra/launcher={launcher} was chosen; kept"
    if n_gpus < 1:
        return [], "no GPU visible"
    if cfg.run.dry_run:
        return [], "a dry run trains nothing"
    if cfg.train.cpu:
        return [], "train.cpu=true: runs on the CPU"
    if cfg.train.gpus > 1:
        return [], f"train.gpus={cfg.train.gpus}: each run is data-parallel over the GPUs it sees"
    n_jobs = per_gpu * n_gpus
    if n_jobs < 2:
        return [], "one run per GPU on one GPU: jobs run in order"
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"], \
        f"{n_jobs} runs at once: {per_gpu} per GPU x {n_gpus} GPU(s)"


def gpu_name() -> Optional[str]:
    """The first visible GPU's model name (what packing.json files are matched by), None without one."""
    if cpu_only_torch():
        return None
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except (ImportError, RuntimeError, AssertionError):
        return None


def _compose(overrides: Sequence[str]):
    """The sweep's config for its single-valued overrides (a sweep over lists is the sweeper's business)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    single = [o.input_line for o in OverridesParser.create().parse_overrides(list(overrides))
              if not o.is_sweep_override()]
    # version_base 1.1: Hydra's version base is process-wide, and fairseq (building a model later in the same
    # process, e.g. a test) still calls hydra.experimental.initialize, which versions >= 1.2 refuse; our configs
    # compose the same under both (the config and the launcher choices were compared)
    with warnings.catch_warnings():  # Hydra's note that base 1.1 goes in Hydra 1.4 would end up in our one-liners
        warnings.filterwarnings("ignore", message=r"(?s).*version_base")
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
            return compose("train", overrides=single, return_hydra_config=True)


def launcher_args(overrides: Sequence[str], requested: Optional[str], folder: Path) -> Tuple[List[str], str]:
    """The whole decision for the command line: Hydra flags and overrides that do not compose leave the
    launcher alone (the sweep itself reports a bad override, in its own words)."""
    if any(o.startswith("-") for o in overrides):
        return [], "Hydra flags given (--cfg, --info, ...); launcher left alone"
    visible = visible_gpus()
    if not visible:
        return [], "no GPU visible"
    per_gpu, source = jobs_per_gpu(requested, gpu_name(), folder)
    try:
        cfg = _compose(overrides)
    except Exception as err:  # noqa: BLE001 - any composition error is the sweep's to report
        return [], f"the overrides do not compose ({str(err).splitlines()[0]})"
    chosen, why = launcher_overrides(cfg, overrides, len(visible), per_gpu)
    return chosen, f"{why} (runs per GPU: {source})" if chosen else why


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normpos.experiment.devices", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    args_cmd = commands.add_parser("launcher-args", help="print the Hydra overrides that pack a sweep on this machine's GPUs")
    args_cmd.add_argument("--jobs-per-gpu", help="runs per GPU (overrides the measured or default value)")
    args_cmd.add_argument("--measured", type=Path, default=MEASURED, help="folder with <gpu>/packing.json")
    args_cmd.add_argument("overrides", nargs="*", help="the sweep's Hydra overrides (after --)")
    args = parser.parse_args(argv)
    try:
        chosen, why = launcher_args(args.overrides, args.jobs_per_gpu, args.measured)
    except ConfigError as err:
        print(f"normpos: error: {err}", file=sys.stderr)
        return 2
    if chosen:
        print(f"normpos: packing {why}; JOBS_PER_GPU=N or ARGS='hydra/launcher=basic' to change", file=sys.stderr)
    elif why != "no GPU visible":  # on a CPU machine, say nothing
        print(f"normpos: no packing: {why}", file=sys.stderr)
    print(" ".join(chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
