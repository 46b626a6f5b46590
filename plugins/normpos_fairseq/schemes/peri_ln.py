"""Peri-LN: a LayerNorm on each side of every sub-layer, inside the residual branch, plus the final LayerNorm.

Kim et al. 2025, "Peri-LN: Revisiting Normalization Layer in the Transformer Architecture" (ICML 2025,
arXiv:2502.02732). For each sub-layer F (self-attention, the decoder's cross-attention, FFN):

    x_{l+1} = x_l + LN_out(F(LN_in(x_l)))

and each stack's output goes through one more LayerNorm, as in Pre-LN. LN_in is fairseq's Pre-LN norm of the
sub-layer (``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``); LN_out is a LayerNorm
of its own, with learnable gain and bias (gain 1, bias 0 at init), held by the sub-layer's residual join
(``layer.residuals[sub].norm``), which computes ``residual + LN_out(x)``. The block is CogView's Sandwich-LN
(Ding et al. 2021, arXiv:2105.13290).

Decisions and what is not confirmed (no code by the Peri-LN authors is known to us; the formula is from the
issue and the paper's abstract, unconfirmed against its full text):

- Dropout comes before LN_out: fairseq applies it to the sub-layer's output before the residual join, where
  LN_out sits. CogView's code (THUDM/CogView, ``mpu/sparse_transformer.py``) does the same: the attention's and
  MLP's output dropout is inside those modules, and its extra LayerNorm follows them.
- CogView's LayerNorm also divides its input by max|x| / 8 ("PB-relax", for fp16); not done here.
- Whether the paper also normalizes the embedding output is unconfirmed; fairseq's ``--layernorm-embedding``
  adds that LayerNorm if wanted.

The extra LayerNorms draw no random numbers, so the other weights are Pre-LN's with the same seed; they act per
token, so incremental decoding gives what the full forward gives.
"""

import torch
from fairseq.modules import LayerNorm
from torch import nn

from . import NormScheme, Residual, Site, place_norms_before, register_scheme


class NormedBranchResidual(Residual):
    """``residual + LN_out(x)``: x is the sub-layer's output after dropout, LN_out a LayerNorm of its own."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual + self.norm(x)


@register_scheme
class PeriLN(NormScheme):
    name = "peri_ln"
    summary = "x_{l+1} = x_l + LN_out(F(LN_in(x_l))) for every sub-layer; final LayerNorm on each stack"
    paper = 'Kim et al. 2025, "Peri-LN: Revisiting Normalization Layer in the Transformer Architecture" (ICML 2025)'

    def configure(self, args) -> None:
        place_norms_before(args)  # LN_in is Pre-LN's norm, and Pre-LN's final norm is kept

    def build_residual(self, site: Site, args) -> nn.Module:
        return NormedBranchResidual(getattr(args, f"{site.stack}_embed_dim"))
