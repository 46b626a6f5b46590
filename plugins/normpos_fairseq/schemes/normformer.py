"""NormFormer: Pre-LN plus three extra normalization operations in every layer.

Shleifer, Weston & Ott 2021, "NormFormer: Improved Transformer Pretraining with Extra Normalization",
arXiv:2110.09456 (sec. 2, Fig. 1). On top of Pre-LN (``x + F(LN(x))``, final LayerNorm on each stack):

1. Post-attention LayerNorm (fairseq's decoder option ``--scale-attn``, ``attn_ln``)::

       x = x + LN_attn(MHA(LN(x)))

2. HeadScale (``--scale-heads``, ``c_attn``): each head's output is scaled by a learned scalar, init 1::

       HeadScaleMHA(Q, K, V) = Concat(gamma_1 head_1, ..., gamma_n head_n) W^O

3. FFN LayerNorm after the first layer's activation (``--scale-fc``, ``ffn_layernorm``)::

       FFN(x) = LN_ffn(sigma(x W_1 + b_1)) W_2 + b_2

4. Optional (``--normformer-scale-resids``, fairseq's ``--scale-resids``, off in the paper's NormFormer):
   the FFN sub-layer's residual is scaled by a learned vector, init 1: ``x = lambda (.) x + FFN(LN(x))``.
   As in fairseq's decoder layer it scales the FFN residual only, not the attention ones.

How each is attached (fairseq's encoder layer has none of these, and our TransformerConfig does not pass
fairseq's decoder flags, so both stacks get them here, the same way):

- (1) is a LayerNorm registered on the layer as ``self_attn_out_layer_norm`` and applied by a forward hook on
  ``self_attn`` (its output, before dropout and the residual add, where fairseq applies ``attn_ln``).
- (3) is a LayerNorm of width ffn_embed_dim registered as ``ffn_layer_norm`` and applied by a forward
  pre-hook on ``fc2`` (so after activation and activation dropout, where fairseq applies ``ffn_layernorm``).
  ``fc1``/``fc2`` stay plain ``nn.Linear`` modules with their own ``weight``.
- (2) follows the paper's equation (before W^O), not fairseq's code, which multiplies the output of
  ``out_proj`` chunk by chunk (fairseq issues #3973 and #3983: not the same function; the author says the
  cheaper placement performed about the same for LMs). Since ``Concat(gamma_i h_i) W^O`` equals
  ``Concat(h_i) (diag(gamma (x) 1_{head_dim}) W^O)``, gamma is a parametrization of ``out_proj.weight``
  (torch.nn.utils.parametrize): the weight the attention uses is W^O with input column block i times
  gamma_i. A hook on ``out_proj`` would not do: fairseq's MultiheadAttention passes ``out_proj.weight`` to
  ``F.multi_head_attention_forward`` without calling ``out_proj`` whenever there is no incremental state
  (all of training), so such a hook would act in beam search only. The parametrization acts on every path.
  Side effects: the state_dict keys become ``out_proj.parametrizations.weight.original`` (W^O) and
  ``out_proj.parametrizations.weight.0.scale`` (gamma); ``out_proj.weight`` is computed, so an in-place
  init of it (``nn.init.*_(out_proj.weight)``) changes nothing: re-initialize ``...weight.original``.

Cross-attention: the paper is about decoder-only LMs and names "self attention" for (1) and (2); fairseq's
options touch self-attention only. By default we do the same in both stacks; ``--normformer-cross-attn``
also puts (1) and (2) on the decoder's encoder-attention.

All extras are parameters (in the state_dict, trained, saved, averaged); LayerNorms start at weight 1,
bias 0 and gamma/lambda at 1, and nothing here draws random numbers, so the base weights are those Pre-LN
builds with the same seed. Every extra op is per token, so incremental decoding gives what a full forward
gives.
"""

import torch
from fairseq.modules import LayerNorm
from torch import nn
from torch.nn.utils import parametrize

