"""HybridNorm (Zhuo et al. 2025, arXiv:2503.04598), built through fairseq-train's entry point: attention with
per-head norms on Q, K and V, Y = X + Attn(X), Z = Norm(Y), X' = Z + FFN(Z), a final norm per stack, and
HybridNorm* (first layer Pre-Norm). Layers are recomputed here with a hand-written attention (not fairseq's
module) and torch's layer_norm, by the paper's equations; fairseq's attention takes a fused torch path in
training and its own code in beam search, and both must apply the Q/K/V norms."""

import pytest
import torch
import torch.nn.functional as F

from fairseq_entry import build_model
from layer_norms import ln, randomize_norms

D, HEADS, DH = 32, 2, 16
TINY = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", str(D),
        "--decoder-embed-dim", str(D), "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", str(HEADS), "--decoder-attention-heads", str(HEADS)]


def build(dict_dir, *extra, seed=1):
    model = build_model(dict_dir, "--arch", "normpos_iwslt_de_en_hybridnorm", *TINY, *extra, seed=seed).eval()
    randomize_norms(model)  # the per-head norms included, so that each one shows
    return model


def qkv_attention(attn, query, key, pad=None):
    """softmax(N_q(Q_i) N_k(K_i)^T / sqrt(d_h)) N_v(V_i) per head i, concatenated, times W^O (+ b^O)."""
    T, B, _ = query.shape
    S = key.shape[0]
    q = ln(attn.q_norm.norm, F.linear(query, attn.q_proj.weight, attn.q_proj.bias).view(T, B, HEADS, DH))
    k = ln(attn.k_norm.norm, F.linear(key, attn.k_proj.weight, attn.k_proj.bias).view(S, B, HEADS, DH))
    v = ln(attn.v_norm.norm, F.linear(key, attn.v_proj.weight, attn.v_proj.bias).view(S, B, HEADS, DH))
    scores = torch.einsum("tbhd,sbhd->bhts", q, k) / DH ** 0.5
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    heads = torch.einsum("bhts,sbhd->tbhd", scores.softmax(-1), v).reshape(T, B, D)
    return F.linear(heads, attn.out_proj.weight, attn.out_proj.bias)


def ffn(layer, h):
    return F.linear(torch.relu(F.linear(h, layer.fc1.weight, layer.fc1.bias)), layer.fc2.weight, layer.fc2.bias)


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    x, enc = torch.randn(6, 3, D, generator=g), torch.randn(7, 3, D, generator=g)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, :2] = True
    return x, enc, pad


def test_encoder_layer_is_hybridnorm(dict_dir):
    """Y = X + Attn_QKV(X); Z = LN(Y); X' = Z + FFN(Z) (training's path: no incremental state)."""
    layer = build(dict_dir).encoder.layers[1]
    _, x, pad = inputs(1)
    with torch.no_grad():
        z = ln(layer.self_attn_layer_norm, x + qkv_attention(layer.self_attn, x, x, pad))
        want = z + ffn(layer, z)
        got = layer(x, pad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_decoder_layer_is_hybridnorm_with_qkv_norms_on_cross_attention(dict_dir):
    """Y_1 = X + SelfAttn_QKV(X); Y_2 = Y_1 + CrossAttn_QKV(Y_1, enc); Z = LN(Y_2); X' = Z + FFN(Z)."""
    layer = build(dict_dir).decoder.layers[1]
    x, enc, pad = inputs(2)
    with torch.no_grad():
        y1 = x + qkv_attention(layer.self_attn, x, x)
        z = ln(layer.encoder_attn_layer_norm, y1 + qkv_attention(layer.encoder_attn, y1, enc, pad))
        want = z + ffn(layer, z)
        got = layer(x, enc, pad)[0]  # no self-attention mask: fairseq's causal mask is not under test here
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_star_makes_the_first_layer_pre_norm_and_keeps_its_qkv_norms(dict_dir):
    """HybridNorm*: layer 0 is X + Attn_QKV(LN_a(X)), then + FFN(LN_f(.)); layer 1 stays HybridNorm."""
    model = build(dict_dir, "--hybridnorm-star")
    layer = model.encoder.layers[0]
    _, x, pad = inputs(3)
    with torch.no_grad():
        h = ln(layer.self_attn_layer_norm, x)
        y = x + qkv_attention(layer.self_attn, h, h, pad)
        want = y + ffn(layer, ln(layer.final_layer_norm, y))
        got = layer(x, pad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    plain = build(dict_dir)
    assert [lay.normalize_before for lay in model.decoder.layers] == [True, False]
    assert not any(lay.normalize_before for lay in plain.encoder.layers)
    # star adds the first layers' attention and FFN norms, nothing else
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"encoder.layers.0.final_layer_norm.weight", "encoder.layers.0.final_layer_norm.bias",
                     "decoder.layers.0.self_attn_layer_norm.weight", "decoder.layers.0.self_attn_layer_norm.bias",
                     "decoder.layers.0.final_layer_norm.weight", "decoder.layers.0.final_layer_norm.bias"}


def test_incremental_decoding_equals_the_full_forward_and_the_norms_act_in_both(dict_dir):
    """Beam search runs fairseq's own attention code one token at a time; the full forward runs the path
    training uses. Both give the same output, and changing the key norm's gain changes it."""
    model = build(dict_dir)
    g = torch.Generator().manual_seed(4)
    src, lengths, prev = torch.randint(4, 96, (2, 7), generator=g), torch.tensor([7, 7]), torch.randint(4, 96, (2, 5), generator=g)

    def full_and_steps():
        with torch.no_grad():
            enc = model.encoder(src, src_lengths=lengths)
            full = model.decoder(prev, encoder_out=enc)[0]
            state = {}
            steps = torch.cat([model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)[0]
                               for t in range(prev.shape[1])], dim=1)
        return full, steps

    full, steps = full_and_steps()
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for attn in (model.decoder.layers[0].self_attn, model.decoder.layers[0].encoder_attn):
            attn.k_norm.norm.weight.mul_(3.0)
    full3, steps3 = full_and_steps()
    assert (full3 - full).abs().max() > 1e-3 and (steps3 - steps).abs().max() > 1e-3
    torch.testing.assert_close(steps3, full3, rtol=1e-5, atol=1e-5)


def test_final_norms_and_identity_sites(dict_dir):
    model = build(dict_dir)
    assert model.encoder.layer_norm is not None and model.decoder.layer_norm is not None
    for layer in model.encoder.layers:
        assert isinstance(layer.final_layer_norm, torch.nn.Identity)
    for layer in model.decoder.layers:
        assert isinstance(layer.self_attn_layer_norm, torch.nn.Identity)
        assert isinstance(layer.final_layer_norm, torch.nn.Identity)
        assert type(layer.self_attn.q_proj) is torch.nn.Linear  # weights stay where init code looks for them
