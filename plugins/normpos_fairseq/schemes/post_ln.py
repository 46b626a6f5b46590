"""Post-LN: sub-layer -> dropout -> residual add -> LayerNorm (Vaswani et al. 2017; Xiong et al. 2020, Fig. 1a)."""

from . import NormScheme, place_norms_after, register_scheme


@register_scheme
class PostLN(NormScheme):
    name = "post_ln"
    summary = "x_{l+1} = LN(x_l + F(x_l)); no final LayerNorm"
    paper = 'Vaswani et al. 2017, "Attention Is All You Need"'

    def configure(self, args) -> None:
        place_norms_after(args, "--norm-scheme post_ln contradicts --encoder/decoder-normalize-before; "
                                "use --norm-scheme pre_ln instead")
