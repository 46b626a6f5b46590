"""B2T connection (Takase et al., Findings of ACL 2023, arXiv:2206.00330), built through fairseq-train's entry
point: Post-LN plus a skip from each layer's input to just before its last LayerNorm. Each layer's output is
recomputed here from its own sub-modules with torch's layer_norm, by the paper's equations."""

import argparse

import pytest
import torch

from fairseq_entry import build_model
from layer_norms import ln, padded_states, randomize_norms
from normpos_fairseq.schemes import get_scheme

N, M = 2, 3
TINY = ["--encoder-layers", str(N), "--decoder-layers", str(M), "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]


def build(dict_dir, scheme="b2t", *extra, seed=1):
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY, *extra, seed=seed).eval()


def ffn(layer, h):
    return layer.fc2(torch.relu(layer.fc1(h)))


def test_encoder_layer_is_ln_of_h_plus_ffn_plus_x(dict_dir):
    """h = LN_1(x + Attn(x)); y = LN_2(h + FFN(h) + x)."""
    model = build(dict_dir)
    randomize_norms(model)
    layer = model.encoder.layers[1]
    x, pad = padded_states(seed=1)
    with torch.no_grad():
        got = layer(x, pad)
        attn = layer.self_attn(query=x, key=x, value=x, key_padding_mask=pad, need_weights=False)[0]
        h = ln(layer.self_attn_layer_norm, x + attn)
        want = ln(layer.final_layer_norm, h + ffn(layer, h) + x)
        post_ln = ln(layer.final_layer_norm, h + ffn(layer, h))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, post_ln, atol=1e-3)  # the skip does something


def test_decoder_skip_spans_self_attention_cross_attention_and_ffn(dict_dir):
    """h_1 = LN_1(x + SelfAttn(x)); h_2 = LN_2(h_1 + CrossAttn(h_1)); y = LN_3(h_2 + FFN(h_2) + x)."""
    model = build(dict_dir)
    randomize_norms(model)
    layer = model.decoder.layers[2]
    g = torch.Generator().manual_seed(2)
    x, enc = torch.randn(4, 2, 32, generator=g), torch.randn(6, 2, 32, generator=g)
    with torch.no_grad():
        got = layer(x, enc, None)[0]  # no self-attention mask: fairseq's masks are not under test here
        h1 = ln(layer.self_attn_layer_norm, x + layer.self_attn(query=x, key=x, value=x)[0])
        h2 = ln(layer.encoder_attn_layer_norm,
                h1 + layer.encoder_attn(query=h1, key=enc, value=enc, static_kv=True)[0])
        want = ln(layer.final_layer_norm, h2 + ffn(layer, h2) + x)
        skip_from_cross_attention_input = ln(layer.final_layer_norm, h2 + ffn(layer, h2) + h1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, skip_from_cross_attention_input, atol=1e-3)


def test_no_parameter_added_and_default_init_is_post_lns(dict_dir):
    """Same seed: B2T's state_dict is Post-LN's, key for key and value for value (the default --b2t-init)."""
    post, b2t = build(dict_dir, "post_ln", seed=3).state_dict(), build(dict_dir, seed=3).state_dict()
    assert list(post) == list(b2t)
    assert all(torch.equal(post[k], b2t[k]) for k in post)


def test_scaled_init_multiplies_every_non_layernorm_weight_by_n_to_the_minus_half(dict_dir):
    """--b2t-init scaled: the authors' 2023 rescaling_init, N the depth of the layer's own stack; biases,
    LayerNorms and embeddings stay as built."""
    plain = build(dict_dir, seed=4).state_dict()
    scaled = build(dict_dir, "b2t", "--b2t-init", "scaled", seed=4).state_dict()
    assert list(plain) == list(scaled)
    touched = 0
    for key, value in plain.items():
        stack = key.split(".")[0]
        in_layer = ".layers." in key
        if in_layer and key.endswith("weight") and "layer_norm" not in key:
            depth = N if stack == "encoder" else M
            torch.testing.assert_close(scaled[key], value * depth ** -0.5, rtol=0, atol=0, msg=key)
            touched += 1
        else:
            assert torch.equal(scaled[key], value), key
    # q, k, v, out per attention + fc1, fc2: encoder 1 attention, decoder 2
    assert touched == N * (4 + 2) + M * (8 + 2)


def parsed(**options):
    return argparse.Namespace(encoder_normalize_before=False, decoder_normalize_before=False, **options)


def test_an_unknown_init_is_one_line():
    with pytest.raises(ValueError, match=r"^unknown --b2t-init 'xavier'; valid: fairseq, scaled$"):
        get_scheme("b2t").configure(parsed(b2t_init="xavier"))


def test_normalize_before_is_refused(dict_dir):
    with pytest.raises(ValueError, match="b2t is Post-LN"):
        build(dict_dir, "b2t", "--encoder-normalize-before")
