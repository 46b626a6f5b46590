"""Build models, optimizers and schedulers the way ``fairseq-train`` builds them, for the tests."""

import torch
from fairseq import optim
from fairseq.optim.lr_scheduler import build_lr_scheduler

from normpos.fairseq_build import build_task_and_model, train_cfg


def build_model(data_dir, *argv: str, seed: int = 1):
    return build_task_and_model(data_dir, *argv, seed=seed)[2]


def build_scheduler(data_dir, *argv: str):
    """An optimizer on one dummy parameter and the lr scheduler, as fairseq's Trainer builds them."""
    cfg = train_cfg(data_dir, "--arch", "normpos_iwslt_de_en", *argv)
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    scheduler = build_lr_scheduler(cfg.lr_scheduler, optimizer)
    scheduler.step_update(0)
    return optimizer, scheduler
