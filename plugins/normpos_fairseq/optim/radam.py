"""RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") as a fairseq
optimizer, wrapping ``torch.optim.RAdam``. Xiong et al. 2020, sec. 4 train Post-LN and Pre-LN with RAdam
and no warm-up.
"""

import ast
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

from ..lr_schedulers import peak_lr

NAME = "normpos_radam"


@dataclass
class RAdamConfig(FairseqDataclass):
    radam_betas: str = field(default="(0.9, 0.999)", metadata={"help": "betas, as a Python tuple"})
    radam_eps: float = field(default=1e-8, metadata={"help": "epsilon"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (decoupled, as fairseq's adam)"})
    lr: List[float] = II("optimization.lr")


@register_optimizer(NAME, dataclass=RAdamConfig)
class FairseqRAdam(FairseqOptimizer):
    def __init__(self, cfg: RAdamConfig, params):
        super().__init__(cfg)
        self._optimizer = torch.optim.RAdam(params, **self.optimizer_config)

    @property
    def optimizer_config(self):
        betas = self.cfg.radam_betas
        if isinstance(betas, str):
            betas = ast.literal_eval(betas)
        return {
            "lr": peak_lr(self.cfg, NAME),
            "betas": tuple(betas),
            "eps": self.cfg.radam_eps,
            "weight_decay": self.cfg.weight_decay,
            "decoupled_weight_decay": True,
        }

    @property
    def supports_flat_params(self):
        return True
