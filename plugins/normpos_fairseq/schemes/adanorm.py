"""LayerNorm-simple and AdaNorm in place of every LayerNorm, in the Pre-LN position (schemes ``ln_simple``,
``adanorm``).

Xu, Sun, Zhang, Zhao & Lin 2019, "Understanding and Improving Layer Normalization" (NeurIPS 2019,
arXiv:1911.07013). The layers (``modules/layernorm_simple.py``, ``modules/adanorm.py``):

- ln_simple: y = (x - mu) / sigma, LayerNorm without gain and bias;
- adanorm:   z = C (1 - k y) * y with y as above, k = 1/10, C = 2, and (1 - k y) detached in the backward.

Position: Pre-LN, x_{l+1} = x_l + F(Norm(x_l)), plus the stack's final norm, which is the same kind of norm.
The paper's machine-translation runs are fairseq Transformers in the PreNorm setting: the authors' scripts
(lancopku/AdaNorm, ``machine translation/baseline-adanorm-km.sh`` and ``baseline-prenorm-km.sh``, the latter
also running LayerNorm-simple as ``--lnv nowb``) pass ``--encoder-normalize-before --decoder-normalize-before``,
and their fairseq builds the final ``layer_norm`` of each stack from the same ``--lnv`` switch.
Their schedule: Adam (0.9, 0.98), ``inverse_sqrt`` with 8000 warm-up updates from 1e-7 to lr 1.5e-3
(``configs/variant/ln_simple_warmup.yaml``, ``adanorm_warmup.yaml``).

Deviation from the authors' released code, and the option that removes it. The paper describes the new norm
in place of LayerNorm, and by default (``--adanorm-sites every``, ``--ln-simple-sites every``) every norm site
gets it: each sub-layer's norm and the two final norms. In the released code only the two final norms change:
their ``fairseq/models/transformer.py`` builds ``LayerNorm(embed_dim, args=args)`` (the ``--lnv`` switch) for the
encoder's and decoder's final ``layer_norm`` alone, while ``fairseq/modules/transformer_layer.py`` builds every
sub-layer's ``self_attn_layer_norm``, ``encoder_attn_layer_norm`` and ``final_layer_norm`` as
``LayerNorm(self.embed_dim)``, an ordinary LayerNorm with gain and bias. ``--adanorm-sites final`` /
``--ln-simple-sites final`` (in a config: ``model.scheme_args=[--adanorm-sites,final]``) reproduce that code: the
scheme's norm at the two final norms, fairseq's LayerNorm everywhere else.
"""

from ..modules.adanorm import K, SCALE, AdaNorm
from ..modules.layernorm_simple import LayerNormSimple
from . import NormScheme, place_norms_before, register_scheme

PAPER = 'Xu et al. 2019, "Understanding and Improving Layer Normalization" (arXiv:1911.07013)'
# where the scheme's norm goes: every norm site (the paper's description), or only the stacks' final norms
# (lancopku/AdaNorm's released code; the sub-layers keep fairseq's LayerNorm)
SITES = ("every", "final")


def _add_sites_arg(parser, flag: str, what: str) -> None:
    parser.add_argument(flag, choices=SITES, default=None,
                        help=f"where {what} replaces LayerNorm: every norm site (default, as the paper describes "
                             "it) or only the two final norms (as the authors' released fairseq code does)")


def _final_only(args, name: str) -> bool:
    return _option(args, name, "every") == "final"


@register_scheme
class LayerNormSimpleScheme(NormScheme):
    name = "ln_simple"
    summary = "Pre-LN with LayerNorm-simple: (x - mu) / sigma, no gain or bias, at every norm site"
    paper = PAPER

    def add_args(self, parser) -> None:
        _add_sites_arg(parser, "--ln-simple-sites", "LayerNorm-simple")

    def configure(self, args) -> None:
        place_norms_before(args)

    def build_norm(self, dim, site, args):
        if _final_only(args, "ln_simple_sites") and site.sublayer != "final":
            return None  # fairseq's LayerNorm, as the authors' transformer_layer.py builds it
        return LayerNormSimple(dim)


@register_scheme
class AdaNormScheme(NormScheme):
    name = "adanorm"
    summary = "Pre-LN with AdaNorm: C (1 - k y) y, y = LN-simple(x), (1 - k y) detached; every norm site"
    paper = PAPER

    def add_args(self, parser) -> None:
        parser.add_argument("--adanorm-scale", type=float, metavar="C", default=SCALE,
                            help=f"AdaNorm's C (default {SCALE}, lancopku/AdaNorm's --adanorm_scale)")
        parser.add_argument("--adanorm-k", type=float, metavar="K", default=K,
                            help=f"AdaNorm's k (default {K}, the paper's 1/10)")
        _add_sites_arg(parser, "--adanorm-sites", "AdaNorm")

    def configure(self, args) -> None:
        place_norms_before(args)
        k = _option(args, "adanorm_k", K)
        if not k > 0:
            raise ValueError(f"--adanorm-k must be > 0, got {k}")

    def build_norm(self, dim, site, args):
        if _final_only(args, "adanorm_sites") and site.sublayer != "final":
            return None  # fairseq's LayerNorm, as the authors' transformer_layer.py builds it
        return AdaNorm(dim, scale=_option(args, "adanorm_scale", SCALE), k=_option(args, "adanorm_k", K))


def _option(args, name, default):
    # fairseq suppresses unset model options (argparse.SUPPRESS): absent or None means "not given"
    value = getattr(args, name, None)
    return default if value is None else value
