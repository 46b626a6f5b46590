"""Linear warm-up, then inverse square root decay (Xiong et al. 2020, sec. 3.2, eq. for lr(t)).

The paper: lr(t) = t / T_warmup * lr_max for t <= T_warmup, then "a same inverse square root scheduler".
It does not say where the decay is anchored, and the two readings differ a lot:

- ``decay_anchor: warmup`` (fairseq's ``inverse_sqrt``): lr(t) = lr_max * sqrt(W / t) for t > W. The tail
  depends on W: with W = 1 the rate is already lr_max / 10 at t = 100.
- ``decay_anchor: fixed``: lr(t) = lr_max * min(1, sqrt(A / t)) for t > W, with A = ``decay_anchor_updates``
  (>= W) the same for every W, so W changes only the ramp.

Here t is the 1-based index of the update the rate is used for: fairseq calls ``step_update(n)`` after
update n, setting the rate of update n + 1. So W = 1 means the very first update runs at lr_max ("no
warm-up"), and W = 0, where fairseq's ``inverse_sqrt`` divides by zero, is refused.
"""

from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II

from . import peak_lr

NAME = "normpos_warmup_inverse_sqrt"
DECAY_ANCHORS = ("warmup", "fixed")


@dataclass
class WarmupInverseSqrtConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=4000, metadata={"help": "linear warm-up over the first N updates; 1 = no warm-up"}
    )
    decay_anchor: str = field(
        default="warmup",
        metadata={"help": "warmup: lr*sqrt(W/t) as fairseq; fixed: lr*min(1, sqrt(A/t)), A independent of W"},
    )
    decay_anchor_updates: int = field(
        default=4000, metadata={"help": "A, the update where the decay starts, with --decay-anchor fixed"}
    )
    lr: List[float] = II("optimization.lr")


def warmup_inverse_sqrt_lr(t: int, lr_max: float, warmup: int, anchor: int) -> float:
    """The rate for update t (1-based): linear ramp to lr_max over ``warmup`` updates, then
    lr_max * min(1, sqrt(anchor / t))."""
    if t <= warmup:
        return lr_max * t / warmup
    return lr_max * min(1.0, (anchor / t) ** 0.5)


@register_lr_scheduler(NAME, dataclass=WarmupInverseSqrtConfig)
class WarmupInverseSqrtSchedule(FairseqLRScheduler):
    def __init__(self, cfg: WarmupInverseSqrtConfig, optimizer):
        super().__init__(cfg, optimizer)
        self.lr_max = peak_lr(cfg, NAME)
        if cfg.warmup_updates < 1:
            raise ValueError(
                f"--warmup-updates must be >= 1 (1 = no warm-up), got {cfg.warmup_updates}"
            )
        if cfg.decay_anchor not in DECAY_ANCHORS:
            raise ValueError(f"unknown --decay-anchor {cfg.decay_anchor!r}; valid: {', '.join(DECAY_ANCHORS)}")
        if cfg.decay_anchor == "warmup":
            self.anchor = cfg.warmup_updates
        else:
            if cfg.decay_anchor_updates < cfg.warmup_updates:
                raise ValueError(
                    f"--decay-anchor-updates ({cfg.decay_anchor_updates}) must be >= --warmup-updates "
                    f"({cfg.warmup_updates}), or the rate would jump down when the warm-up ends"
                )
            self.anchor = cfg.decay_anchor_updates
        self.step_update(0)

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        lr = warmup_inverse_sqrt_lr(num_updates + 1, self.lr_max, self.cfg.warmup_updates, self.anchor)
        self.optimizer.set_lr(lr)
        return lr
