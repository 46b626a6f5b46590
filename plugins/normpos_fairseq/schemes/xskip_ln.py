"""xSkip+LN: Post-LN whose skip connection is expanded by a constant lambda.

Liu, Ren, Zhang, Sun and Zou 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and
ResNets", COLING 2020 (arXiv:2105.07205). The paper reads the skip connection y = x + F(x) as a modulation
of the input by a fixed scale 1 and studies the expanded skip connection y = lambda x + F(x) ("xSkip"): a
scale other than 1 makes gradients explode (lambda > 1) or vanish (lambda < 1) with depth, and a LayerNorm
after the join removes that, which it calls xSkip+LN. Every sub-layer F (self-attention, cross-attention,
FFN) is joined as

    x <- LN(lambda * x + F(x))

i.e. Post-LN with the residual stream multiplied by lambda before the LayerNorm; lambda = 1 is Post-LN
exactly (tested weight for weight). Unlike DeepNorm (``deepnorm.py``), which has the same join, lambda is
one constant for both stacks and every depth, and the initialization is fairseq's (no beta scaling): the
join module is DeepNorm's ``DeepNormResidual`` with alpha = lambda.

Defaults and what is not confirmed here. The value of lambda the paper recommends for Transformers could
not be checked against the paper's text or its tables when this was written (no code release by the
authors is known to us); ``--xskip-lambda`` defaults to 2 (an expanded skip, lambda > 1) and must be set
from the paper when its number is confirmed. The paper builds on fairseq's Transformer for IWSLT14 De-En
and WMT14 En-De; its schedule is taken to be fairseq's Post-LN recipe (warm-up 4,000 then inverse square
root), also not confirmed: ``configs/variant/xskip_ln_warmup.yaml``.
"""

from torch import nn

from . import NormScheme, Site, place_norms_after, register_scheme
from .deepnorm import DeepNormResidual

DEFAULT_LAMBDA = 2.0  # not confirmed against the paper (see the module docstring)


@register_scheme
class XSkipLN(NormScheme):
    name = "xskip_ln"
    summary = "x_{l+1} = LN(lambda x_l + F(x_l)), one constant lambda (default 2); lambda = 1 is Post-LN"
    paper = ('Liu et al. 2020, "Rethinking Skip Connection with Layer Normalization in Transformers and '
             'ResNets" (COLING 2020, arXiv:2105.07205)')

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--xskip-lambda", type=float, default=None,
            help=f"xskip_ln: the scale lambda of the skip connection, LN(lambda x + F(x)) "
                 f"(default {DEFAULT_LAMBDA:g}; 1 = Post-LN)",
        )

    def configure(self, args) -> None:
        place_norms_after(args, "--norm-scheme xskip_ln is Post-LN (x = LN(lambda*x + F(x))); it contradicts "
                                "--encoder/decoder-normalize-before")
        value = lambda_of(args)
        if not value > 0:
            raise ValueError(f"--xskip-lambda must be > 0, got {value:g}")

    def build_residual(self, site: Site, args) -> nn.Module:
        return DeepNormResidual(lambda_of(args))


def lambda_of(args) -> float:
    """The lambda of a parsed command line (a checkpoint from before the option existed: the default)."""
    value = getattr(args, "xskip_lambda", None)
    return DEFAULT_LAMBDA if value is None else float(value)
