"""The ``normpos_transformer`` model and the paper's architectures, one per shape and scheme.

The model is fairseq's own ``TransformerModel`` (so fairseq's training loop, beam search and checkpoints
work unchanged) with two options added:

- ``--norm-scheme NAME``: where normalization sits (``schemes/``); one name decides it.
- ``--ffn-init {xavier,torch_default}``: the FFN initialization the paper ran (fairseq 0.9) or today's
  fairseq (``ffn_init.py``).
- ``--decoder-ngram-window N``: N-gram masked decoder self-attention (``ngram_attention.py``), with any
  scheme; not given, fairseq's full causal self-attention.

Architectures are registered for every shape x scheme, e.g. ``normpos_iwslt_de_en_pre_ln``; the plain
shape name (``normpos_iwslt_de_en``) takes the scheme from ``--norm-scheme`` (default ``post_ln``, the
original Transformer).
"""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture

from .. import ngram_attention
from ..ffn_init import FFN_INITS, apply_ffn_init
from ..schemes import SCHEMES, get_scheme, scheme_names
from .scheme_layers import NormPosDecoder, NormPosEncoder

MODEL_NAME = "normpos_transformer"
DEFAULT_SCHEME = "post_ln"
DEFAULT_FFN_INIT = "xavier"  # the paper's: fairseq <= 0.9 (see ffn_init.py)

# The paper's model shapes. Each value is set explicitly (not inherited from a fairseq architecture name)
# because the same name can build another shape on another code path (fairseq issue #4675: under
# fairseq-hydra-train, transformer_iwslt_de_en builds FFN 2048). Tests compare each with fairseq's built-in.
SHAPES = {
    # Xiong et al. 2020, App. A.1 (= fairseq transformer_iwslt_de_en): 6+6 layers, d=512, FFN 1024, 4 heads
    "iwslt_de_en": dict(embed_dim=512, ffn_embed_dim=1024, attention_heads=4, layers=6),
    # Transformer base (Vaswani et al. 2017; = fairseq transformer_wmt_en_de), Xiong et al. 2020 sec. 4
    "wmt_en_de_base": dict(embed_dim=512, ffn_embed_dim=2048, attention_heads=8, layers=6),
    # Transformer big (Vaswani et al. 2017; = fairseq transformer_vaswani_wmt_en_de_big, dropout 0.3)
    "wmt_en_de_big": dict(embed_dim=1024, ffn_embed_dim=4096, attention_heads=16, layers=6, dropout=0.3),
}


def arch_name(shape: str, scheme: str = "") -> str:
    return f"normpos_{shape}" + (f"_{scheme}" if scheme else "")


@register_model(MODEL_NAME)
class NormPosTransformerModel(TransformerModel):
    """fairseq's Transformer with the normalization scheme and FFN initialization chosen by name."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument(
            "--norm-scheme", choices=scheme_names(), default=None,
            help=f"where normalization sits (default {DEFAULT_SCHEME}, or the architecture's)",
        )
        parser.add_argument(
            "--ffn-init", choices=FFN_INITS, default=None,
            help=f"FFN weight init: xavier = fairseq<=0.9, the paper's (default); torch_default = fairseq>=0.10",
        )
        ngram_attention.add_args(parser)  # --decoder-ngram-window N, for every scheme
        for scheme in SCHEMES.values():
            scheme.add_args(parser)

    @classmethod
    def build_model(cls, args, task):
        scheme = get_scheme(args.norm_scheme)
        scheme.configure(args)
        model = super().build_model(args, task)
        apply_ffn_init(model, args.ffn_init)
        scheme.initialize(model, args, task)
        return model

    # fairseq's encoder and decoder, with norms and residual joins from the scheme (scheme_layers.py)
    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return NormPosEncoder(cfg, src_dict, embed_tokens, get_scheme(args.norm_scheme), args)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return NormPosDecoder(cfg, tgt_dict, embed_tokens, get_scheme(args.norm_scheme), args,
                              no_encoder_attn=cfg.no_cross_attention)


def _set_default(args, name, value):
    # argparse leaves unset options as None (or absent, since fairseq deletes the defaults): fill those only,
    # so that anything given on the command line wins.
    if getattr(args, name, None) is None:
        setattr(args, name, value)


def _make_arch(shape: dict, scheme: str):
    def arch(args):
        if scheme:
            given = getattr(args, "norm_scheme", None)
            if given not in (None, scheme):
                raise ValueError(
                    f"--arch {args.arch} fixes --norm-scheme {scheme}, but --norm-scheme {given} was given"
                )
            args.norm_scheme = scheme
        _set_default(args, "norm_scheme", DEFAULT_SCHEME)
        _set_default(args, "ffn_init", DEFAULT_FFN_INIT)
        for side in ("encoder", "decoder"):
            _set_default(args, f"{side}_embed_dim", shape["embed_dim"])
            _set_default(args, f"{side}_ffn_embed_dim", shape["ffn_embed_dim"])
            _set_default(args, f"{side}_attention_heads", shape["attention_heads"])
            _set_default(args, f"{side}_layers", shape["layers"])
        if "dropout" in shape:
            _set_default(args, "dropout", shape["dropout"])
        # Output projection tied to the decoder input embedding (Xiong et al. 2020, App. A.1). It is a
        # store_true flag, so "not given" reads as False: set it here, it cannot be switched off.
        args.share_decoder_input_output_embed = True
        base_architecture(args)

    return arch


for _shape_name, _shape in SHAPES.items():
    register_model_architecture(MODEL_NAME, arch_name(_shape_name))(_make_arch(_shape, ""))
    for _scheme in scheme_names():
        register_model_architecture(MODEL_NAME, arch_name(_shape_name, _scheme))(
            _make_arch(_shape, _scheme)
        )
