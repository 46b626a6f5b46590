"""LayerNorm Scaling: Pre-LN with each layer's LayerNorm output multiplied by 1/sqrt(l).

Sun et al. 2025, "The Curse of Depth in Large Language Models" (arXiv:2502.05795; code lmsdss/LayerNorm-Scaling).
In layer l (1-based) of a stack, every sub-layer F reads a scaled norm:

    x_{l+1} = x_l + F(LN(x_l) / sqrt(l))

which bounds the growth of the Pre-LN residual stream's variance with depth. The scale is a constant, not a
parameter; l is counted within each stack (the paper's models are decoder-only; for an encoder-decoder that
is our choice, and the decoder's cross-attention norm is scaled like the others).

From the authors' code (``peft_pretraining/modeling_llama.py``, the ``LNS`` branch, read at commit 3ac54dd):
the factor is 1 / sqrt(layer_index + 1), applied to the output of both norms of a layer, and the model's
final norm (``self.norm``) is **not** scaled; so here the stacks' final LayerNorms are plain. Differences:

- Their norms are RMSNorm (LLaMA); ours are fairseq's LayerNorm (weight 1, bias 0), the scale applied to the
  whole output, bias included, as their code scales the norm's whole output.
- Their init is LLaMA's normal(0.02) (their README advises against combining it with a depth-scaled init);
  ours is fairseq's (Xavier, ``--ffn-init``). In that code as read, the branch compares the lower-cased
  ``NORM_TYPE`` with ``'LNS'``; we follow the branch's body and the paper's formula, not that test.

Layer 1 is Pre-LN exactly (scale 1); nothing is drawn at random, and the scaled norms keep LayerNorm's
parameters and state_dict keys, so the weights are Pre-LN's with the same seed.
"""

import math

import torch
from torch import nn

from . import NormScheme, Site, place_norms_before, register_scheme


class ScaledLayerNorm(nn.LayerNorm):
    """``LN(x) * scale`` for a constant scale. torch's LayerNorm underneath (what fairseq's ``LayerNorm`` builds
    without apex), so the parameters and state_dict keys are Pre-LN's."""

    def __init__(self, dim: int, scale: float):
        super().__init__(dim)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.6g}"


@register_scheme
class LayerNormScaling(NormScheme):
    name = "ln_scaling"
    summary = "x_{l+1} = x_l + F(LN(x_l) / sqrt(l)), l the 1-based layer in its stack; final LayerNorm unscaled"
    paper = 'Sun et al. 2025, "The Curse of Depth in Large Language Models" (arXiv:2502.05795)'

    def configure(self, args) -> None:
        place_norms_before(args)

    def build_norm(self, dim: int, site: Site, args):
        if site.layer is None:
            return None  # the stack's final LayerNorm: unscaled, as the authors' final norm
        return ScaledLayerNorm(dim, 1 / math.sqrt(site.layer + 1))
