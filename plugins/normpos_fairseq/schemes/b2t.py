"""B2T connection: Post-LN plus one skip from the bottom of each layer to the top, before its last LayerNorm.

Takase, Kiyono, Kobayashi and Suzuki, "B2T Connection: Serving Stability and Performance in Deep
Transformers", Findings of ACL 2023 (arXiv:2206.00330), sec. 3 (Fig. 1 (c)). Post-LN keeps the original
Transformer's quality but its LayerNorms shrink the gradient that reaches the lower layers; the paper adds
the layer's input x to the sum that the layer's last LayerNorm normalizes, so that this gradient has a path
that passes one LayerNorm per layer instead of one per sub-layer. Encoder layer::

    h = LN_1(x + Attn(x))
    y = LN_2(h + FFN(h) + x)

Decoder layer: the x skip spans self-attention, cross-attention and the FFN::

    h_1 = LN_1(x + SelfAttn(x))
    h_2 = LN_2(h_1 + CrossAttn(h_1, enc))
    y   = LN_3(h_2 + FFN(h_2) + x)

No parameter is added: the state_dict has Post-LN's keys. Where it sits in fairseq's layer: the
self-attention's residual join remembers its ``residual`` (the layer's input x); the FFN's join returns
``residual + FFN + x`` in that order (the authors' ``x = residual + x`` then ``x = residual_bottom + x``,
so the floats are theirs), and the layer's own ``final_layer_norm`` normalizes it. A decoder layer called
without encoder output skips cross-attention, as fairseq's does; the skip still spans the whole layer.

Initialization (``--b2t-init``). The authors' code (takase/b2t_connection,
``fairseq/modules/transformer_layer.py``; commit 4d80167, "Modify initialization", May 2023) multiplies every
parameter of a layer whose name contains "weight" and not "layer_norm" -- the q, k, v and output projections
and fc1/fc2, not their biases -- by N^-1/2, N the number of layers of that layer's stack, right after
building it. The paper's text, as far as could be checked here, describes only the connection; whether its
experiments used this scaling is unconfirmed.

- ``fairseq`` (default): the initialization every other Post-LN-family scheme here gets (fairseq's, with
  ``--ffn-init``). Default because it is the paper's method as stated (one added skip, nothing else), and it
  keeps the comparison with Post-LN to that one change: Fig. 3's gradient at init and the frontier then
  measure the connection, not an init scaling.
- ``scaled``: the authors' current code: those weights times N^-1/2. It runs in ``initialize``, i.e. after
  ``--ffn-init`` (the authors scale what their layer built, which is what ours built once ``--ffn-init``
  has run); in the decoder the cross-attention's projections are scaled too (their names contain "weight").

Schedule: the authors' WMT recipe is fairseq's Post-LN one (Adam (0.9, 0.98), inverse square root after
4,000 warm-up updates, lr 1e-3, clip-norm 0.1; dropout 0.3 at 6 layers): ``configs/variant/b2t_warmup.yaml``.
"""

from typing import Optional

import torch
from torch import nn

from . import NormScheme, Residual, Site, place_norms_after, register_scheme

B2T_INITS = ("fairseq", "scaled")


class BottomJoin(Residual):
    """The first sub-layer's join: fairseq's ``residual + x``, and it keeps ``residual`` (the layer's input)
    for the top join of the same layer."""

    def __init__(self):
        super().__init__()
        self.bottom: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        self.bottom = residual
        return residual + x


class TopJoin(nn.Module):
    """The last sub-layer's (FFN's) join: ``residual + x + bottom``, bottom the layer's input kept by the
    layer's :class:`BottomJoin` (linked by the scheme's ``initialize``; a tuple so that it is not registered
    twice as a sub-module)."""

    def __init__(self):
        super().__init__()
        self._bottom_join: Optional[tuple] = None

    def link(self, bottom_join: BottomJoin) -> None:
        self._bottom_join = (bottom_join,)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self._bottom_join is None:
            raise RuntimeError("b2t: the FFN join was not linked to its layer's input; build the model through "
                               "NormPosTransformerModel.build_model (the scheme's initialize links it)")
        bottom_join = self._bottom_join[0]
        bottom, bottom_join.bottom = bottom_join.bottom, None  # used once: no stale tensor stays behind
        if bottom is None:
            raise RuntimeError("b2t: the FFN join ran before the layer's self-attention join")
        return residual + x + bottom


def init_of(args) -> str:
    """The ``--b2t-init`` of a parsed command line (the default when the option was not given)."""
    return getattr(args, "b2t_init", None) or "fairseq"


def rescale_like_authors(layer: nn.Module, depth: int) -> None:
    """Every parameter of ``layer`` named "...weight" outside its LayerNorms times depth^-1/2 (the authors'
    ``rescaling_init``, which selects by name exactly so)."""
    scaling = depth ** -0.5
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "layer_norm" not in name and "weight" in name:
                p.mul_(scaling)


@register_scheme
class B2T(NormScheme):
    name = "b2t"
    summary = "Post-LN plus a skip from each layer's input to its last LN: y = LN(h + FFN(h) + x)"
    paper = ('Takase et al. 2023, "B2T Connection: Serving Stability and Performance in Deep Transformers" '
             '(Findings of ACL 2023, arXiv:2206.00330)')

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--b2t-init", choices=B2T_INITS, default=None,
            help="b2t: fairseq (default) = the initialization Post-LN gets; scaled = the authors' 2023 code, every "
                 "non-LayerNorm weight of a layer times N^-1/2 (N = layers in its stack)",
        )

    def configure(self, args) -> None:
        place_norms_after(args, "--norm-scheme b2t is Post-LN (y = LN(h + FFN(h) + x)); it contradicts "
                                "--encoder/decoder-normalize-before")
        if init_of(args) not in B2T_INITS:
            raise ValueError(f"unknown --b2t-init {init_of(args)!r}; valid: {', '.join(B2T_INITS)}")

    def build_residual(self, site: Site, args) -> nn.Module:
        if site.sublayer == "self_attn":
            return BottomJoin()
        if site.sublayer == "ffn":
            return TopJoin()
        return Residual()

    def initialize(self, model: nn.Module, args, task) -> None:
        scaled = init_of(args) == "scaled"
        for stack in ("encoder", "decoder"):
            for layer in getattr(model, stack).layers:
                layer.residuals["ffn"].link(layer.residuals["self_attn"])
                if scaled:
                    rescale_like_authors(layer, getattr(args, f"{stack}_layers"))
