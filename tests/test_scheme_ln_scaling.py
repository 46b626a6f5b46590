"""LayerNorm Scaling (Sun et al. 2025, "The Curse of Depth", arXiv:2502.05795), built through fairseq-train's
entry point: x + F(LN(x) / sqrt(l)), l the 1-based layer index in its stack, the final LayerNorms unscaled;
layers of both stacks recomputed by that equation with torch's layer_norm."""

import math

import pytest
import torch
from torch import nn

from layer_by_hand import assert_layer_follows, build, incremental_and_full, ln, randomize_norms
from normpos_fairseq.schemes.ln_scaling import ScaledLayerNorm
from test_scheme_norms import norm_sites


def scaled_step(l):
    def step(sub, norm, x, f):
        return x + f(ln(norm, x) / math.sqrt(l))
    return step


def test_layer_norms_carry_one_over_sqrt_l_and_the_final_norms_none(dict_dir):
    """Scale 1/sqrt(i + 1) at every site of layer i of each stack (counted per stack: N = 4, M = 3); the final
    LayerNorms are plain; the state_dict is Pre-LN's, key for key and value for value (same seed)."""
    model = build(dict_dir, "ln_scaling", seed=4)
    for name, module in norm_sites(model):
        if name.endswith("layer_norm") and ".layers." not in name:
            assert type(module) is nn.LayerNorm, name  # the stack's final norm
        else:
            index = int(name.split(".")[2])
            assert type(module) is ScaledLayerNorm and module.scale == 1 / math.sqrt(index + 1), name
    assert [m.scale for m in (layer.final_layer_norm for layer in model.decoder.layers)] == \
        [1.0, 1 / math.sqrt(2), 1 / math.sqrt(3)]
    ours, pre = model.state_dict(), build(dict_dir, "pre_ln", seed=4).state_dict()
    assert list(ours) == list(pre) and all(torch.equal(ours[k], pre[k]) for k in pre)


@pytest.mark.parametrize("stack, index", [("encoder", 0), ("encoder", 3), ("decoder", 1), ("decoder", 2)])
def test_layer_is_x_plus_f_of_ln_x_over_sqrt_l(dict_dir, stack, index):
    # layer 1 is Pre-LN (scale 1); deeper layers are not, so the comparison can fail
    assert_layer_follows(build(dict_dir, "ln_scaling"), stack, index, scaled_step(index + 1), scaled_step(1),
                         other_equal=index == 0, seed=2)


def test_final_layernorm_output_is_unscaled(dict_dir):
    model = build(dict_dir, "ln_scaling")
    randomize_norms(model)
    seen = []
    model.decoder.layer_norm.register_forward_hook(lambda m, a, out: seen.append((a[0], out)) and None)
    incremental_and_full(model)
    before, after = seen[0]
    torch.testing.assert_close(after, ln(model.decoder.layer_norm, before), atol=1e-6, rtol=1e-6)


def test_incremental_decoding_matches_full_forward(dict_dir):
    model = build(dict_dir, "ln_scaling")
    randomize_norms(model)
    steps, full = incremental_and_full(model)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
