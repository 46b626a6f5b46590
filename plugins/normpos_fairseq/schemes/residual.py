"""ResiDual: a Post-LN stream and a Pre-LN-like dual stream side by side, summed at the top of each stack.

Xie, Zhang, Ge, Zhou, Zhang, Li and Liu 2023, "ResiDual: Transformer with Dual Residual Connections",
arXiv:2304.14802, sec. 3 (eq. 4-6). Post-LN's output is well normalized but its gradient to the lower layers
vanishes; Pre-LN's gradient flows but its deeper layers add less and less to a growing stream. ResiDual runs
both. With k counting sub-layers (self-attention, cross-attention, FFN) over the whole stack, K of them::

    x_{k+1} = LN_k(x_k + f_k(x_k))          the Post-LN stream, which every sub-layer reads
    d_{k+1} = d_k + s * f_k(x_k)            the dual stream: a plain sum of every sub-layer's output
    d_0     = s * x_0                       x_0 the embedding after dropout (and fairseq's zeroed padding)
    y       = alpha * x_K + LN_final(d_K)   the stack's output

f_k(x_k) is the sub-layer's output after dropout (the same tensor both streams receive). alpha = 1 and s = 1
are the authors' IWSLT14 and WMT configs (``--residual-alpha``, ``--residual-scale``); they lower s for an
18-layer fp16 setting. Both are fixed numbers, not learned.

As the authors' code (microsoft/ResiDual, ``resi_dual/resi_dual_layers.py`` and ``resi_dual.py``):

- the per-sub-layer LayerNorms are fairseq's (eps 1e-5); LN_final is a LayerNorm with **eps 1e-7**, one per
  stack, in the place of Pre-LN's final LayerNorm (so its state_dict keys are ``encoder.layer_norm.*`` and
  ``decoder.layer_norm.*``);
- their config has ``enc_alpha``/``dec_alpha`` and ``enc_res_input_norm_scale``/``dec_res_input_norm_scale``
  per stack; here one alpha and one s serve both stacks (their IWSLT/WMT values are equal in both).

How it fits the scheme seam, with no change to the layers: the layers are fairseq's Post-LN layers (each
join ``residual + x`` followed by the sub-layer's LayerNorm). Each join is a :class:`DualStreamJoin` that
also adds ``s * x`` to the stack's dual stream d (a :class:`DualStream` that the scheme's ``initialize`` gives
to every join of the stack and to its top); the stack's first join starts d as ``s * residual`` (its residual
is x_0). The stack's final-norm site holds :class:`ResiDualOutput`, which returns ``alpha * x_K +
LN_final(d_K)``: the scheme configures normalize-before so that fairseq builds that site, then turns every
layer back to post-norm (``layer.normalize_before = False``). d is per position, like every Post-LN
operation: incremental decoding, which runs the layers on the newest position only, gives d's newest
position, and so the full forward pass's output.

Schedule: the authors' IWSLT14 config (``hydra_config/iwslt.yaml``) uses inverse square root after 4,000
warm-up updates from 1e-7, lr 5e-4: ``configs/variant/residual_warmup.yaml``.
"""

from typing import Optional

import torch
from fairseq.modules import LayerNorm
from torch import nn

from . import NormScheme, Residual, Site, place_norms_before, register_scheme

FINAL_NORM_EPS = 1e-7  # the authors' LN_final (resi_dual.py); the sub-layer LayerNorms keep fairseq's 1e-5


class DualStream:
    """The dual stream d of one stack during one forward pass: written by the joins, read by the top. A plain
    object, not a module (it holds no parameter); ``copy.deepcopy`` of the model (fairseq's EMA) copies it
    once per stack, as it is shared."""

    def __init__(self):
        self.d: Optional[torch.Tensor] = None


class DualStreamJoin(Residual):
    """fairseq's ``residual + x`` for the Post-LN stream, and d <- d + s * x for the dual stream (the stack's
    first join first sets d = s * residual: d_0 = s * x_0)."""

    def __init__(self, scale: float, first: bool):
        super().__init__()
        self.scale, self.first = float(scale), first
        self.stream: Optional[DualStream] = None  # set by the scheme's initialize

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            raise RuntimeError("residual: a join has no dual stream; build the model through "
                               "NormPosTransformerModel.build_model (the scheme's initialize links it)")
        if self.first:
            self.stream.d = residual * self.scale
        self.stream.d = self.stream.d + x * self.scale  # the authors' order: res = res + x * scale
        return residual + x

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, first={self.first}"


class ResiDualOutput(nn.Module):
    """The top of a stack: ``alpha * x_K + LN_final(d_K)``, LN_final with eps 1e-7."""

    def __init__(self, dim: int, alpha: float):
        super().__init__()
        self.alpha = float(alpha)
        self.norm = LayerNorm(dim, eps=FINAL_NORM_EPS)
        self.stream: Optional[DualStream] = None  # set by the scheme's initialize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stream is None or self.stream.d is None:
            raise RuntimeError("residual: the stack's output has no dual stream (no layer ran, or the model was "
                               "not built through NormPosTransformerModel.build_model)")
        d, self.stream.d = self.stream.d, None  # used once: no tensor stays behind between forward passes
        return x * self.alpha + self.norm(d)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


def settings(args):
    """(alpha, s) of a parsed command line; 1 where the option was not given."""
    alpha = getattr(args, "residual_alpha", None)
    scale = getattr(args, "residual_scale", None)
    return (1.0 if alpha is None else float(alpha)), (1.0 if scale is None else float(scale))


@register_scheme
class ResiDual(NormScheme):
    name = "residual"
    summary = "Post-LN stream x plus a dual stream d = s x_0 + s sum f_k; output alpha x_K + LN(d_K)"
    paper = 'Xie et al. 2023, "ResiDual: Transformer with Dual Residual Connections" (arXiv:2304.14802)'

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--residual-alpha", type=float, default=None,
            help="residual: weight alpha of the Post-LN stream in each stack's output alpha x_K + LN(d_K) "
                 "(default 1, the authors' IWSLT/WMT value; fixed, not learned)",
        )
        parser.add_argument(
            "--residual-scale", type=float, default=None,
            help="residual: scale s of what enters the dual stream, d_0 = s x_0, d += s f_k(x_k) "
                 "(default 1, the authors' IWSLT/WMT value; fixed, not learned)",
        )

    def configure(self, args) -> None:
        alpha, scale = settings(args)
        if not alpha >= 0:
            raise ValueError(f"--residual-alpha must be >= 0, got {alpha:g}")
        if not scale > 0:
            raise ValueError(f"--residual-scale must be > 0, got {scale:g}")
        # normalize-before makes fairseq build each stack's final-norm site (ResiDualOutput goes there);
        # initialize turns the layers back to post-norm. Not refused when given: a checkpoint's saved args
        # carry the value set here, and loading it runs configure again.
        place_norms_before(args)

    def build_norm(self, dim: int, site: Site, args) -> Optional[nn.Module]:
        if site.sublayer == "final":
            return ResiDualOutput(dim, settings(args)[0])
        return None  # fairseq's LayerNorm after each join

    def build_residual(self, site: Site, args) -> nn.Module:
        return DualStreamJoin(settings(args)[1], first=site.layer == 0 and site.sublayer == "self_attn")

    def initialize(self, model: nn.Module, args, task) -> None:
        for stack in (model.encoder, model.decoder):
            stream = DualStream()
            stack.layer_norm.stream = stream
            for layer in stack.layers:
                layer.normalize_before = False  # Post-LN layers (configure asked for the final site only)
                for join in layer.residuals.values():
                    join.stream = stream
