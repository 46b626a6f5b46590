"""HybridNorm: per-head normalization of Q, K and V inside attention, and a post-norm FFN.

Zhuo, Zeng, Wang, Zhang, Yang, Li, Zhou and Ma 2025, "HybridNorm: Towards Stable and Efficient Transformer
Training via Hybrid Normalization", arXiv:2503.04598, sec. 3. Pre-Norm trains stably but its deep layers
contribute little; Post-Norm uses depth well but trains unstably. HybridNorm normalizes inside attention
instead of around it, and puts the norm of the FFN sub-layer where its residual starts. One layer::

    Y  = X + Attn_QKV(X)            Attn_QKV: softmax(N(Q) N(K)^T / sqrt(d_h)) N(V), N per head
    Z  = Norm(Y)
    X' = Z + FFN(Z)

plus a final norm on each stack. Q = X W^Q (and K, V) are split into heads, and each head's vector of width
d_h goes through one norm module shared by the heads (one each for Q, K and V), as in the authors' code
(BryceZhuo/HybridNorm, ``dense_model/olmo/model.py``: ``q_norm``/``k_norm``/``v_norm`` of size
d_model / n_heads, applied after the head split).

HybridNorm* (``--hybridnorm-star``): the first layer of each stack is Pre-Norm, ``X + Attn_QKV(Norm(X))``
then ``+ FFN(Norm(.))``; its Q, K, V norms stay (the authors' README runs it as
``norm_pos_special_config={0: {attn_norm: True, ffn_residual: False}}``, which leaves the QKV norms on).

Decoder and cross-attention (the paper's models are decoder-only; this is our choice): cross-attention is an
attention sub-layer like self-attention, so it gets the same treatment: N on its queries (from the decoder)
and on its keys and values (from the encoder's output), no norm around it, and the one Norm of the layer
sits before the FFN::

    Y_1 = X + SelfAttn_QKV(X);  Y_2 = Y_1 + CrossAttn_QKV(Y_1, enc);  Z = Norm(Y_2);  X' = Z + FFN(Z)

Why: the paper's argument for QKV-Norm (attention whose gradient does not grow with the scale of its
input) applies to any attention, and the decoder's stream that the queries come from is unnormalized here
just as in self-attention; the rule "attention sub-layers: QKV-Norm; FFN: the layer's Norm" then holds for
every sub-layer of both stacks.

Where it sits in fairseq's layer: the layers are fairseq's, post-norm (``layer.normalize_before = False``,
HybridNorm*'s first layer pre-norm), with each stack's final LayerNorm (the scheme configures
normalize-before so that fairseq builds it). Post-norm fairseq applies a sub-layer's norm right after its
join, so Z = Norm(Y) is the norm of the layer's last attention sub-layer (``self_attn_layer_norm`` in the
encoder, ``encoder_attn_layer_norm`` in the decoder); the other norm sites are ``Identity``, so the state_dict
has no key for them. Q, K, V: fairseq's ``MultiheadAttention`` hands ``q_proj.weight`` etc. to torch's fused
``F.multi_head_attention_forward`` whenever there is no incremental state (all of training), so a hook on
``q_proj`` would act in beam search only (see ``normformer.py``). The scheme therefore sets fairseq's own
switch that bypasses the fused path (``_set_skip_embed_dim_check``, fairseq's bypass for pruned attention,
whose only other effect is to skip an assertion on the query's width): fairseq's own attention code then
runs on every path and calls ``q_proj``/``k_proj``/``v_proj``, whose forward hooks apply N. In incremental
decoding the cached keys and values are the normalized ones. ``q_proj`` etc. stay plain ``nn.Linear``.

Deviation from the authors' code: their LLMs use RMSNorm with a gain and no bias (eps 1e-5) everywhere; here
every norm is fairseq's LayerNorm (gain and bias, eps 1e-5), the norm of every other scheme of this MT
harness, so that HybridNorm differs from Post-LN and Pre-LN by the norms' positions only.

Schedule: the paper trains LLMs with warm-up and cosine decay, which this harness has no schedule for; the
overlay ``configs/variant/hybridnorm_warmup.yaml`` takes fairseq's Pre-LN/Post-LN recipe (warm-up 4,000,
inverse square root), an assumption, not the paper's.
"""

from typing import Optional

import torch
from fairseq.modules import LayerNorm
from torch import nn

from . import NormScheme, Site, place_norms_before, register_scheme
from .normformer import NormOutput


class PerHeadNorm(nn.Module):
    """One LayerNorm of width d_h applied to each head's slice of a (..., heads * d_h) tensor."""

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.norm = LayerNorm(head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return self.norm(x.view(*shape[:-1], self.num_heads, self.head_dim)).view(shape)


def add_qkv_norms(attn: nn.Module) -> None:
    """N on the outputs of ``attn``'s q, k and v projections, on every path of fairseq's attention."""
    for proj in ("q", "k", "v"):
        norm = PerHeadNorm(attn.num_heads, attn.head_dim)
        setattr(attn, f"{proj}_norm", norm)
        getattr(attn, f"{proj}_proj").register_forward_hook(NormOutput(norm))
    attn._set_skip_embed_dim_check()  # fairseq's own code path, which calls the projections (module docstring)


def star_of(args) -> bool:
    return bool(getattr(args, "hybridnorm_star", False))


def is_pre_norm_layer(index: Optional[int], args) -> bool:
    """HybridNorm*: the first layer of each stack is Pre-Norm."""
    return star_of(args) and index == 0


def norm_before_ffn(site: Site, args) -> str:
    """The sub-layer whose post-norm is the layer's Norm(Y): the layer's last attention sub-layer."""
    if site.stack == "decoder" and not getattr(args, "no_cross_attention", False):
        return "encoder_attn"
    return "self_attn"


@register_scheme
class HybridNorm(NormScheme):
    name = "hybridnorm"
    summary = "per-head norms on Q, K, V; Y = X + Attn(X), Z = LN(Y), X' = Z + FFN(Z); final LN"
    paper = ('Zhuo et al. 2025, "HybridNorm: Towards Stable and Efficient Transformer Training via Hybrid '
             'Normalization" (arXiv:2503.04598)')

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--hybridnorm-star", action="store_true", default=False,
            help="hybridnorm: HybridNorm*, the first layer of each stack Pre-Norm (its Q, K, V norms kept)",
        )

    def configure(self, args) -> None:
        # normalize-before makes fairseq build each stack's final LayerNorm; initialize sets each layer's
        # own position. Not refused when given: a checkpoint's saved args carry it, and loading reconfigures.
        place_norms_before(args)

    def build_norm(self, dim: int, site: Site, args) -> Optional[nn.Module]:
        if site.sublayer == "final" or is_pre_norm_layer(site.layer, args):
            return None  # fairseq's LayerNorm
        if site.sublayer == norm_before_ffn(site, args):
            return None  # Z = Norm(Y), after the last attention join
        return nn.Identity()

    def initialize(self, model: nn.Module, args, task) -> None:
        for stack in (model.encoder, model.decoder):
            for index, layer in enumerate(stack.layers):
                layer.normalize_before = is_pre_norm_layer(index, args)
                for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                    if attn is not None:
                        add_qkv_norms(attn)
