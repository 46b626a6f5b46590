"""ScaleNorm: l2-normalize to unit length, then scale by one learned scalar.

Nguyen & Salazar 2019, "Transformers without Tears: Improving the Normalization of Self-Attention"
(IWSLT 2019, arXiv:1910.05895):

    ScaleNorm(x; g) = g * x / ||x||,   g a single scalar per norm site, initialised to sqrt(d)

so that at initialization the output has the length sqrt(d) a unit-variance d-vector would have. As the
authors' code (tnq177/transformers_without_tears, ``layers.ScaleNorm``), the norm is clamped below at
eps = 1e-5.
"""

import math

import torch
from torch import nn

EPS = 1e-5  # tnq177/transformers_without_tears: ScaleNorm(scale, eps=1e-5)


class ScaleNorm(nn.Module):
    """y = g * x / max(||x||, eps) over the last dimension; g (``scale``, shape (1,)) starts at sqrt(d)."""

    def __init__(self, dim: int, eps: float = EPS):
        super().__init__()
        self.normalized_shape = (dim,)
        self.eps = eps
        # shape (1,) rather than a 0-dim tensor: fairseq's fp16 optimizers flatten parameters with view(-1)
        self.scale = nn.Parameter(torch.full((1,), math.sqrt(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf / xf.norm(dim=-1, keepdim=True).clamp(min=self.eps)
        return self.scale * y.type_as(x)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}"
