"""T-Fixup (Huang et al. 2020, ICML, Algorithm 1), built through fairseq-train's entry point: no LayerNorm,
and the value/output projections, FFN matrices and input embeddings have the depth-scaled std."""

import pytest
import torch
from torch import nn

from fairseq_entry import build_model

ARCH = "normpos_iwslt_de_en_tfixup"
D, FFN = 64, 128  # wide enough that the empirical std of a stack's matrices is within ~0.5% of the true one
TINY = [
    "--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D),
    "--encoder-ffn-embed-dim", str(FFN), "--decoder-ffn-embed-dim", str(FFN),
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]


def build(dict_dir, n, m, *extra):
    return build_model(dict_dir, "--arch", ARCH, *TINY, "--encoder-layers", str(n), "--decoder-layers", str(m),
                       *extra)


def xavier_std(fan_in, fan_out, gain=1.0):
    return gain * (2.0 / (fan_in + fan_out)) ** 0.5


def pooled_std(layers, path):
    """std of one matrix kind over all layers of a stack (all share the same law)."""
    weights = []
    for layer in layers:
        module = layer
        for name in path.split("."):
            module = getattr(module, name)
        weights.append(module.weight.detach().flatten())
    return torch.cat(weights).std().item()


def embedding_std(embedding):
    rows = [i for i in range(embedding.num_embeddings) if i != embedding.padding_idx]
    return embedding.weight.detach()[rows].std().item()


def test_no_layernorm_anywhere(dict_dir):
    model = build(dict_dir, 2, 3)
    # torch's LayerNorm, or fairseq's (torch's on CPU, apex FusedLayerNorm on GPU when installed)
    norms = [name for name, m in model.named_modules()
             if isinstance(m, nn.LayerNorm) or "LayerNorm" in type(m).__name__]
    assert norms == []
    assert not [name for name, _ in model.named_parameters() if "norm" in name]
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None  # no final stack norm
    assert model.encoder.layernorm_embedding is None and model.decoder.layernorm_embedding is None
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        assert isinstance(layer.self_attn_layer_norm, nn.Identity) and isinstance(layer.final_layer_norm, nn.Identity)


@pytest.mark.parametrize("argv, message", [
    (["--encoder-normalize-before"], "tfixup has no LayerNorm"),
    (["--layernorm-embedding"], "tfixup has no LayerNorm"),
    (["--ffn-init", "torch_default"], "contradicts it"),
])
def test_contradicting_options_are_refused(dict_dir, argv, message):
    with pytest.raises(ValueError, match=message):
        build(dict_dir, 2, 2, *argv)


@pytest.mark.parametrize("n, m", [(6, 6), (12, 4)])
def test_scaled_init_has_the_stated_std(dict_dir, n, m):
    model = build(dict_dir, n, m)
    enc_scale = 0.67 * n ** -0.25      # Alg. 1 step 3
    dec_scale = (9 * m) ** -0.25       # Alg. 1 step 2
    shapes = {"v_proj": (D, D), "out_proj": (D, D), "fc1": (D, FFN), "fc2": (FFN, D)}

    def expected(path, scale):
        return xavier_std(*shapes[path.split(".")[-1]]) * scale

    # pooled over a stack's layers: >= 4 x 4096 uniform values, relative error of the std ~0.4% (1 sigma)
    tol = 0.03
    for path in ("self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"):
        assert pooled_std(model.encoder.layers, path) == pytest.approx(expected(path, enc_scale), rel=tol), path
    for path in ("self_attn.v_proj", "self_attn.out_proj", "encoder_attn.v_proj", "encoder_attn.out_proj",
                 "fc1", "fc2"):
        assert pooled_std(model.decoder.layers, path) == pytest.approx(expected(path, dec_scale), rel=tol), path
    # q and k are not T-Fixup's: they keep fairseq's Xavier with gain 1/sqrt(2), unscaled
    for layers in (model.encoder.layers, model.decoder.layers):
        assert pooled_std(layers, "self_attn.q_proj") == pytest.approx(xavier_std(D, D, 2 ** -0.5), rel=tol)
        assert pooled_std(layers, "self_attn.k_proj") == pytest.approx(xavier_std(D, D, 2 ** -0.5), rel=tol)

    # input embeddings N(0, d^-1/2), each scaled by (9L)^-1/4 of its own stack (the authors' code); the
    # decoder's is also the (tied) output projection. 99 x 64 Gaussian values: std error ~0.9% (1 sigma).
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    assert embedding_std(model.encoder.embed_tokens) == pytest.approx(D ** -0.5 * (9 * n) ** -0.25, rel=0.05)
    assert embedding_std(model.decoder.embed_tokens) == pytest.approx(D ** -0.5 * (9 * m) ** -0.25, rel=0.05)
    for embedding in (model.encoder.embed_tokens, model.decoder.embed_tokens):
        assert torch.count_nonzero(embedding.weight[embedding.padding_idx]) == 0


def test_shared_embedding_is_scaled_once(dict_dir):
    """--share-all-embeddings: one matrix, scaled once by the encoder's (9N)^-1/4 (the authors' code)."""
    n, m = 12, 4
    model = build(dict_dir, n, m, "--share-all-embeddings")
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    assert embedding_std(model.encoder.embed_tokens) == pytest.approx(D ** -0.5 * (9 * n) ** -0.25, rel=0.05)
