"""fairseq's encoder and decoder, with each layer's norms and residual joins taken from the scheme.

The layers are fairseq's own (``TransformerEncoderLayerBase`` / ``TransformerDecoderLayerBase``: same
attention, FFN, dropout and incremental decoding); only two things are asked of the scheme
(``schemes/__init__.py``):

- the module in each LayerNorm's place (``self_attn_layer_norm``, ``encoder_attn_layer_norm``,
  ``final_layer_norm``, and the stack's final ``layer_norm``), kept when the scheme returns None;
- the residual join of each sub-layer. fairseq's layers call ``self.residual_connection(x, residual)``
  once per sub-layer, always in the order of ``SUBLAYERS``; the layer counts the calls of one forward to
  know which sub-layer's join to use (a counter, because the call itself does not say).

The decoder layer also applies ``--decoder-ngram-window`` (``ngram_attention.py``): a band mask instead of
the causal one, and a cache of the last N-1 keys and values in incremental decoding; without the option
nothing changes.
"""

from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerDecoderBase, TransformerEncoderBase
from fairseq.modules import transformer_layer
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from torch import nn

from .. import ngram_attention
from ..schemes import NORM_ATTRS, SUBLAYERS, Site


def _sites(stack: str, layer, args):
    return {sub: Site(stack, layer, sub, args.encoder_layers, args.decoder_layers) for sub in SUBLAYERS[stack]}


def _apply_scheme(layer: nn.Module, scheme, stack: str, index: int, args) -> None:
    sites = _sites(stack, index, args)
    for sub, site in sites.items():
        norm_attr = NORM_ATTRS[sub]
        if getattr(layer, norm_attr, None) is None:
            continue  # a decoder layer without cross-attention
        norm = scheme.build_norm(layer.embed_dim, site, args)
        if norm is not None:
            setattr(layer, norm_attr, norm)
    layer.residuals = nn.ModuleDict({sub: scheme.build_residual(site, args) for sub, site in sites.items()})


class _SchemeResiduals:
    """``residual_connection`` that dispatches to the current sub-layer's join (see the module docstring)."""

    def _start(self, order):
        self._residual_order = order
        self._residual_next = 0

    def residual_connection(self, x, residual):
        sub = self._residual_order[self._residual_next]
        self._residual_next += 1
        return self.residuals[sub](x, residual)


class NormPosEncoderLayer(_SchemeResiduals, transformer_layer.TransformerEncoderLayerBase):
    def __init__(self, cfg, scheme, args, index: int):
        super().__init__(cfg)
        _apply_scheme(self, scheme, "encoder", index, args)

    def forward(self, x, encoder_padding_mask, attn_mask=None):
        self._start(SUBLAYERS["encoder"])
        return super().forward(x, encoder_padding_mask, attn_mask)


class NormPosDecoderLayer(_SchemeResiduals, transformer_layer.TransformerDecoderLayerBase):
    def __init__(self, cfg, scheme, args, index: int, no_encoder_attn=False):
        super().__init__(cfg, no_encoder_attn)
        _apply_scheme(self, scheme, "decoder", index, args)
        # --decoder-ngram-window N (ngram_attention.py); None: fairseq's full causal self-attention
        self.ngram_window = ngram_attention.window_of(args)

    def forward(self, x, encoder_out=None, encoder_padding_mask=None, incremental_state=None,
                prev_self_attn_state=None, prev_attn_state=None, self_attn_mask=None, self_attn_padding_mask=None,
                need_attn=False, need_head_weights=False):
        # fairseq's layer skips cross-attention (and its residual) when either is missing
        cross = self.encoder_attn is not None and encoder_out is not None
        self._start(SUBLAYERS["decoder"] if cross else ("self_attn", "ffn"))
        if self.ngram_window is not None:
            self_attn_mask, self_attn_padding_mask = ngram_attention.self_attention_masks(
                x, self.ngram_window, self_attn_mask, self_attn_padding_mask, self.self_attn.num_heads,
                per_sentence=not self.self_attn.skip_embed_dim_check)
        out = super().forward(x, encoder_out, encoder_padding_mask, incremental_state, prev_self_attn_state,
                              prev_attn_state, self_attn_mask, self_attn_padding_mask, need_attn, need_head_weights)
        if self.ngram_window is not None:
            ngram_attention.truncate_cache(self.self_attn, incremental_state, self.ngram_window - 1)
        return out


def _wrap(layer, cfg):
    # as fairseq's build_encoder_layer / build_decoder_layer do
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap if not checkpoint else 0)


def _final_norm(stack_module, scheme, stack: str, args) -> None:
    if stack_module.layer_norm is not None:
        site = Site(stack, None, "final", args.encoder_layers, args.decoder_layers)
        norm = scheme.build_norm(stack_module.layer_norm.normalized_shape[0], site, args)
        if norm is not None:
            stack_module.layer_norm = norm


class NormPosEncoder(TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, scheme, args):
        # read by build_encoder_layer, which the parent's __init__ calls
        self.scheme, self.scheme_args, self._layers_built = scheme, args, 0
        super().__init__(cfg, dictionary, embed_tokens)
        _final_norm(self, scheme, "encoder", args)

    def build_encoder_layer(self, cfg):
        layer = NormPosEncoderLayer(cfg, self.scheme, self.scheme_args, self._layers_built)
        self._layers_built += 1
        return _wrap(layer, cfg)


class NormPosDecoder(TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, scheme, args, no_encoder_attn=False):
        self.scheme, self.scheme_args, self._layers_built = scheme, args, 0
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn)
        _final_norm(self, scheme, "decoder", args)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        layer = NormPosDecoderLayer(cfg, self.scheme, self.scheme_args, self._layers_built, no_encoder_attn)
        self._layers_built += 1
        return _wrap(layer, cfg)
