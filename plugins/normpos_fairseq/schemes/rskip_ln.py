"""rSkip+LN: the skip connection with LayerNorm applied recursively, K times.

Liu, Ren, Zhang, Sun and Zou 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and
ResNets", COLING 2020 (arXiv:2105.07205). After showing that a skip connection x + F(x) works best with a
LayerNorm after it and that the scale of x matters (xSkip+LN, ``xskip_ln.py``), the paper proposes to let
the scale adapt by "recursively applying skip connection with layer normalization". For a sub-layer F
(self-attention, cross-attention, FFN) with input x:

    y_1 = LN(x + F(x))                 (Post-LN)
    y_k = LN(x + y_{k-1}),  k = 2..K   (the input is added again to the normalized sum)
    output y_K

Since y_1 = (x + F(x) - mu) / sigma (times the gain), y_2 = LN((1 + 1/sigma) x + F(x)/sigma + ...): each
recursion re-weights the input by a factor that the statistics of the previous sum decide, instead of
xSkip's fixed lambda. K = 1 is Post-LN exactly (tested weight for weight).

Where it sits in fairseq's layer: the layer computes ``norm(residual_connection(F(x), x))``; the join here
returns ``x + y_{K-1}`` (the K - 1 inner recursions), and the layer's own LayerNorm (``self_attn_layer_norm``
and so on, which fairseq applies after the join) is the outer LN that makes y_K. So the state_dict of an
rSkip+LN model has exactly Post-LN's keys when the inner recursions share that LayerNorm.

Defaults and what is not confirmed here (the paper's text and any code by the authors could not be
checked when this was written):

- ``--rskip-depth K`` (default 2: one recursion beyond Post-LN). The K the paper recommends for Transformers
  is not confirmed; set it from the paper when it is.
- ``--rskip-norms shared`` (default): every recursion uses the same LayerNorm module (the layer's own),
  i.e. the literal recursion of one function y -> LN(x + y), with no parameter added. ``separate``: each
  inner recursion has its own LayerNorm (gain 1, bias 0 at init; K - 1 more per sub-layer). Which of the
  two the paper ran is not stated in what we could check.
- Schedule: taken to be fairseq's Post-LN recipe (warm-up 4,000 then inverse square root), not confirmed:
  ``configs/variant/rskip_ln_warmup.yaml``.
"""

from typing import Optional

import torch
from fairseq.modules import LayerNorm
from torch import nn

from . import NORM_ATTRS, NormScheme, Site, place_norms_after, register_scheme

DEFAULT_DEPTH = 2  # not confirmed against the paper (see the module docstring)
NORM_SHARING = ("shared", "separate")


class RecursiveSkipResidual(nn.Module):
    """``x + y_{K-1}`` with y_1 = x + F(x) normalized, y_k = LN(x + y_{k-1}): the K - 1 inner recursions.

    ``shared``: the inner LayerNorm is the layer's own (set by :meth:`share_norm` after the layer is built;
    kept out of this module's parameters so that it is saved once, under the layer's name). ``separate``:
    ``self.norms`` holds one LayerNorm per inner recursion.
    """

    def __init__(self, depth: int, dim: int, sharing: str):
        super().__init__()
        self.depth, self.sharing = depth, sharing
        inner = depth - 1
        self.norms = nn.ModuleList([LayerNorm(dim) for _ in range(inner)]) if sharing == "separate" else None
        # a tuple, so that nn.Module does not register the layer's norm a second time
        self._shared: Optional[tuple] = None

    def share_norm(self, norm: nn.Module) -> None:
        self._shared = (norm,)

    def _norm(self, k: int) -> nn.Module:
        if self.norms is not None:
            return self.norms[k]
        if self._shared is None:
            raise RuntimeError("rskip_ln: the shared LayerNorm was not set; build the model through "
                               "NormPosTransformerModel.build_model (the scheme's initialize sets it)")
        return self._shared[0]

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        y = residual + x  # LN of this is y_1 (the layer's norm applies the last LN)
        for k in range(self.depth - 1):
            y = residual + self._norm(k)(y)
        return y

    def extra_repr(self) -> str:
        return f"depth={self.depth}, norms={self.sharing}"


@register_scheme
class RSkipLN(NormScheme):
    name = "rskip_ln"
    summary = "y_1 = LN(x + F(x)), y_k = LN(x + y_{k-1}), output y_K (default K = 2); K = 1 is Post-LN"
    paper = ('Liu et al. 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and '
             'ResNets" (COLING 2020, arXiv:2105.07205)')

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--rskip-depth", type=int, default=None,
            help=f"rskip_ln: how many times the skip connection with LayerNorm is applied, K >= 1 "
                 f"(default {DEFAULT_DEPTH}; 1 = Post-LN)",
        )
        parser.add_argument(
            "--rskip-norms", choices=NORM_SHARING, default=None,
            help="rskip_ln: shared (default) = every recursion uses the sub-layer's one LayerNorm; "
                 "separate = a LayerNorm of its own for each inner recursion",
        )

    def configure(self, args) -> None:
        place_norms_after(args, "--norm-scheme rskip_ln is Post-LN (y = LN(x + LN(x + F(x)))); it contradicts "
                                "--encoder/decoder-normalize-before")
        depth, sharing = settings(args)
        if depth < 1:
            raise ValueError(f"--rskip-depth must be >= 1 (1 = Post-LN), got {depth}")
        if sharing not in NORM_SHARING:
            raise ValueError(f"unknown --rskip-norms {sharing!r}; valid: {', '.join(NORM_SHARING)}")

    def build_residual(self, site: Site, args) -> nn.Module:
        depth, sharing = settings(args)
        dim = args.encoder_embed_dim if site.stack == "encoder" else args.decoder_embed_dim
        return RecursiveSkipResidual(depth, dim, sharing)

    def initialize(self, model: nn.Module, args, task) -> None:
        # the inner recursions of each sub-layer use the LayerNorm the layer applies after the join
        for stack in ("encoder", "decoder"):
            for layer in getattr(model, stack).layers:
                for sub, join in layer.residuals.items():
                    norm = getattr(layer, NORM_ATTRS[sub], None)
                    if norm is not None:
                        join.share_norm(norm)


def settings(args):
    """(K, norm sharing) of a parsed command line; the defaults where the option was not given."""
    depth = getattr(args, "rskip_depth", None)
    sharing = getattr(args, "rskip_norms", None)
    return (DEFAULT_DEPTH if depth is None else int(depth)), (sharing or "shared")
