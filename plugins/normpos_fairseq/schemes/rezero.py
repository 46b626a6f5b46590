"""ReZero: no normalization; each residual branch gated by a trainable scalar that starts at 0.

Bachlechner, Majumder, Mao, Cottrell and McAuley 2020, "ReZero is All You Need: Fast Convergence at Large
Depth" (arXiv:2003.04887), eq. (1) / sec. 3:

    x_{i+1} = x_i + alpha_i * F(x_i),    alpha_i = 0 at initialization,

with no LayerNorm anywhere: every sub-layer norm of fairseq's layers becomes ``Identity`` and there is no
final LayerNorm on either stack. At initialization every layer is the identity map (whatever F, dropout
included): the encoder's output is its input embedding, and so are the decoder's features.

One alpha per layer, shared by the layer's sub-layers: that is the authors' code (majumderb/rezero,
``rezero/transformer/rztx.py``: one ``resweight`` per ``RZTXEncoderLayer`` / ``RZTXDecoderLayer``, used
for self-attention, cross-attention and FFN alike), and the paper's "a single additional learned parameter
per layer". ``--rezero-alpha-per-sublayer`` gives each sub-layer its own alpha instead (an ablation, not
the paper's). The authors scale before dropout in the encoder and after it in the decoder; for a scalar
the two are the same, and fairseq's layer applies dropout before the residual join, where alpha sits here.

The seam builds one residual module per sub-layer (``build_residual``), so the per-layer sharing is made
in ``initialize``: the layer's residual modules are given the same ``nn.Parameter``. It is one tensor, so
the optimizer (which de-duplicates parameters) updates it once; ``state_dict`` lists it under each
sub-layer's name (``...residuals.self_attn.alpha``, ``...residuals.ffn.alpha``; equal values), as fairseq
lists a tied embedding under both of its names, and loading writes the same value into it.

The paper prescribes no weight initialization for F: fairseq's (and ``--ffn-init``) is kept.

Norm positions: with ``Identity`` norms, "post" and "pre" differ only in fairseq's final stack LayerNorm,
which exists only with ``--encoder/decoder-normalize-before``. ReZero has none (the authors build
``nn.TransformerEncoder/Decoder`` with ``norm=None``), so the scheme configures post-norm positions and
refuses the normalize-before flags, as well as the options that would add a LayerNorm somewhere else
(``--layernorm-embedding``, NormFormer's ``--scale-attn`` / ``--scale-fc``).
"""

import torch
from torch import nn

from . import NormScheme, register_scheme

# fairseq options that each add a LayerNorm module (embedding LN; NormFormer's attention and FFN LNs)
LAYERNORM_OPTIONS = ("layernorm_embedding", "scale_attn", "scale_fc")


def refuse_layernorm_options(args, scheme: str) -> None:
    """No LayerNorm at all: refuse fairseq's options that would put one back, and configure post-norm
    positions (with identity norms the only difference is the final stack LayerNorm, which post has not)."""
    for side in ("encoder", "decoder"):
        if getattr(args, f"{side}_normalize_before", False):
            raise ValueError(
                f"--norm-scheme {scheme} has no LayerNorm; --{side}-normalize-before would add a final one"
            )
        setattr(args, f"{side}_normalize_before", False)
    for name in LAYERNORM_OPTIONS:
        if getattr(args, name, False):
            raise ValueError(f"--norm-scheme {scheme} has no LayerNorm; --{name.replace('_', '-')} adds one")


class ReZeroResidual(nn.Module):
    """``residual + alpha * x``: x is the sub-layer's output after dropout, alpha a trainable scalar."""

    def __init__(self, init: float = 0.0):
        super().__init__()
        # shape (1,), as the authors' resweight
        self.alpha = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual + self.alpha * x


def share_alpha_per_layer(model: nn.Module) -> int:
    """Give the residual joins of each layer one shared alpha (the first sub-layer's); return the count
    of layers tied."""
    tied = 0
    for module in model.modules():
        residuals = getattr(module, "residuals", None)
        if not isinstance(residuals, nn.ModuleDict):
            continue
        joins = [r for r in residuals.values() if isinstance(r, ReZeroResidual)]
        for join in joins[1:]:
            join.alpha = joins[0].alpha
        tied += bool(joins)
    return tied


@register_scheme
class ReZero(NormScheme):
    name = "rezero"
    summary = "x_{l+1} = x_l + alpha_l F(x_l), alpha_l = 0 at init, one per layer; no LayerNorm"
    paper = 'Bachlechner et al. 2020, "ReZero is All You Need: Fast Convergence at Large Depth"'

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--rezero-alpha-per-sublayer", action="store_true", default=False,
            help="rezero: one alpha per sub-layer instead of one per layer (the authors' code shares it)",
        )

    def configure(self, args) -> None:
        refuse_layernorm_options(args, self.name)

    def build_norm(self, dim, site, args):
        return nn.Identity()

    def build_residual(self, site, args):
        return ReZeroResidual(0.0)

    def initialize(self, model, args, task) -> None:
        if not getattr(args, "rezero_alpha_per_sublayer", False):
            share_alpha_per_layer(model)
