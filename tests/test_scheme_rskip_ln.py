"""rSkip+LN (Liu et al. 2020, COLING, arXiv:2105.07205), built through fairseq-train's entry point:
y_1 = LN(x + F(x)), y_k = LN(x + y_{k-1}), output y_K. K = 1 is Post-LN weight for weight; a layer's output
equals the recursion computed by hand with torch's own layer_norm."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fairseq_entry import build_model
from layer_norms import padded_states, randomize_norms

N, M = 2, 2
TINY = ["--encoder-layers", str(N), "--decoder-layers", str(M), "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--dropout", "0.2"]
SUBS = {"encoder": ("self_attn", "ffn"), "decoder": ("self_attn", "encoder_attn", "ffn")}
NORMS = {"self_attn": "self_attn_layer_norm", "encoder_attn": "encoder_attn_layer_norm", "ffn": "final_layer_norm"}


def build(dict_dir, scheme, *extra, seed=1):
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY, *extra, seed=seed)


def batch():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 96, (2, 7), generator=g)
    src[0, :2] = 1  # left padding
    return src, torch.tensor([5, 7]), torch.randint(4, 96, (2, 5), generator=g)


def logits(model, train=False):
    model.train(train)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return model(*batch())[0]


@pytest.mark.parametrize("norms", ["shared", "separate"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_with_dropout"])
def test_depth_one_is_post_ln_weight_for_weight(dict_dir, norms, train):
    post = build(dict_dir, "post_ln")
    one = build(dict_dir, "rskip_ln", "--rskip-depth", "1", "--rskip-norms", norms)
    a, b = post.state_dict(), one.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(logits(post, train), logits(one, train))
    # the comparison can fail: K = 2 computes something else from the same weights
    two = build(dict_dir, "rskip_ln", "--rskip-norms", norms)
    two.load_state_dict(a, strict=norms == "shared")
    assert not torch.allclose(logits(two, train), logits(post, train), atol=1e-3)


def by_hand(layer, x, pad, depth, norms_of):
    """One encoder layer in eval mode, from its parts: fairseq's attention and FFN, torch's layer_norm."""
    def recursion(x, fx, sub):
        outer = getattr(layer, NORMS[sub])
        inner = norms_of(layer, sub)  # the K - 1 inner norms
        ln = lambda norm, v: F.layer_norm(v, (v.size(-1),), norm.weight, norm.bias, norm.eps)  # noqa: E731
        y = ln(inner[0] if depth > 1 else outer, x + fx)  # y_1
        for k in range(2, depth + 1):
            y = ln(outer if k == depth else inner[k - 1], x + y)  # y_k = LN(x + y_{k-1})
        return y

    attn = layer.self_attn(query=x, key=x, value=x, key_padding_mask=pad, need_weights=False)[0]
    y = recursion(x, attn, "self_attn")
    ffn = layer.fc2(torch.relu(layer.fc1(y)))
    return recursion(y, ffn, "ffn")


@pytest.mark.parametrize("norms", ["shared", "separate"])
@pytest.mark.parametrize("depth", [2, 3])
def test_layer_output_is_the_recursion_by_hand(dict_dir, norms, depth):
    model = build(dict_dir, "rskip_ln", "--rskip-depth", str(depth), "--rskip-norms", norms).eval()
    randomize_norms(model)
    layer = model.encoder.layers[0]
    if norms == "shared":
        norms_of = lambda layer, sub: [getattr(layer, NORMS[sub])] * (depth - 1)  # noqa: E731
    else:
        norms_of = lambda layer, sub: list(layer.residuals[sub].norms)  # noqa: E731
    x, pad = padded_states(seed=1)
    with torch.no_grad():
        got = layer(x, pad)
        want = by_hand(layer, x, pad, depth, norms_of)
        post_ln = by_hand(layer, x, pad, 1, norms_of)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, post_ln, atol=1e-3)


@pytest.mark.parametrize("depth", [2, 3])
def test_parameters_shared_adds_none_separate_adds_k_minus_1_norms(dict_dir, depth):
    post = set(build(dict_dir, "post_ln").state_dict())
    shared = set(build(dict_dir, "rskip_ln", "--rskip-depth", str(depth)).state_dict())
    separate = set(build(dict_dir, "rskip_ln", "--rskip-depth", str(depth), "--rskip-norms", "separate").state_dict())
    assert shared == post
    extra = separate - post
    want = {f"{stack}.layers.{i}.residuals.{sub}.norms.{k}.{p}"
            for stack, depth_of_stack in (("encoder", N), ("decoder", M)) for i in range(depth_of_stack)
            for sub in SUBS[stack] for k in range(depth - 1) for p in ("weight", "bias")}
    assert post <= separate and extra == want


def test_shared_norm_follows_loading_and_copying(dict_dir, tmp_path):
    """The inner recursions use the layer's LayerNorm itself: a loaded state_dict and a deep copy (EMA)
    carry it, and changing the copy's norm leaves the original alone."""
    model = build(dict_dir, "rskip_ln", "--rskip-depth", "3")
    randomize_norms(model)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = build(dict_dir, "rskip_ln", "--rskip-depth", "3", seed=2)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert torch.equal(logits(fresh), logits(model))
    twin = copy.deepcopy(model)
    before = logits(model)
    with torch.no_grad():
        twin.encoder.layers[0].self_attn_layer_norm.weight.mul_(2)
    assert torch.equal(logits(model), before)
    assert not torch.allclose(logits(twin), before, atol=1e-3)
    assert twin.encoder.layers[0].residuals["self_attn"]._norm(0) is twin.encoder.layers[0].self_attn_layer_norm


@pytest.mark.parametrize("extra, message", [
    (["--decoder-normalize-before"], "Post-LN"),
    (["--rskip-depth", "0"], "must be >= 1"),
])
def test_refused_options(dict_dir, extra, message):
    with pytest.raises(ValueError, match=message):
        build(dict_dir, "rskip_ln", *extra)
