"""DyT: Pre-LN with every LayerNorm replaced by Dynamic Tanh, the stacks' final norms included.

Zhu, Chen, He, LeCun and Liu 2025, "Transformers without Normalization" (CVPR 2025, arXiv:2503.10622; code
jiachenzhu/DyT). The paper swaps each normalization layer of a Pre-LN Transformer for (eq. 1)

    DyT(x) = gamma (.) tanh(alpha x) + beta,

alpha one learnable scalar per module (init alpha0), gamma = 1 and beta = 0 per channel at init
(``modules/dyt.py``). So a layer is x_{l+1} = x_l + F(DyT(x_l)) and each stack ends in a DyT where Pre-LN has
its final LayerNorm. ``--dyt-alpha0`` (default 0.5, the authors' ``alpha_init_value``) sets alpha's init.

Where we differ from the authors' code, or could not confirm:

- One alpha0 for every site. The authors' LLaMA runs (``other_tasks/LLaMA``) give the attention, FFN and
  final norms separate initial values (``attn_/ffn_/dec_alpha_init_value``), which the paper tunes with width
  (smaller alpha0 for wider models); their LLaMA DyT also has no beta (it replaces RMSNorm, which has no bias).
  Here DyT replaces LayerNorm, which has a bias, so beta is kept, as in their ViT/ConvNeXt code.
- The paper's LLaMA runs also add a learnable scalar after the embedding layer; not done here (our models
  scale the embedding by sqrt(d), fairseq's default). The paper has no machine-translation experiment: the
  default alpha0 for this task is unconfirmed.
- fairseq's options that add a LayerNorm elsewhere (``--layernorm-embedding``, ``--scale-attn``,
  ``--scale-fc``) are refused: a DyT model has no LayerNorm.

No random draws happen here (alpha, gamma, beta are constants at init), so a DyT model's other weights are
Pre-LN's with the same seed. DyT is per element, so incremental decoding gives what the full forward gives.
"""

from ..modules.dyt import ALPHA0, DynamicTanh
from . import NormScheme, place_norms_before, register_scheme
from .rezero import LAYERNORM_OPTIONS


def alpha0(args) -> float:
    """--dyt-alpha0 as given, or the default where it was not (fairseq leaves absent options unset)."""
    value = getattr(args, "dyt_alpha0", None)
    return ALPHA0 if value is None else float(value)


@register_scheme
class DyT(NormScheme):
    name = "dyt"
    summary = "x_{l+1} = x_l + F(DyT(x_l)), DyT(x) = gamma tanh(alpha x) + beta at every norm site; final DyT"
    paper = 'Zhu et al. 2025, "Transformers without Normalization" (CVPR 2025, arXiv:2503.10622)'

    def add_args(self, parser) -> None:
        parser.add_argument("--dyt-alpha0", type=float, metavar="A", default=None,
                            help=f"dyt: initial value of each DyT's scalar alpha, > 0 (default {ALPHA0}, "
                                 "jiachenzhu/DyT)")

    def configure(self, args) -> None:
        if not alpha0(args) > 0:
            raise ValueError(f"--dyt-alpha0 must be > 0, got {alpha0(args)}")
        for name in LAYERNORM_OPTIONS:
            if getattr(args, name, False):
                raise ValueError(f"--norm-scheme dyt has no LayerNorm; --{name.replace('_', '-')} adds one")
        place_norms_before(args)

    def build_norm(self, dim, site, args):
        return DynamicTanh(dim, alpha0(args))  # every site, the stacks' final norms included
