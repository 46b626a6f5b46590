"""Constant rate, multiplied by ``lr_shrink`` once at epoch ``anneal_epoch`` (Xiong et al. 2020, sec. 4,
IWSLT14 Pre-LN: "decay the learning rate at the 8-th epoch by 0.1").

fairseq's ``fixed`` with ``--force-anneal 8 --lr-shrink 0.1`` is not this: it shrinks again every epoch
after 8 (0.1, 0.01, ...). Like ``--force-anneal``, epochs are 1-based and the shrunk rate applies from
the start of epoch ``anneal_epoch`` on: epochs 1-7 run at lr, epochs 8, 9, ... at lr * 0.1.
"""

from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from . import peak_lr

NAME = "normpos_step_once"


@dataclass
class StepOnceConfig(FairseqDataclass):
    anneal_epoch: int = field(default=8, metadata={"help": "first epoch (1-based) run at lr * lr_shrink"})
    lr_shrink: float = field(default=0.1, metadata={"help": "factor applied once"})
    lr: List[float] = II("optimization.lr")


def step_once_lr(epoch: int, lr: float, anneal_epoch: int, shrink: float) -> float:
    return lr * shrink if epoch >= anneal_epoch else lr


@register_lr_scheduler(NAME, dataclass=StepOnceConfig)
class StepOnceSchedule(FairseqLRScheduler):
    def __init__(self, cfg: StepOnceConfig, optimizer):
        super().__init__(cfg, optimizer)
        self.lr_max = peak_lr(cfg, NAME)
        if cfg.anneal_epoch < 1:
            raise ValueError(f"--anneal-epoch must be >= 1, got {cfg.anneal_epoch}")
        if not 0 < cfg.lr_shrink <= 1:
            raise ValueError(f"--lr-shrink must be in (0, 1], got {cfg.lr_shrink}")
        self.epoch_lr = self.lr_max
        self.optimizer.set_lr(self.epoch_lr)

    def step_begin_epoch(self, epoch):
        self.epoch_lr = step_once_lr(epoch, self.lr_max, self.cfg.anneal_epoch, self.cfg.lr_shrink)
        self.optimizer.set_lr(self.epoch_lr)
        return self.epoch_lr

    def step_update(self, num_updates):
        return self.optimizer.get_lr()