from . import NormScheme, Residual, place_norms_before, register_scheme


class HeadScale(nn.Module):
    """Parametrization of ``out_proj.weight``: W -> W with input columns of head i multiplied by gamma_i."""

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.scale = nn.Parameter(torch.ones(num_heads))  # gamma, init 1 (NormFormer sec. 2)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # weight is (out_features, in_features); fairseq's heads are concatenated along in_features,
        # head i in columns [i * head_dim, (i + 1) * head_dim)
        return weight * self.scale.repeat_interleave(self.head_dim)


class NormOutput:
    """Forward hook: LayerNorm on a module's output (first element when it returns a tuple)."""

    # an object, not a closure, so that copy.deepcopy(model) (fairseq's --ema) points at the copied norm
    def __init__(self, norm: nn.Module):
        self.norm = norm

    def __call__(self, module, args, output):
        if isinstance(output, tuple):
            return (self.norm(output[0]),) + output[1:]
        return self.norm(output)


class NormInput:
    """Forward pre-hook: LayerNorm on a module's first input."""

    def __init__(self, norm: nn.Module):
        self.norm = norm

    def __call__(self, module, args):
        return (self.norm(args[0]),) + tuple(args[1:])


class ScaledResidual(Residual):
    """``lambda (.) residual + x``, lambda a learned vector initialised to 1 (fairseq's ``w_resid``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.weight * residual + x


def head_scale(attn: nn.Module) -> nn.Parameter:
    """gamma of a NormFormer attention module (its ``out_proj`` parametrization)."""
    return attn.out_proj.parametrizations.weight[0].scale


def _extend_attention(layer: nn.Module, attn_attr: str, norm_attr: str) -> None:
    attn = getattr(layer, attn_attr)
    norm = LayerNorm(layer.embed_dim)
    setattr(layer, norm_attr, norm)
    attn.register_forward_hook(NormOutput(norm))
    parametrize.register_parametrization(attn.out_proj, "weight", HeadScale(attn.num_heads, attn.head_dim))


def _extend_layer(layer: nn.Module, cross_attn: bool) -> None:
    _extend_attention(layer, "self_attn", "self_attn_out_layer_norm")
    if cross_attn and getattr(layer, "encoder_attn", None) is not None:
        _extend_attention(layer, "encoder_attn", "encoder_attn_out_layer_norm")
    layer.ffn_layer_norm = LayerNorm(layer.fc2.in_features)
    layer.fc2.register_forward_pre_hook(NormInput(layer.ffn_layer_norm))


@register_scheme
class NormFormer(NormScheme):
    name = "normformer"
    summary = "Pre-LN + LN after self-attention + per-head scale + LN after the FFN activation"
    paper = 'Shleifer, Weston & Ott 2021, "NormFormer: Improved Transformer Pretraining with Extra Normalization"'

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--normformer-cross-attn", action="store_true",
            help="normformer: also LayerNorm and head-scale the decoder's encoder-attention output "
                 "(default: self-attention only, as the paper and fairseq)",
        )
        parser.add_argument(
            "--normformer-scale-resids", action="store_true",
            help="normformer: learned per-dimension scale (init 1) on the FFN residual, fairseq's --scale-resids "
                 "(off in the paper's NormFormer)",
        )

    def configure(self, args) -> None:
        # NormFormer is built on Pre-LN (paper sec. 2), final LayerNorm on each stack included
        place_norms_before(args)

    def build_residual(self, site, args) -> nn.Module:
        if site.sublayer == "ffn" and getattr(args, "normformer_scale_resids", False):
            return ScaledResidual(getattr(args, f"{site.stack}_embed_dim"))
        return Residual()

    def initialize(self, model: nn.Module, args, task) -> None:
        cross_attn = getattr(args, "normformer_cross_attn", False)
        for layer in list(model.encoder.layers) + list(model.decoder.layers):
            _extend_layer(layer, cross_attn)
