"""ResiDual (Xie et al. 2023, arXiv:2304.14802), built through fairseq-train's entry point: a Post-LN stream
x_{k+1} = LN_k(x_k + f_k(x_k)) that the sub-layers read, a dual stream d_{k+1} = d_k + s f_k(x_k) with
d_0 = s x_0, and y = alpha x_K + LN_final(d_K) at the top of each stack. Each stack's output is recomputed
here from its own sub-modules with torch's layer_norm, by those equations, with alpha and s off their
defaults."""

import argparse

import pytest
import torch

from fairseq_entry import build_model
from layer_norms import ln, randomize_norms
from normpos_fairseq.schemes import get_scheme

N, M = 2, 2
TINY = ["--encoder-layers", str(N), "--decoder-layers", str(M), "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
ALPHA, S = 0.5, 0.3


def build(dict_dir, *extra, seed=1):
    return build_model(dict_dir, "--arch", "normpos_iwslt_de_en_residual", *TINY, *extra, seed=seed).eval()


def batch():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 96, (2, 7), generator=g)
    src[0, :2] = 1  # left padding
    return src, torch.tensor([5, 7]), torch.randint(4, 96, (2, 5), generator=g)


def run_streams(x0, sublayers, alpha, s, final):
    """x_{k+1} = LN_k(x_k + f_k(x_k)), d_{k+1} = d_k + s f_k(x_k), d_0 = s x_0; y = alpha x_K + LN_final(d_K)."""
    x, d = x0, s * x0
    for f, norm in sublayers:
        fx = f(x)
        d = d + s * fx
        x = ln(norm, x + fx)
    return alpha * x + ln(final, d)


def ffn(layer):
    return lambda h: layer.fc2(torch.relu(layer.fc1(h)))


def attention(attn, memory=None, **kwargs):
    """h -> attn(h) as a sub-layer f_k: self-attention over h, or cross-attention over ``memory``."""
    return lambda h: attn(query=h, key=h if memory is None else memory, value=h if memory is None else memory,
                          **kwargs)[0]


def off_default_model_and_batch(dict_dir):
    """A model with alpha, s and every LayerNorm off their defaults, and a batch (source, lengths, target)."""
    model = build(dict_dir, "--residual-alpha", str(ALPHA), "--residual-scale", str(S))
    randomize_norms(model)
    return (model, *batch())


def test_encoder_output_is_alpha_x_plus_ln_of_the_dual_stream(dict_dir):
    model, src, lengths, _ = off_default_model_and_batch(dict_dir)
    enc = model.encoder
    with torch.no_grad():
        got = enc(src, src_lengths=lengths)["encoder_out"][0]
        pad = src.eq(enc.padding_idx)
        x0 = enc.forward_embedding(src)[0]
        x0 = (x0 * (1 - pad.unsqueeze(-1).type_as(x0))).transpose(0, 1)  # fairseq zeroes padded positions
        sublayers = []
        for layer in enc.layers:
            sublayers += [(attention(layer.self_attn, key_padding_mask=pad), layer.self_attn_layer_norm),
                          (ffn(layer), layer.final_layer_norm)]
        want = run_streams(x0, sublayers, ALPHA, S, enc.layer_norm.norm)
        post_ln = run_streams(x0, sublayers, 1.0, 0.0, enc.layer_norm.norm) - ln(enc.layer_norm.norm, 0 * x0)
    keep = ~pad.t()  # padded positions are never read
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[keep], post_ln[keep], atol=1e-3)


def test_decoder_features_are_alpha_x_plus_ln_of_the_dual_stream(dict_dir):
    """Three sub-layers per decoder layer feed both streams: self-attention (causal), cross-attention, FFN."""
    model, src, lengths, prev = off_default_model_and_batch(dict_dir)
    dec = model.decoder
    with torch.no_grad():
        enc_out = model.encoder(src, src_lengths=lengths)
        got = dec.extract_features(prev, encoder_out=enc_out)[0]
        enc, enc_pad = enc_out["encoder_out"][0], enc_out["encoder_padding_mask"][0]
        x0 = (dec.embed_scale * dec.embed_tokens(prev) + dec.embed_positions(prev)).transpose(0, 1)
        causal = dec.buffered_future_mask(x0)
        sublayers = []
        for layer in dec.layers:
            sublayers += [(attention(layer.self_attn, attn_mask=causal), layer.self_attn_layer_norm),
                          (attention(layer.encoder_attn, enc, key_padding_mask=enc_pad, static_kv=True),
                           layer.encoder_attn_layer_norm),
                          (ffn(layer), layer.final_layer_norm)]
        want = run_streams(x0, sublayers, ALPHA, S, dec.layer_norm.norm).transpose(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_layers_are_post_ln_and_the_final_norm_has_eps_1e_7(dict_dir):
    model = build(dict_dir)
    for stack in (model.encoder, model.decoder):
        assert stack.layer_norm.norm.eps == 1e-7 and stack.layer_norm.alpha == 1.0
        assert all(not layer.normalize_before for layer in stack.layers)
        assert {j.scale for layer in stack.layers for j in layer.residuals.values()} == {1.0}
    # Post-LN's parameters plus one final LayerNorm per stack
    post = set(build_model(dict_dir, "--arch", "normpos_iwslt_de_en_post_ln", *TINY).state_dict())
    extra = set(model.state_dict()) - post
    assert post <= set(model.state_dict())
    assert extra == {f"{s}.layer_norm.norm.{p}" for s in ("encoder", "decoder") for p in ("weight", "bias")}


@pytest.mark.parametrize("option, value, message", [
    ("residual_scale", 0.0, r"^--residual-scale must be > 0, got 0$"),
    ("residual_alpha", -1.0, r"^--residual-alpha must be >= 0, got -1$"),
])
def test_bad_values_are_one_line(option, value, message):
    with pytest.raises(ValueError, match=message):
        get_scheme("residual").configure(argparse.Namespace(**{option: value}))
