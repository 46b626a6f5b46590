"""T-Fixup: no LayerNorm and no warm-up, made trainable by a depth-scaled initialization.

Huang, Perez, Ba and Volkovs 2020, "Improving Transformer Optimization Through Better Initialization",
ICML 2020 (PMLR 119:4475-4483), Algorithm 1 (T-Fixup), with N encoder and M decoder layers:

1. Xavier (uniform) initialization for all weight matrices; Gaussian N(0, d^-1/2) input embeddings
   (std d^-1/2, d the embedding dimension; padding row 0).
2. Decoder: scale v and w (the value and output projections) of every attention block (self and
   cross-attention), the weight matrices of every FFN block, and the input embeddings by (9M)^(-1/4).
3. Encoder: scale v and w of every attention block and the FFN weight matrices by 0.67 N^(-1/4).

No LayerNorm anywhere (sub-layer norms become ``Identity``, no final stack LayerNorm); the residual join is
fairseq's plain ``x + F(x)``.

Details taken from the authors' code (layer6ai-labs/T-Fixup, ``fairseq/modules/transformer_layer.py``
``fixup_initialization`` and ``fairseq/models/transformer.py``), which the paper leaves open:

- "v" is ``v_proj.weight`` and "w" is ``out_proj.weight``; q and k projections keep fairseq's init
  (Xavier with gain 1/sqrt(2)); biases are not touched (FFN and out_proj biases are 0 in fairseq).
- fairseq initializes v_proj with gain 1/sqrt(2); the authors multiply it by sqrt(2) first, i.e. plain
  Xavier (gain 1) before the scaling. We re-draw v_proj, out_proj, fc1 and fc2 with gain-1 Xavier and
  scale them, which is the same distribution and also right where fairseq's v_proj already has gain 1
  (cross-attention with an encoder width different from the decoder's).
- The encoder input embedding is scaled by (9N)^(-1/4) (N = encoder layers), as step 2 says for "input
  embeddings x and y in encoder and decoder" and as the code does; not by the encoder's 0.67 N^(-1/4).
- The decoder input embedding is scaled by (9M)^(-1/4). Our models tie it to the output projection
  (``--share-decoder-input-output-embed``, as the authors' IWSLT script does), so the output projection
  is that same scaled matrix, as in the authors' runs.
- With ``--share-all-embeddings`` (one matrix for encoder, decoder and output) it is scaled once, by the
  encoder's (9N)^(-1/4): the authors' decoder skips its scaling when all embeddings are shared.
- fairseq's sqrt(d) embedding scale and the sinusoidal positions are kept, as in the authors' code.

Step 1 also needs Xavier FFN weights with zero biases, i.e. ``--ffn-init xavier`` (the default);
``--ffn-init torch_default`` is refused.

The authors' IWSLT14 schedule: Adam (0.9, 0.98), lr 5e-4 from the first update (no warm-up), decayed as
lr * sqrt(4000 / (4000 + t)) (their ``inverse_sqrt_nowarmup`` scheduler, ``--decay-period 4000``);
see configs/variant/tfixup_warmup_inverse_sqrt.yaml.
"""

from torch import nn

from . import NormScheme, register_scheme
from .rezero import refuse_layernorm_options

#: the matrices T-Fixup scales, per sub-layer module name (v and w of attention; both FFN matrices)
SCALED = {
    "encoder": ("self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"),
    "decoder": ("self_attn.v_proj", "self_attn.out_proj", "encoder_attn.v_proj", "encoder_attn.out_proj",
                "fc1", "fc2"),
}


def encoder_scale(encoder_layers: int) -> float:
    """Algorithm 1 step 3: 0.67 N^(-1/4)."""
    return 0.67 * encoder_layers ** -0.25


def decoder_scale(decoder_layers: int) -> float:
    """Algorithm 1 step 2: (9M)^(-1/4)."""
    return (9 * decoder_layers) ** -0.25


def embedding_scale(layers: int) -> float:
    """Algorithm 1 step 2, input embeddings of either stack: (9L)^(-1/4), L that stack's depth."""
    return (9 * layers) ** -0.25


def _submodule(layer: nn.Module, path: str):
    for name in path.split("."):
        layer = getattr(layer, name, None)
        if layer is None:
            return None
    return layer


def scale_layer(layer: nn.Module, stack: str, factor: float) -> int:
    """Re-draw the layer's scaled matrices with Xavier-uniform (gain 1) and multiply them by ``factor``."""
    count = 0
    for path in SCALED[stack]:
        linear = _submodule(layer, path)
        if linear is None:  # a decoder layer without cross-attention
            continue
        nn.init.xavier_uniform_(linear.weight)
        linear.weight.data.mul_(factor)
        count += 1
    return count


@register_scheme
class TFixup(NormScheme):
    name = "tfixup"
    summary = "no LayerNorm; Xavier init, v/out_proj/FFN scaled by 0.67 N^-1/4 (enc), (9M)^-1/4 (dec)"
    paper = 'Huang et al. 2020, "Improving Transformer Optimization Through Better Initialization"'

    def configure(self, args) -> None:
        refuse_layernorm_options(args, self.name)
        if getattr(args, "ffn_init", None) == "torch_default":
            raise ValueError(
                "--norm-scheme tfixup initializes all matrices with Xavier (Huang et al. 2020, Alg. 1); "
                "--ffn-init torch_default contradicts it"
            )

    def build_norm(self, dim, site, args):
        return nn.Identity()

    def initialize(self, model, args, task) -> None:
        n, m = args.encoder_layers, args.decoder_layers
        for layer in model.encoder.layers:
            scale_layer(layer, "encoder", encoder_scale(n))
        for layer in model.decoder.layers:
            scale_layer(layer, "decoder", decoder_scale(m))
        # Input embeddings: N(0, d^-1/2) is fairseq's own Embedding init (kept, so a pretrained
        # --*-embed-path is scaled, not replaced). A matrix shared by both stacks is scaled once.
        encoder_embed = model.encoder.embed_tokens.weight
        decoder_embed = model.decoder.embed_tokens.weight
        encoder_embed.data.mul_(embedding_scale(n))
        if decoder_embed is not encoder_embed:
            decoder_embed.data.mul_(embedding_scale(m))
