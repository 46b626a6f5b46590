"""Build models, optimizers and schedulers the way ``fairseq-train`` builds them, for the tests."""

import torch
from fairseq import optim, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim.lr_scheduler import build_lr_scheduler

from conftest import PLUGIN_DIR


def train_cfg(data_dir, *argv: str):
    """Parse a fairseq-train command line (data dir + options) into fairseq's config, with our plugin."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data_dir), "--user-dir", str(PLUGIN_DIR), "-s", "de", "-t", "en", *argv]
    )
    return convert_namespace_to_omegaconf(args)


def build_model(data_dir, *argv: str, seed: int = 1):
    """fairseq_cli.train.main's model construction: setup_task(cfg.task), task.build_model(cfg.model)."""
    cfg = train_cfg(data_dir, *argv)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    return task.build_model(cfg.model)


def build_scheduler(data_dir, *argv: str):
    """An optimizer on one dummy parameter and the lr scheduler, as fairseq's Trainer builds them."""
    cfg = train_cfg(data_dir, "--arch", "normpos_iwslt_de_en", *argv)
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    scheduler = build_lr_scheduler(cfg.lr_scheduler, optimizer)
    scheduler.step_update(0)
    return optimizer, scheduler
