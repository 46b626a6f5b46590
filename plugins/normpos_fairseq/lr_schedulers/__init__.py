"""Learning-rate schedules of Xiong et al. 2020 that fairseq lacks (the linear-decay one fairseq has:
``polynomial_decay`` with ``--power 1 --warmup-updates 0``).

All schedules here take one peak learning rate (``--lr``) and refuse a non-positive one.
"""

from collections.abc import Collection


def peak_lr(cfg, scheduler: str) -> float:
    """The single ``--lr`` value; a list of several or a value <= 0 is a configuration error."""
    lr = cfg.lr
    if isinstance(lr, Collection) and not isinstance(lr, str):
        if len(lr) != 1:
            raise ValueError(f"--lr-scheduler {scheduler} takes one --lr value, got {list(lr)}")
        lr = lr[0]
    lr = float(lr)
    if not lr > 0:
        raise ValueError(f"--lr must be > 0 (got {lr})")
    return lr
