"""DeepNorm (Wang et al. 2022, arXiv:2203.00555), built through fairseq-train's entry point: each residual
join is alpha * x + G(x) followed by its LayerNorm, with Table 1's encoder-decoder alpha, and fc1/fc2/v/out
start at beta times their init (torchscale) or at Xavier-normal gain beta (the paper's Fig. 2)."""

import math

import pytest
import torch

from fairseq_entry import build_model
from sublayer_io import sublayer_io

TINY = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
DEPTHS = [(6, 6), (12, 4)]
SCALED = ("fc1", "fc2", "self_attn.v_proj", "self_attn.out_proj", "encoder_attn.v_proj", "encoder_attn.out_proj")
KEPT = ("self_attn.q_proj", "self_attn.k_proj", "encoder_attn.q_proj", "encoder_attn.k_proj")


def table1(n, m):
    """Wang et al. 2022, Table 1, encoder-decoder: {stack: (alpha, beta)}."""
    return {"encoder": (0.81 * (n ** 4 * m) ** (1 / 16), 0.87 * (n ** 4 * m) ** (-1 / 16)),
            "decoder": ((3 * m) ** 0.25, (12 * m) ** -0.25)}


def build(dict_dir, scheme, n, m, *extra):
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY,
                       "--encoder-layers", str(n), "--decoder-layers", str(m), *extra)


def linears(layer, names):
    for name in names:
        owner, _, attr = name.rpartition(".")
        module = getattr(layer, owner, None) if owner else layer  # encoder layers have no encoder_attn
        if module is not None:
            yield name, getattr(module, attr)


def stacks(model):
    return {"encoder": model.encoder.layers, "decoder": model.decoder.layers}


@pytest.mark.parametrize("n, m", DEPTHS)
def test_alpha_of_every_residual_join_is_table1(dict_dir, n, m):
    model = build(dict_dir, "deepnorm", n, m)
    want = table1(n, m)
    for stack, layers in stacks(model).items():
        assert len(layers) == (n if stack == "encoder" else m)
        for layer in layers:
            subs = ("self_attn", "ffn") if stack == "encoder" else ("self_attn", "encoder_attn", "ffn")
            assert tuple(layer.residuals) == subs
            for sub in subs:
                assert layer.residuals[sub].alpha == pytest.approx(want[stack][0], rel=1e-12), (stack, sub)
    # the numbers themselves, for one depth (6-6: encoder 0.81 * 6^(5/16), decoder 18^(1/4))
    if (n, m) == (6, 6):
        assert model.encoder.layers[0].residuals["ffn"].alpha == pytest.approx(1.4179, abs=1e-4)
        assert model.decoder.layers[0].residuals["ffn"].alpha == pytest.approx(2.0598, abs=1e-4)


def test_layernorm_follows_each_scaled_residual(dict_dir):
    """Post-LN: the input of every sub-layer's LayerNorm is alpha * (sub-layer input) + (sub-layer output),
    and there is no final LayerNorm on either stack."""
    n, m = 3, 2
    model = build(dict_dir, "deepnorm", n, m).eval()
    want = table1(n, m)
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None
    for stack, layers in stacks(model).items():
        assert not any(layer.normalize_before for layer in layers)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), sublayer_io(model) as seen:
        model(torch.randint(4, 96, (2, 7), generator=g), torch.full((2,), 7), torch.randint(4, 96, (2, 5), generator=g))
    assert len(seen) == 2 * n + 3 * m
    for (stack, i, sub), t in seen.items():
        alpha = want[stack][0]
        torch.testing.assert_close(t["norm_input"], alpha * t["input"] + t["output"], rtol=1e-5, atol=1e-5)
        # and not the plain residual sum of Post-LN
        assert not torch.allclose(t["norm_input"], t["input"] + t["output"], atol=1e-3)


@pytest.mark.parametrize("n, m", DEPTHS)
def test_torchscale_init_is_beta_times_the_built_init(dict_dir, n, m):
    """Same seed, same build: DeepNorm's fc1/fc2/v_proj/out_proj (weights and biases) = beta x Post-LN's,
    q/k untouched; beta is the encoder's for the encoder, the decoder's for decoder self- and cross-attention."""
    want = table1(n, m)
    for ffn_init in ("xavier", "torch_default"):
        post = build(dict_dir, "post_ln", n, m, "--ffn-init", ffn_init)
        deep = build(dict_dir, "deepnorm", n, m, "--ffn-init", ffn_init)
        for stack in ("encoder", "decoder"):
            beta = want[stack][1]
            for lp, ld in zip(stacks(post)[stack], stacks(deep)[stack]):
                for (name, a), (_, b) in zip(linears(lp, SCALED), linears(ld, SCALED)):
                    torch.testing.assert_close(b.weight, beta * a.weight, rtol=1e-6, atol=0, msg=name)
                    torch.testing.assert_close(b.bias, beta * a.bias, rtol=1e-6, atol=0, msg=name)
                for (name, a), (_, b) in zip(linears(lp, KEPT), linears(ld, KEPT)):
                    assert torch.equal(a.weight, b.weight), name


def pooled_std(layers, name):
    return torch.cat([lin.weight.flatten() for layer in layers for _, lin in linears(layer, [name])]).std().item()


def xavier(fan_in, fan_out, gain=1.0):
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


@pytest.mark.parametrize("n, m", DEPTHS)
def test_init_std_matches_the_formula(dict_dir, n, m):
    """Weight std pooled over a stack's layers (d 32, FFN 64): torchscale scaling of fairseq's Xavier-uniform
    (v_proj has fairseq's gain 1/sqrt 2) with --ffn-init xavier, and the paper's Xavier-normal gain beta.
    The FFN std being beta times Xavier also shows the scaling ran after --ffn-init."""
    want = table1(n, m)
    d, f = 32, 64
    for mode in ("torchscale", "paper"):
        model = build(dict_dir, "deepnorm", n, m, "--deepnorm-init", mode, "--ffn-init", "xavier")
        v_gain = 1 / math.sqrt(2) if mode == "torchscale" else 1.0
        qk_gain = 1 / math.sqrt(2) if mode == "torchscale" else 1.0
        for stack, layers in stacks(model).items():
            beta = want[stack][1]
            expect = {"fc1": beta * xavier(d, f), "fc2": beta * xavier(f, d),
                      "self_attn.v_proj": beta * v_gain * xavier(d, d), "self_attn.out_proj": beta * xavier(d, d),
                      "self_attn.q_proj": qk_gain * xavier(d, d), "self_attn.k_proj": qk_gain * xavier(d, d)}
            if stack == "decoder":
                expect.update({"encoder_attn.v_proj": beta * v_gain * xavier(d, d),
                               "encoder_attn.out_proj": beta * xavier(d, d)})
            for name, std in expect.items():
                assert pooled_std(layers, name) == pytest.approx(std, rel=0.06), (mode, stack, name)


def test_deepnorm_refuses_normalize_before(dict_dir):
    with pytest.raises(ValueError, match="Post-LN"):
        build(dict_dir, "deepnorm", 2, 2, "--encoder-normalize-before")
