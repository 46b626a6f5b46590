"""RMSNorm in place of every LayerNorm, after the residual add (``rmsnorm_post``) or inside the residual
branch (``rmsnorm_pre``).

Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (NeurIPS 2019, arXiv:1910.07467); the layer
(``modules/rmsnorm.py``): y = x / RMS(x) * g, RMS(x) = sqrt(mean(x^2) + eps), eps = 1e-8, gain g (init 1),
no bias.

- rmsnorm_post: x_{l+1} = RMSNorm(x_l + F(x_l)), no final norm: the position of the paper's Transformer
  runs (made with the authors' TensorFlow toolkit bzhangGo/zero, whose Transformer is Post-LN: residual
  add, then the norm; ``func.rms_norm`` is its RMSNorm).
- rmsnorm_pre: x_{l+1} = x_l + F(RMSNorm(x_l)), and each stack's final norm is an RMSNorm too. Not run in
  the paper; here for the Post/Pre comparison this project makes.

Option ``--rmsnorm-eps`` (default 1e-8) applies to both.
"""

from ..modules.rmsnorm import EPS, RMSNorm
from . import NormScheme, place_norms_after, place_norms_before, register_scheme

PAPER = 'Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (arXiv:1910.07467)'


def _eps(args) -> float:
    value = getattr(args, "rmsnorm_eps", None)  # absent/None when not given (fairseq suppresses defaults)
    return EPS if value is None else value


class _RMSNormScheme(NormScheme):
    paper = PAPER
    normalize_before = False

    def configure(self, args) -> None:
        if self.normalize_before:
            place_norms_before(args)
        else:
            place_norms_after(args, f"--norm-scheme {self.name} is Post-LN and contradicts "
                                    "--encoder/decoder-normalize-before; use --norm-scheme rmsnorm_pre instead")
        if not _eps(args) > 0:
            raise ValueError(f"--rmsnorm-eps must be > 0, got {_eps(args)}")

    def build_norm(self, dim, site, args):
        return RMSNorm(dim, eps=_eps(args))  # every site, the stacks' final norms included


@register_scheme
class RMSNormPost(_RMSNormScheme):
    name = "rmsnorm_post"
    summary = "x_{l+1} = RMSNorm(x_l + F(x_l)); no final norm"

    def add_args(self, parser) -> None:
        # added by one scheme only (argparse refuses an option twice); rmsnorm_pre reads it as well
        parser.add_argument("--rmsnorm-eps", type=float, metavar="EPS", default=EPS,
                            help=f"rmsnorm_post/rmsnorm_pre: eps under the square root (default {EPS}, "
                                 "bzhangGo/rmsnorm)")


@register_scheme
class RMSNormPre(_RMSNormScheme):
    name = "rmsnorm_pre"
    summary = "x_{l+1} = x_l + F(RMSNorm(x_l)); final RMSNorm on each stack"
    normalize_before = True
