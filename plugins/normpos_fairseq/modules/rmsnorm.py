"""RMSNorm: re-scaling by the root mean square, without re-centring.

Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (NeurIPS 2019, arXiv:1910.07467):

    y_i = x_i / RMS(x) * g_i,   RMS(x) = sqrt(1/n * sum_i x_i^2)

with a gain vector g initialised to 1 and no bias (the paper drops it: RMSNorm is not re-centring
invariant). As the authors' implementations (bzhangGo/rmsnorm ``rmsnorm_tensorflow.py`` and the Transformer
in bzhangGo/zero ``func.rms_norm``), eps = 1e-8 goes under the square root: x * rsqrt(mean(x^2) + eps).
"""

import torch
from torch import nn

EPS = 1e-8  # bzhangGo/rmsnorm and bzhangGo/zero (dtype.epsilon() = 1e-8)


class RMSNorm(nn.Module):
    """y = g * x / sqrt(mean(x^2) + eps) over the last dimension; g (``weight``) starts at 1."""

    def __init__(self, dim: int, eps: float = EPS):
        super().__init__()
        self.normalized_shape = (dim,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in float32: eps = 1e-8 is below fp16's smallest subnormal, and fp16 sums of squares overflow
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * y.type_as(x)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}"
