"""AdaNorm: LayerNorm-simple times an adaptive, input-dependent factor instead of gain and bias.

Xu, Sun, Zhang, Zhao & Lin 2019, "Understanding and Improving Layer Normalization" (NeurIPS 2019,
arXiv:1911.07013), the AdaNorm section:

    y   = (x - mu) / sigma                      (LayerNorm-simple, ``layernorm_simple.py``)
    z   = phi(y) * y,   phi(y) = C * (1 - k * y)
    k   = 1/10                                  (the paper's choice; lancopku/AdaNorm hard-codes 1/10)
    C   = 2                                     (lancopku/AdaNorm: ``--adanorm_scale`` default 2.0, and the
                                                 value of its IWSLT14 De-En script baseline-adanorm-km.sh)

phi(y) is treated as a constant in the backward pass (the paper detaches its gradient), so
the gradient reaches x only through y, mu and sigma. In the authors' code the factor is
``graNorm = (k * (x_c - mean(x_c)) / (std + eps)).detach()`` with x_c = x - mu already centred, i.e. exactly
k * y: nothing is subtracted from (1 - k y) and the mean of phi is not renormalized.
"""

import torch
from torch import nn

from .layernorm_simple import EPS, standardize

K = 0.1  # the paper's k = 1/10
SCALE = 2.0  # C: lancopku/AdaNorm default and IWSLT14 script


class AdaNorm(nn.Module):
    """z = C * (1 - k * sg(y)) * y with y = LayerNorm-simple(x) and sg = stop-gradient; no parameters."""

    def __init__(self, dim: int, scale: float = SCALE, k: float = K, eps: float = EPS):
        super().__init__()
        self.normalized_shape = (dim,)
        self.scale, self.k, self.eps = scale, k, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = standardize(x, self.eps)
        # detach: phi(y) scales the forward value but is a constant for the backward pass (the paper's AdaNorm)
        return (self.scale * (1.0 - self.k * y.detach()) * y).type_as(x)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, C={self.scale}, k={self.k}, eps={self.eps}"
