"""xSkip+LN (Liu et al. 2020, COLING, arXiv:2105.07205), built through fairseq-train's entry point: every
sub-layer is joined as LN(lambda x + F(x)) with one constant lambda; lambda = 1 is Post-LN weight for weight."""

import pytest
import torch

from fairseq_entry import build_model
from sublayer_io import sublayer_io

N, M = 2, 3  # encoder and decoder depths differ on purpose
TINY = ["--encoder-layers", str(N), "--decoder-layers", str(M), "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--dropout", "0.2"]


def build(dict_dir, scheme, *extra):
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY, *extra)


def batch():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 96, (2, 7), generator=g)
    src[0, :2] = 1  # left padding, so that the padding masks take part
    return src, torch.tensor([5, 7]), torch.randint(4, 96, (2, 5), generator=g)


def logits(model, train: bool):
    model.train(train)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)  # the same dropout masks for every model
        return model(*batch())[0]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_with_dropout"])
def test_lambda_one_is_post_ln_weight_for_weight(dict_dir, train):
    post = build(dict_dir, "post_ln")
    one = build(dict_dir, "xskip_ln", "--xskip-lambda", "1")
    a, b = post.state_dict(), one.state_dict()
    assert list(a) == list(b)  # no parameter added, none renamed
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(logits(post, train), logits(one, train))
    # the comparison can fail: the default lambda computes something else from the same weights
    default = build(dict_dir, "xskip_ln")
    default.load_state_dict(a)
    assert not torch.allclose(logits(default, train), logits(post, train), atol=1e-3)


@pytest.mark.parametrize("lam", [None, "0.5", "3"], ids=["default", "0.5", "3"])
def test_layernorm_input_is_lambda_times_input_plus_output(dict_dir, lam):
    """Each sub-layer's LayerNorm sees lambda * (its input) + (its output); no final LayerNorm."""
    model = build(dict_dir, "xskip_ln", *(["--xskip-lambda", lam] if lam else [])).eval()
    want = 2.0 if lam is None else float(lam)  # the documented default
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None
    assert {j.alpha for layer in [*model.encoder.layers, *model.decoder.layers] for j in layer.residuals.values()} == {want}
    with torch.no_grad(), sublayer_io(model) as seen:
        model(*batch())
    assert len(seen) == 2 * N + 3 * M
    for key, t in seen.items():
        torch.testing.assert_close(t["norm_input"], want * t["input"] + t["output"], rtol=1e-5, atol=1e-5, msg=str(key))
        assert not torch.allclose(t["norm_input"], t["input"] + t["output"], atol=1e-3), key


@pytest.mark.parametrize("extra, message", [
    (["--encoder-normalize-before"], "Post-LN"),
    (["--xskip-lambda", "0"], "must be > 0"),
])
def test_refused_options(dict_dir, extra, message):
    with pytest.raises(ValueError, match=message):
        build(dict_dir, "xskip_ln", *extra)
