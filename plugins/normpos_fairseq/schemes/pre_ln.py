"""Pre-LN: LayerNorm inside the residual branch, plus a final LayerNorm on each stack.

Xiong et al. 2020, Fig. 1b: x_{l+1} = x_l + F(LN(x_l)), and the output of the last layer goes through one
more LayerNorm before the output projection. fairseq builds exactly this (including that final LayerNorm,
``encoder.layer_norm`` / ``decoder.layer_norm``) when ``encoder_normalize_before`` and
``decoder_normalize_before`` are set.
"""

from . import NormScheme, place_norms_before, register_scheme


@register_scheme
class PreLN(NormScheme):
    name = "pre_ln"
    summary = "x_{l+1} = x_l + F(LN(x_l)); final LayerNorm on each stack"
    paper = 'Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"'

    def configure(self, args) -> None:
        place_norms_before(args)
