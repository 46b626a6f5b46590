"""LayerNorm-simple: LayerNorm without its gain and bias.

Xu, Sun, Zhang, Zhao & Lin 2019, "Understanding and Improving Layer Normalization" (NeurIPS 2019,
arXiv:1911.07013), "LayerNorm-simple":

    y = (x - mu) / sigma          over the last (feature) dimension, no learned parameters.

The statistics follow the authors' fairseq code (lancopku/AdaNorm, ``fairseq/modules/layer_norm.py``, mode
``nowb``), which produced the paper's numbers: ``sigma`` is ``torch.std`` (the unbiased estimate, divisor
H - 1) and ``eps = 1e-5`` is added to sigma, not to the variance under the square root. For H = 512 this
differs from the paper's 1/H formula by a factor sqrt(H / (H - 1)) ~ 1.001.
"""

import torch
from torch import nn

EPS = 1e-5  # lancopku/AdaNorm: LayerNormImpl(..., eps=1e-5)


def standardize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(x - mean) / (std + eps) over the last dimension, in float32 (fp16 sums of squares overflow)."""
    xf = x.float()
    mean = xf.mean(dim=-1, keepdim=True)
    std = xf.std(dim=-1, keepdim=True)  # unbiased, as the authors' code
    return (xf - mean) / (std + eps)


class LayerNormSimple(nn.Module):
    """y = (x - mean(x)) / (std(x) + eps); no gain, no bias (so nothing in the state_dict)."""

    def __init__(self, dim: int, eps: float = EPS):
        super().__init__()
        self.normalized_shape = (dim,)  # as nn.LayerNorm, for code that reads the width off a norm
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(x, self.eps).type_as(x)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}"
