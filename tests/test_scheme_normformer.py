"""NormFormer (Shleifer et al. 2021, arXiv:2110.09456), built through fairseq-train's entry point: Pre-LN plus
a LayerNorm on each self-attention output, a learned scale per attention head (before W^O) and a LayerNorm
after the FFN activation, in every layer of both stacks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from fairseq_entry import build_model
from layer_by_hand import incremental_and_full
from normpos_fairseq.schemes.normformer import NormInput, NormOutput, ScaledResidual, head_scale

D, FFN, HEADS = 32, 64, 2
TINY = ("--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D), "--encoder-ffn-embed-dim", str(FFN),
        "--decoder-ffn-embed-dim", str(FFN), "--encoder-attention-heads", str(HEADS),
        "--decoder-attention-heads", str(HEADS), "--encoder-layers", "3", "--decoder-layers", "2")


def build(dict_dir, *extra, scheme="normformer", seed=1):
    model = build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY, *extra, seed=seed)
    model.eval()  # no dropout: the comparisons below are exact
    return model


def layers(model):
    return [("encoder", layer) for layer in model.encoder.layers] + [
        ("decoder", layer) for layer in model.decoder.layers
    ]


def extra_norms(layer):
    return [m for m in (layer.self_attn_out_layer_norm, layer.ffn_layer_norm,
                        getattr(layer, "encoder_attn_out_layer_norm", None)) if m is not None]


def randomize_extras(model, seed=0):
    """Move every NormFormer parameter away from its init, so that a test sees each one act."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in layers(model):
            for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                if attn is not None and parametrize.is_parametrized(attn.out_proj):
                    head_scale(attn).copy_(0.5 + 2 * torch.rand(HEADS, generator=g))
            for norm in extra_norms(layer):
                norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
                norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=g))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 96, (3, 7), generator=g), torch.full((3,), 7), torch.randint(4, 96, (3, 5), generator=g)


def forward(model, seed=0):
    src, lengths, prev = batch(seed)
    with torch.no_grad():
        return model(src, lengths, prev)[0]


# --- a hand-written multi-head attention, to check fairseq's module plus the head scales against ---

def heads_by_hand(attn, query, key):
    """Each head's output softmax(q_i k_i^T / sqrt(d_h)) v_i, as (T, B, H, d_h); no masks."""
    T, B, _ = query.shape
    S, H, dh = key.shape[0], attn.num_heads, attn.head_dim
    q = (attn.q_proj(query) * dh ** -0.5).view(T, B, H, dh)
    k = attn.k_proj(key).view(S, B, H, dh)
    v = attn.v_proj(key).view(S, B, H, dh)
    weights = torch.einsum("tbhd,sbhd->bhts", q, k).softmax(-1)
    return torch.einsum("bhts,sbhd->tbhd", weights, v)


def head_contributions(attn, heads):
    """head_i W^O_i (W^O's input columns of head i, unscaled), as (H, T, B, d)."""
    w = attn.out_proj.parametrizations.weight.original  # W^O itself; out_proj.weight is W^O diag(gamma)
    w = w.view(w.shape[0], attn.num_heads, attn.head_dim)
    return torch.einsum("tbhd,ohd->htbo", heads, w)


def mha_by_hand(attn, query, key, scaled=True):
    """HeadScaleMHA = Concat(gamma_1 head_1, ..., gamma_n head_n) W^O + b^O (NormFormer sec. 2)."""
    contrib = head_contributions(attn, heads_by_hand(attn, query, key))
    gamma = head_scale(attn) if scaled else torch.ones(attn.num_heads)
    return torch.einsum("htbo,h->tbo", contrib, gamma) + attn.out_proj.bias


def ln(norm, x):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def ffn_by_hand(layer, y):
    """y + LN_ffn(relu(LN(y) W_1 + b_1)) W_2 + b_2."""
    hidden = F.relu(layer.fc1(ln(layer.final_layer_norm, y)))
    return y + F.linear(ln(layer.ffn_layer_norm, hidden), layer.fc2.weight, layer.fc2.bias)


# --- tests ---

@pytest.mark.parametrize("cross", [False, True], ids=["self-attn-only", "cross-attn"])
def test_every_layer_of_both_stacks_has_the_extras(dict_dir, cross):
    model = build(dict_dir, *(["--normformer-cross-attn"] if cross else []))
    assert len(model.encoder.layers) == 3 and len(model.decoder.layers) == 2
    params = {id(p) for p in model.parameters()}
    for side, layer in layers(model):
        # Pre-LN underneath (sec. 2)
        assert layer.normalize_before, side
        assert isinstance(layer.self_attn_out_layer_norm, nn.LayerNorm), side
        assert layer.self_attn_out_layer_norm.normalized_shape == (D,)
        assert isinstance(layer.ffn_layer_norm, nn.LayerNorm) and layer.ffn_layer_norm.normalized_shape == (FFN,)
        gamma = head_scale(layer.self_attn)
        assert torch.equal(gamma, torch.ones(HEADS)), side  # gamma initialised to 1
        assert gamma.requires_grad and id(gamma) in params
        # fc1/fc2 stay plain Linear layers with their own weight (the theory tool reads fc2.weight)
        assert type(layer.fc2) is nn.Linear and isinstance(layer.fc2.weight, nn.Parameter)
        if side == "decoder":
            assert parametrize.is_parametrized(layer.encoder_attn.out_proj) is cross
            assert hasattr(layer, "encoder_attn_out_layer_norm") is cross
            if cross:
                assert torch.equal(head_scale(layer.encoder_attn), torch.ones(HEADS))
    for stack in (model.encoder, model.decoder):
        assert stack.layer_norm is not None  # Pre-LN's final LayerNorm


