"""The claims of Xiong et al. 2020, sec. 3.3-3.4, hold on a small model at initialization, on real text.

Fig. 3(c,d) / Theorem 1: the last layer's W^2 gradient is flat in depth for Post-LN and decreases for
Pre-LN. Lemma 2: Post-LN's pre-norm sum is 1.5 d under the theory's assumptions; Pre-LN's hidden states
grow inside (1 + l/2) d .. (1 + 3l/2) d. Small setting: d = 128 (FFN 2d, 4 heads), depths 4, 8, 16,
3 seeds, one 1024-token batch of the IWSLT14 valid text per model (the full default runs d = 512 with
4096-token batches); the same seed sees the same batch at every depth.
"""

import numpy as np
import pytest

from conftest import shared_data

from normpos.theory import data, predict
from normpos.theory.measure import measure_gradients, torch_threads

D = 128
SMALL = ("--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D),
         "--encoder-ffn-embed-dim", str(2 * D), "--decoder-ffn-embed-dim", str(2 * D),
         "--encoder-attention-heads", "4", "--decoder-attention-heads", "4")
DEPTHS = (4, 8, 16)
SEEDS = (1, 2, 3)
MAX_TOKENS = 1024
# "Flat": |slope| < 0.1 in log-log, i.e. less than 15% change over the 4x range of depths, a fifth of
# Pre-LN's predicted -1/2. Pre-LN must decrease beyond seed noise (mean + 2 s.e. < 0) and by at least
# 0.15 (a third of -1/2: at these depths E||x_L||^2 = a + bL is not yet proportional to L).
FLAT = 0.1
PRE_LN_AT_MOST = -0.15


@pytest.fixture(scope="module")
def data_dir():
    shared_data("iwslt14", "fairseq-prepared-partial", "valid.de")
    return data.resolve("iwslt14").bin_dir


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):  # see its docstring: several times faster for models this small
        yield


def measure(data_dir, scheme, depth, seed, **kw):
    return measure_gradients(scheme, depth, seed, 1, data_dir=data_dir, model_args=SMALL,
                             max_tokens=MAX_TOKENS, **kw)


@pytest.fixture(scope="module")
def slopes(data_dir):
    """{(scheme, stack): per-seed slopes of log ||grad W^2_L||_F against log L}, paper's init."""
    out = {}
    for scheme in ("post_ln", "pre_ln"):
        grads = {(depth, seed): measure(data_dir, scheme, depth, seed)["grad_norm"]
                 for depth in DEPTHS for seed in SEEDS}
        for stack in ("encoder", "decoder"):
            out[(scheme, stack)] = [
                np.polyfit(np.log(DEPTHS), np.log([grads[(L, s)][(stack, L, "fc2")][0] for L in DEPTHS]), 1)[0]
                for s in SEEDS]
    return out


def mean_and_se(values):
    v = np.asarray(values)
    return v.mean(), v.std(ddof=1) / np.sqrt(v.size)


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_post_ln_last_layer_gradient_is_flat_in_depth(slopes, stack):
    mean, se = mean_and_se(slopes[("post_ln", stack)])
    assert abs(mean) < FLAT, f"Post-LN {stack} slope {mean:.3f} ± {se:.3f}"


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_pre_ln_last_layer_gradient_decreases_with_depth(slopes, stack):
    mean, se = mean_and_se(slopes[("pre_ln", stack)])
    assert mean + 2 * se < 0 and mean < PRE_LN_AT_MOST, f"Pre-LN {stack} slope {mean:.3f} ± {se:.3f}"


@pytest.fixture(scope="module")
def lemma2(data_dir):
    """Mean over seeds of E||x||^2 / d per (stack, layer), 8-8 models."""
    def profile(scheme, quantity, **kw):
        runs = [measure(data_dir, scheme, 8, seed, **kw)[quantity] for seed in SEEDS]
        return {key: np.mean([r[key] for r in runs]) / D for key in runs[0]}

    return {
        "post_theory": profile("post_ln", "ffn_ln_input_sq", theory_assumptions=True),
        "post_default": profile("post_ln", "ffn_ln_input_sq", ffn_init="torch_default"),
        "pre_theory": profile("pre_ln", "hidden_sq", theory_assumptions=True),
    }


def test_lemma2_post_ln_is_one_and_a_half_d_under_the_theory(lemma2):
    value = np.mean(list(lemma2["post_theory"].values()))
    assert value == pytest.approx(1.5, rel=0.10)


def test_lemma2_post_ln_under_current_fairseq_init_is_its_own_prediction(lemma2):
    """Without the theory's assumptions the value is not 1.5 d: the switch matters, and the derivation
    for fairseq's FFN init (1 + (1/18 + 2/(9d)) / 0.9) d holds instead."""
    value = np.mean(list(lemma2["post_default"].values()))
    init = predict.Init(D, 2 * D, "torch_default", theory=False, dropout=0.1)
    low, high = predict.lemma2("post_ln", "ffn_ln_input_sq", "encoder", 1, init)
    assert value == pytest.approx(low, rel=0.05) and low == high
    assert value < 1.5 * 0.9


def test_lemma2_pre_ln_inside_the_bounds(lemma2):
    prof = lemma2["pre_theory"]
    init = predict.Init(D, D, "xavier", theory=True, dropout=0.0)
    for (stack, layer), value in prof.items():
        low, high = predict.lemma2("pre_ln", "hidden_sq", stack, layer, init)
        assert low * 0.97 <= value <= high * 1.03, (stack, layer, value, low, high)
        if stack == "encoder" and layer >= 1:
            # the paper's bounds are for a stack of self-attention + FFN layers: the encoder
            paper_low, paper_high = predict.lemma2_paper("pre_ln", "hidden_sq", layer)
            assert paper_low <= value <= paper_high, (layer, value)
    # linear growth: at least d/2 per layer (the FFN's share)
    assert (prof[("encoder", 8)] - prof[("encoder", 1)]) / 7 >= 0.5
