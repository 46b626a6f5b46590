"""Peri-LN (Kim et al. 2025, arXiv:2502.02732), built through fairseq-train's entry point: x + LN_out(F(LN_in(x)))
for every sub-layer (cross-attention included) and each stack's final LayerNorm; one layer of each stack
recomputed by that equation with torch's layer_norm."""

import pytest
import torch
from torch import nn

from layer_by_hand import assert_layer_follows, build, incremental_and_full, ln, randomize_norms


def peri_step(layer):
    def step(sub, norm, x, f):
        return x + ln(layer.residuals[sub].norm, f(ln(norm, x)))
    return step


def pre_ln_step(sub, norm, x, f):
    return x + f(ln(norm, x))


def test_every_sub_layer_has_an_output_layernorm_and_the_rest_is_pre_ln(dict_dir):
    """The state_dict is Pre-LN's (same seed, same values) plus one learnable LayerNorm per sub-layer, gain 1
    and bias 0 at init; both stacks keep the final LayerNorm and every layer normalizes before."""
    model = build(dict_dir, "peri_ln", seed=2)
    ours, pre = model.state_dict(), build(dict_dir, "pre_ln", seed=2).state_dict()
    want = {f"{stack}.layers.{i}.residuals.{sub}.norm.{p}"
            for stack, depth, subs in (("encoder", 4, ("self_attn", "ffn")),
                                       ("decoder", 3, ("self_attn", "encoder_attn", "ffn")))
            for i in range(depth) for sub in subs for p in ("weight", "bias")}
    assert set(ours) - set(pre) == want and set(pre) <= set(ours)
    assert all(torch.equal(ours[k], pre[k]) for k in pre)
    for key in want:
        assert torch.equal(ours[key], torch.ones(32) if key.endswith("weight") else torch.zeros(32)), key
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert want <= trained  # LN_out's gain (and bias) learnable
    assert model.encoder.layer_norm is not None and model.decoder.layer_norm is not None
    assert all(layer.normalize_before for layer in [*model.encoder.layers, *model.decoder.layers])
    assert all(isinstance(j.norm, nn.LayerNorm) for layer in model.decoder.layers for j in layer.residuals.values())


@pytest.mark.parametrize("stack, index", [("encoder", 1), ("decoder", 2)])
def test_layer_is_x_plus_ln_out_of_f_of_ln_in_x(dict_dir, stack, index):
    model = build(dict_dir, "peri_ln")
    # the comparison can fail: without LN_out (Pre-LN's equation) the same weights give something else
    assert_layer_follows(model, stack, index, peri_step(getattr(model, stack).layers[index]), pre_ln_step, seed=1)


def test_incremental_decoding_matches_full_forward(dict_dir):
    model = build(dict_dir, "peri_ln")
    randomize_norms(model)
    steps, full = incremental_and_full(model)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
