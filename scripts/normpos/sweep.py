"""The experiments of the paper as a Hydra app: one run, or with ``--multirun`` a sweep.

    python -m normpos.sweep experiment=sec3_postln_adam --multirun            # the paper's grid
    python -m normpos.sweep experiment=sec3_postln_adam --multirun run.dry_run=true   # list commands
    python -m normpos.sweep experiment=demo --multirun hydra/launcher=joblib hydra.launcher.n_jobs=4

Each job validates its composed config (one-line error on a bad value), then trains, records and scores
the run (``normpos.experiment.run_one``). Jobs run in order with Hydra's basic launcher; the joblib launcher
runs several at once, spread round-robin over the visible GPUs (``normpos.experiment.devices``;
``run.gpu_ids=[0,1,...]`` chooses them); the submitit launcher sends them to Slurm
(``hydra/launcher=submitit_slurm``), whose requeued jobs resume from their last checkpoint.
"""

import sys

import hydra
from omegaconf import DictConfig

from normpos.experiment import command, devices, run_one, write_faults
from normpos.experiment.schema import ConfigError, validate


@hydra.main(version_base="1.3", config_path="../../configs", config_name="train")
def main(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    job_num = HydraConfig.get().job.get("num", 0) or 0
    try:
        typed = validate(cfg)
        devices.gpu_for_job(typed, job_num)  # run.gpu_ids naming a GPU this job cannot see: refused up front
    except ConfigError as err:
        print(f"normpos: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    try:
        return run_one.run(typed, job_num)["status"]
    except OSError as err:  # a full disk or a read-only folder ends this run, not the sweep
        return write_faults.record_failure(command.run_dir(typed), err)


if __name__ == "__main__":
    main()
