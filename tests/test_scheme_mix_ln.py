"""Mix-LN (Li, Yin & Liu 2025, arXiv:2412.13795), built through fairseq-train's entry point: the first
floor(alpha L) layers of each stack Post-LN, the rest Pre-LN, the final LayerNorm kept. Layers of both stacks
recomputed by the two equations with torch's layer_norm; the Post-LN layers compared with fairseq's own Post-LN
layer, and floor(alpha L) = 0 with fairseq's own Pre-LN model."""

import pytest
import torch

from layer_by_hand import assert_layer_follows, build, incremental_and_full, inputs, layer_output, ln, randomize_norms


def post_step(sub, norm, x, f):
    return ln(norm, x + f(x))


def pre_step(sub, norm, x, f):
    return x + f(ln(norm, x))


def positions(model):
    return {stack: [layer.normalize_before for layer in getattr(model, stack).layers]
            for stack in ("encoder", "decoder")}


@pytest.mark.parametrize("extra, post_encoder, post_decoder", [
    ((), 1, 0),                                # default 0.25: floor(1.0) of 4, floor(0.75) of 3
    (("--mix-ln-fraction", "0.5"), 2, 1),      # floor(2.0), floor(1.5)
    (("--mix-ln-fraction", "0.34"), 1, 1),     # floor(1.36), floor(1.02)
    (("--mix-ln-fraction", "1"), 4, 3),
    (("--mix-ln-fraction", "0"), 0, 0),
])
def test_the_first_floor_alpha_l_layers_of_each_stack_are_post_ln(dict_dir, extra, post_encoder, post_decoder):
    model = build(dict_dir, "mix_ln", *extra)
    assert positions(model) == {"encoder": [False] * post_encoder + [True] * (4 - post_encoder),
                                "decoder": [False] * post_decoder + [True] * (3 - post_decoder)}
    assert model.encoder.layer_norm is not None and model.decoder.layer_norm is not None  # final norm kept


@pytest.mark.parametrize("stack, index, step", [("encoder", 0, post_step), ("encoder", 1, post_step),
                                                ("encoder", 2, pre_step), ("decoder", 0, post_step),
                                                ("decoder", 2, pre_step)])
def test_layer_follows_its_equation(dict_dir, stack, index, step):
    """alpha 0.5: encoder layers 0-1 and decoder layer 0 are LN(x + F(x)), the others x + F(LN(x))."""
    other = pre_step if step is post_step else post_step  # the comparison can fail
    assert_layer_follows(build(dict_dir, "mix_ln", "--mix-ln-fraction", "0.5"), stack, index, step, other, seed=3)


def test_post_ln_layers_equal_fairseqs_post_ln_layers(dict_dir):
    """alpha 1 and Post-LN, same seed: the same weights, and each layer of both stacks computes what fairseq's
    Post-LN layer computes, bit for bit; only the final LayerNorm on top differs."""
    mix, post = build(dict_dir, "mix_ln", "--mix-ln-fraction", "1", seed=6), build(dict_dir, "post_ln", seed=6)
    ours, theirs = mix.state_dict(), post.state_dict()
    finals = {f"{stack}.layer_norm.{p}" for stack in ("encoder", "decoder") for p in ("weight", "bias")}
    assert set(ours) - set(theirs) == finals
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    x, enc = inputs(4)
    for stack, cross in (("encoder", None), ("decoder", enc)):
        for a, b in zip(getattr(mix, stack).layers, getattr(post, stack).layers):
            assert torch.equal(layer_output(a, x, cross), layer_output(b, x, cross))


def test_floor_zero_is_pre_ln_exactly(dict_dir):
    """alpha 0.2: floor(0.8) = floor(0.6) = 0 Post-LN layers, and the model is fairseq's Pre-LN weight for
    weight and output for output, in training mode with dropout too; alpha 0.5 on the same weights is not."""
    pre = build(dict_dir, "pre_ln", seed=7)
    zero = build(dict_dir, "mix_ln", "--mix-ln-fraction", "0.2", seed=7)
    half = build(dict_dir, "mix_ln", "--mix-ln-fraction", "0.5", seed=7)
    a, b = pre.state_dict(), zero.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)

    def logits(model):
        model.train()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            g = torch.Generator().manual_seed(0)
            return model(torch.randint(4, 96, (2, 7), generator=g), torch.full((2,), 7),
                         torch.randint(4, 96, (2, 5), generator=g))[0]

    assert torch.equal(logits(zero), logits(pre))
    assert not torch.allclose(logits(half), logits(pre), atol=1e-3)


def test_incremental_decoding_matches_full_forward(dict_dir):
    model = build(dict_dir, "mix_ln", "--mix-ln-fraction", "0.5")
    randomize_norms(model)
    steps, full = incremental_and_full(model)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value", ["1.5", "-0.25"])
def test_a_fraction_outside_0_1_is_one_line(dict_dir, value):
    with pytest.raises(ValueError, match=rf"^--mix-ln-fraction must be between 0 and 1, got {value}$"):
        build(dict_dir, "mix_ln", "--mix-ln-fraction", value)
