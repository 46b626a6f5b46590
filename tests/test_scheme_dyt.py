"""DyT (Zhu et al. 2025, "Transformers without Normalization", arXiv:2503.10622), built through fairseq-train's
entry point: Pre-LN with DyT(x) = gamma tanh(alpha x) + beta at every norm site, the final norms included;
one layer of each stack recomputed by that equation with torch.tanh."""

import pytest
import torch
from torch import nn

from layer_by_hand import assert_layer_follows, build, incremental_and_full, ln, randomize_norms
from normpos_fairseq.modules.dyt import DynamicTanh
from test_scheme_norms import norm_sites


def dyt(norm, x):
    """eq. (1), with the module's own alpha (a scalar), gamma and beta."""
    return norm.weight * torch.tanh(norm.alpha * x) + norm.bias


def pre_dyt_step(sub, norm, x, f):
    return x + f(dyt(norm, x))


def pre_ln_step(sub, norm, x, f):
    return x + f(ln(norm, x))


@pytest.mark.parametrize("extra, alpha0", [((), 0.5), (("--dyt-alpha0", "0.8"), 0.8)])
def test_every_norm_site_is_a_dyt_at_its_init_and_no_layernorm_is_left(dict_dir, extra, alpha0):
    model = build(dict_dir, "dyt", *extra)
    sites = norm_sites(model)
    assert len(sites) == 4 * 2 + 3 * 3 + 2  # every sub-layer's site and both stacks' final norms
    for name, module in sites:
        assert type(module) is DynamicTanh, name
        assert module.alpha.shape == (1,) and module.alpha.item() == pytest.approx(alpha0), name  # one scalar
        assert torch.equal(module.weight, torch.ones(32)) and torch.equal(module.bias, torch.zeros(32)), name
    assert all(layer.normalize_before for layer in [*model.encoder.layers, *model.decoder.layers])
    assert not [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]


def test_other_weights_are_pre_lns_with_the_same_seed(dict_dir):
    """DyT draws no random numbers: apart from the alphas, the state_dict is Pre-LN's, value for value (LN's
    gain 1 and bias 0 where DyT has gamma 1 and beta 0)."""
    ours, pre = build(dict_dir, "dyt", seed=3).state_dict(), build(dict_dir, "pre_ln", seed=3).state_dict()
    alphas = {k for k in ours if k.endswith(".alpha")}
    assert len(alphas) == 19 and set(ours) - alphas == set(pre)
    assert all(torch.equal(ours[k], pre[k]) for k in pre)


@pytest.mark.parametrize("stack, index", [("encoder", 2), ("decoder", 1)])
def test_layer_is_x_plus_f_of_dyt_x(dict_dir, stack, index):
    # the comparison can fail: the same layer with LayerNorms (same gains and biases) computes something else
    assert_layer_follows(build(dict_dir, "dyt"), stack, index, pre_dyt_step, pre_ln_step)


def test_each_stack_ends_in_its_own_dyt(dict_dir):
    model = build(dict_dir, "dyt")
    randomize_norms(model)
    seen = {}

    def keep(stack):
        def hook(module, args, out):
            seen.setdefault(stack, (args[0], out))  # the first call: the full forward
        return hook

    for stack in ("encoder", "decoder"):
        getattr(model, stack).layer_norm.register_forward_hook(keep(stack))
    incremental_and_full(model)  # one full forward of both stacks first
    for stack, (before, after) in seen.items():
        torch.testing.assert_close(after, dyt(getattr(model, stack).layer_norm, before), atol=1e-6, rtol=1e-6)
    assert set(seen) == {"encoder", "decoder"}


def test_incremental_decoding_matches_full_forward(dict_dir):
    model = build(dict_dir, "dyt", "--dyt-alpha0", "1.3")
    randomize_norms(model)
    steps, full = incremental_and_full(model)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("extra, message", [
    (("--dyt-alpha0", "0"), r"^--dyt-alpha0 must be > 0, got 0\.0$"),
    (("--dyt-alpha0", "-0.5"), r"^--dyt-alpha0 must be > 0, got -0\.5$"),
    (("--layernorm-embedding",), r"^--norm-scheme dyt has no LayerNorm; --layernorm-embedding adds one$"),
])
def test_refused_options_are_one_line(dict_dir, extra, message):
    with pytest.raises(ValueError, match=message):
        build(dict_dir, "dyt", *extra)
