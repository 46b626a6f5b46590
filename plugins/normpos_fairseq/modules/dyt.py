"""Dynamic Tanh (DyT): an element-wise tanh with a learned input scale, in place of a LayerNorm.

Zhu, Chen, He, LeCun and Liu 2025, "Transformers without Normalization" (CVPR 2025, arXiv:2503.10622), eq. (1):

    DyT(x) = gamma * tanh(alpha * x) + beta

alpha is one learnable scalar per module (init alpha0), gamma and beta are per-channel vectors (init 1 and 0),
as the authors' ``dynamic_tanh.py`` (jiachenzhu/DyT) builds them. Unlike a LayerNorm it computes no statistic
over the channels: every output element depends on its own input element only.
"""

import torch
from torch import nn

ALPHA0 = 0.5  # the authors' default alpha_init_value (jiachenzhu/DyT, dynamic_tanh.py)


class DynamicTanh(nn.Module):
    """y = weight * tanh(alpha * x) + bias over the last dimension; alpha a scalar, weight 1 and bias 0 at init."""

    def __init__(self, dim: int, alpha0: float = ALPHA0):
        super().__init__()
        self.normalized_shape = (dim,)
        self.alpha0 = alpha0
        self.alpha = nn.Parameter(torch.full((1,), float(alpha0)))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, alpha0={self.alpha0}"
