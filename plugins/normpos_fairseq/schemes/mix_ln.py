"""Mix-LN: the first layers of each stack Post-LN, the rest Pre-LN, and the final LayerNorm kept.

Li, Yin and Liu 2025, "Mix-LN: Unleashing the Power of Deeper Layers by Combining Pre-LN and Post-LN"
(arXiv:2412.13795; code pixeli99/MixLN). With L layers in a stack and k = floor(alpha L) (alpha =
``--mix-ln-fraction``, default 0.25, the paper's choice):

    layers l < k:   x_{l+1} = LN(x_l + F(x_l))     (Post-LN, for each sub-layer)
    layers l >= k:  x_{l+1} = x_l + F(LN(x_l))     (Pre-LN, for each sub-layer)
    output          LN_final(x_L)

k is counted in each stack separately (the paper's models are decoder-only; for an encoder-decoder that is our
choice). The authors' code takes k itself (``POST_NUM``, e.g. 3 of 12 layers in their 71M run: 0.25 x 12) and
builds the final norm whatever k is (``self.norm`` of their LlamaModel); their norms are RMSNorm, ours are
fairseq's LayerNorm. k = floor(alpha L) is computed with a 1e-9 tolerance, so that a decimal alpha such as 0.29
gives 29 of 100 layers rather than 28.

When floor(alpha L) = 0 (e.g. alpha 0.25 with fewer than 4 layers, or alpha 0) every layer is Pre-LN and the
model is Pre-LN exactly, weight for weight (tested). alpha = 1 makes every layer Post-LN, with the final
LayerNorm still on top.

How it is built: fairseq's layers choose the position of their norms by reading ``self.normalize_before`` at
every forward. The scheme configures Pre-LN (so each stack gets its final LayerNorm) and, in ``initialize``,
sets ``normalize_before = False`` on the first k layers of each stack. The seam is unchanged; nothing is
drawn at random here, so the weights are Pre-LN's with the same seed, and each layer's norms are the same
modules in either position (the state_dict keys are Pre-LN's).
"""

import math

from torch import nn

from . import NormScheme, place_norms_before, register_scheme

FRACTION = 0.25  # Mix-LN's alpha (Li et al. 2025; the authors' 71M run: POST_NUM=3 of 12 layers)


def fraction(args) -> float:
    """--mix-ln-fraction as given, or the default where it was not."""
    value = getattr(args, "mix_ln_fraction", None)
    return FRACTION if value is None else float(value)


def post_ln_layers(alpha: float, layers: int) -> int:
    """k = floor(alpha L): how many of a stack's first layers are Post-LN."""
    return math.floor(alpha * layers + 1e-9)


@register_scheme
class MixLN(NormScheme):
    name = "mix_ln"
    summary = "first floor(alpha L) layers of each stack Post-LN, the rest Pre-LN (alpha 0.25); final LayerNorm"
    paper = 'Li, Yin & Liu 2025, "Mix-LN: Unleashing the Power of Deeper Layers by Combining Pre-LN and Post-LN"'

    def add_args(self, parser) -> None:
        parser.add_argument("--mix-ln-fraction", type=float, metavar="ALPHA", default=None,
                            help=f"mix_ln: the first floor(ALPHA x layers) layers of each stack are Post-LN, "
                                 f"0 <= ALPHA <= 1 (default {FRACTION}; 0 = Pre-LN)")

    def configure(self, args) -> None:
        if not 0 <= fraction(args) <= 1:
            raise ValueError(f"--mix-ln-fraction must be between 0 and 1, got {fraction(args)}")
        place_norms_before(args)  # the Pre-LN layers and the final LayerNorm; initialize turns the first k

    def initialize(self, model: nn.Module, args, task) -> None:
        for stack in (model.encoder, model.decoder):
            for layer in list(stack.layers)[: post_ln_layers(fraction(args), len(stack.layers))]:
                layer.normalize_before = False  # fairseq's layer then norms after each residual join
