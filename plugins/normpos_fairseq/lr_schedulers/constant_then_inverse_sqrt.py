"""Constant rate until epoch ``decay_epoch``, then inverse square root decay (Xiong et al. 2020, sec. 4,
WMT14 Pre-LN: the rate is "decayed at the 6-th epoch followed by the inverse square root learning rate
scheduler").

The paper does not give the form after epoch 6. Our reading (switchable by ``lr_shrink``): let u be the
number of updates done when epoch ``decay_epoch`` starts. From then on, for update t (1-based),

    lr(t) = lr_max * lr_shrink * sqrt(u / (t - 1)),   t > u

i.e. inverse square root decay anchored where the decay starts, continuous with the constant phase when
``lr_shrink`` = 1 (default), a step down by ``lr_shrink`` first otherwise. u is saved in the checkpoint so
a resumed run keeps the same schedule.
"""

from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from . import peak_lr

NAME = "normpos_constant_then_inverse_sqrt"


@dataclass
class ConstantThenInverseSqrtConfig(FairseqDataclass):
    decay_epoch: int = field(default=6, metadata={"help": "first epoch (1-based) of the decay"})
    lr_shrink: float = field(default=1.0, metadata={"help": "step factor when the decay starts (1 = none)"})
    lr: List[float] = II("optimization.lr")


def constant_then_inverse_sqrt_lr(
    num_updates: int, lr: float, decay_start: Optional[int], shrink: float
) -> float:
    """The rate for the update after ``num_updates`` done; ``decay_start`` is u, or None before the decay."""
    if decay_start is None:
        return lr
    return lr * shrink * (max(decay_start, 1) / max(num_updates, decay_start, 1)) ** 0.5


@register_lr_scheduler(NAME, dataclass=ConstantThenInverseSqrtConfig)
class ConstantThenInverseSqrtSchedule(FairseqLRScheduler):
    def __init__(self, cfg: ConstantThenInverseSqrtConfig, optimizer):
        super().__init__(cfg, optimizer)
        self.lr_max = peak_lr(cfg, NAME)
        if cfg.decay_epoch < 1:
            raise ValueError(f"--decay-epoch must be >= 1, got {cfg.decay_epoch}")
        if not 0 < cfg.lr_shrink <= 1:
            raise ValueError(f"--lr-shrink must be in (0, 1], got {cfg.lr_shrink}")
        self.decay_start: Optional[int] = None
        self.num_updates = 0
        self.optimizer.set_lr(self.lr_max)

    def state_dict(self):
        return {**super().state_dict(), "decay_start": self.decay_start}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.decay_start = state_dict.get("decay_start")

    def step_begin_epoch(self, epoch):
        if epoch >= self.cfg.decay_epoch and self.decay_start is None:
            self.decay_start = self.num_updates
        return self.step_update(self.num_updates)

    def step_update(self, num_updates):
        self.num_updates = num_updates
        lr = constant_then_inverse_sqrt_lr(num_updates, self.lr_max, self.decay_start, self.cfg.lr_shrink)
        self.optimizer.set_lr(lr)
        return lr