@pytest.mark.parametrize("stack, incremental", [("encoder", False), ("decoder", False), ("decoder", True)],
                         ids=["encoder", "decoder-training-path", "decoder-beam-search-path"])
def test_head_scale_multiplies_one_heads_output_before_out_proj(dict_dir, stack, incremental):
    """fairseq's attention runs torch's fused path in training and its own code in beam search; both scale
    head i's output by gamma_i before W^O, and changing gamma_1 moves the output by (gamma_1 - 1) head_1 W^O_1."""
    model = build(dict_dir)
    attn = getattr(model, stack).layers[0].self_attn
    x = torch.randn(5, 3, D, generator=torch.Generator().manual_seed(1))
    raw = []  # the attention output before NormFormer's post-attention LayerNorm hook
    attn.register_forward_hook(lambda m, a, out: raw.append(out[0]), prepend=True)

    def run():
        kwargs = {"incremental_state": {}} if incremental else {}
        with torch.no_grad():
            return attn(query=x, key=x, value=x, **kwargs)[0]

    out_ones = run()
    with torch.no_grad():
        head_scale(attn).copy_(torch.tensor([1.0, 3.0]))
    run()
    with torch.no_grad():
        contrib = head_contributions(attn, heads_by_hand(attn, x, x))
        torch.testing.assert_close(raw[1], mha_by_hand(attn, x, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(raw[1] - raw[0], 2.0 * contrib[1], atol=1e-5, rtol=1e-5)
        # and the module's output is the LayerNorm of it (weight 1, bias 0 at init)
        torch.testing.assert_close(out_ones, F.layer_norm(raw[0], (D,)), atol=1e-5, rtol=1e-5)


def test_encoder_layer_is_normformer(dict_dir):
    """x -> y = x + LN_a(HeadScaleMHA(LN(x))) -> y + LN_f(relu(LN(y) W1 + b1)) W2 + b2, all extras off init."""
    model = build(dict_dir)
    randomize_extras(model)
    layer = model.encoder.layers[1]
    x = torch.randn(6, 2, D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = layer.self_attn_layer_norm(x)
        y = x + ln(layer.self_attn_out_layer_norm, mha_by_hand(layer.self_attn, h, h))
        expected = ffn_by_hand(layer, y)
        torch.testing.assert_close(layer(x, None), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cross", [False, True], ids=["self-attn-only", "cross-attn"])
def test_decoder_layer_is_normformer(dict_dir, cross):
    """Same, with the cross-attention sub-layer plain Pre-LN unless --normformer-cross-attn (then LN + gamma)."""
    model = build(dict_dir, *(["--normformer-cross-attn"] if cross else []))
    randomize_extras(model)
    layer = model.decoder.layers[1]
    g = torch.Generator().manual_seed(3)
    x, enc = torch.randn(4, 2, D, generator=g), torch.randn(6, 2, D, generator=g)
    with torch.no_grad():
        h = layer.self_attn_layer_norm(x)
        y = x + ln(layer.self_attn_out_layer_norm, mha_by_hand(layer.self_attn, h, h))
        h = layer.encoder_attn_layer_norm(y)
        if cross:
            y = y + ln(layer.encoder_attn_out_layer_norm, mha_by_hand(layer.encoder_attn, h, enc))
        else:
            y = y + layer.encoder_attn(query=h, key=enc, value=enc, static_kv=True)[0]
        expected = ffn_by_hand(layer, y)
        out = layer(x, enc, None)[0]  # no self-attention mask: the masks are fairseq's, not under test
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_ffn_layernorm_makes_the_ffn_blind_to_the_scale_of_its_hidden_layer(dict_dir):
    """LN(c h) = LN(h): scaling every fc1 by 3 leaves NormFormer's output as it was, not Pre-LN's."""
    outputs = {}
    for scheme in ("normformer", "pre_ln"):
        model = build(dict_dir, scheme=scheme, seed=4)
        before = forward(model)
        with torch.no_grad():
            for _, layer in layers(model):
                layer.fc1.weight.mul_(3.0)
                layer.fc1.bias.mul_(3.0)  # relu(3 a) = 3 relu(a)
        outputs[scheme] = (before, forward(model))
    nf_before, nf_after = outputs["normformer"]
    torch.testing.assert_close(nf_after, nf_before, atol=1e-3, rtol=1e-3)  # up to LayerNorm's eps
    pre_before, pre_after = outputs["pre_ln"]
    assert (pre_after - pre_before).abs().max() > 0.1


def test_ffn_layernorm_is_what_fc2_sees(dict_dir):
    """In every layer of both stacks fc2's input is LN_ffn(relu(fc1 output)), with LN_ffn's own weight and bias."""
    model = build(dict_dir)
    randomize_extras(model)
    seen = {"fc1": [], "fc2": []}
    for _, layer in layers(model):
        layer.fc1.register_forward_hook(lambda m, a, out: seen["fc1"].append(out))
        layer.fc2.register_forward_hook(lambda m, a, out: seen["fc2"].append(a[0]))  # runs after the pre-hooks
    forward(model)
    assert len(seen["fc2"]) == len(layers(model))
    for (_, layer), hidden, fc2_in in zip(layers(model), seen["fc1"], seen["fc2"]):
        torch.testing.assert_close(fc2_in, ln(layer.ffn_layer_norm, F.relu(hidden)), atol=1e-5, rtol=1e-5)
        assert (fc2_in - F.relu(hidden)).abs().max() > 0.1


def test_without_its_extras_normformer_is_pre_ln(dict_dir):
    """Same seed: the same base weights as Pre-LN (the extras draw no random numbers), and once the three
    extras are taken out, the same output."""
    nf = build(dict_dir, seed=7)
    pre = build(dict_dir, scheme="pre_ln", seed=7)
    extras = (".parametrizations.weight.0.scale", "self_attn_out_layer_norm.", "ffn_layer_norm.")
    base = {k.replace(".parametrizations.weight.original", ".weight"): v for k, v in nf.state_dict().items()
            if not any(e in k for e in extras)}
    assert base.keys() == pre.state_dict().keys()
    for key, value in pre.state_dict().items():
        assert torch.equal(base[key], value), key
    assert (forward(nf) - forward(pre)).abs().max() > 1e-2  # the extras do something
    randomize_extras(nf)
    for _, layer in layers(nf):
        parametrize.remove_parametrizations(layer.self_attn.out_proj, "weight", leave_parametrized=False)
        for module in (layer.self_attn, layer.fc2):
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for key in [k for k, h in hooks.items() if isinstance(h, (NormOutput, NormInput))]:
                    del hooks[key]
    torch.testing.assert_close(forward(nf), forward(pre), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cross", [False, True], ids=["self-attn-only", "cross-attn"])
def test_incremental_decoding_matches_full_forward(dict_dir, cross):
    """Beam search feeds one token at a time through fairseq's own attention code (not the fused path
    training uses): with every extra moved off its init, each step gives the full forward's output."""
    model = build(dict_dir, *(["--normformer-cross-attn"] if cross else []))
    randomize_extras(model)
    steps, full = incremental_and_full(model)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_extras_survive_save_and_load(dict_dir, tmp_path):
    model = build(dict_dir, "--normformer-cross-attn", "--normformer-scale-resids", seed=1)
    randomize_extras(model)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    other = build(dict_dir, "--normformer-cross-attn", "--normformer-scale-resids", seed=2)
    assert (forward(other) - forward(model)).abs().max() > 1e-3
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    torch.testing.assert_close(forward(other), forward(model), atol=0, rtol=0)
    layer = other.decoder.layers[0]
    assert torch.equal(head_scale(layer.self_attn), head_scale(model.decoder.layers[0].self_attn))
    assert not torch.equal(head_scale(layer.encoder_attn), torch.ones(HEADS))


def test_scale_resids_scales_the_ffn_residual(dict_dir):
    """--normformer-scale-resids: x = lambda (.) y + FFN(LN(y)) in the FFN sub-layer, lambda init 1;
    the attention residuals stay plain."""
    assert not any(isinstance(m, ScaledResidual) for m in build(dict_dir).modules())
    model = build(dict_dir, "--normformer-scale-resids")
    for side, layer in layers(model):
        assert isinstance(layer.residuals["ffn"], ScaledResidual), side
        assert torch.equal(layer.residuals["ffn"].weight, torch.ones(D))
        assert not any(isinstance(layer.residuals[s], ScaledResidual) for s in layer.residuals if s != "ffn")
    layer = model.encoder.layers[2]
    y = []  # the FFN sub-layer's residual: the input of its (Pre-LN) LayerNorm
    layer.final_layer_norm.register_forward_pre_hook(lambda m, a: y.append(a[0]))
    x = torch.randn(5, 2, D, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out_one = layer(x, None)
        layer.residuals["ffn"].weight.fill_(0.25)
        out_quarter = layer(x, None)
    torch.testing.assert_close(out_one - out_quarter, 0.75 * y[0], atol=1e-5, rtol=1e-5)
