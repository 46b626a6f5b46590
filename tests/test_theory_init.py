"""The FFN init option and the theory's assumptions give the weights their formulas say.

Xiong et al. 2020 ran fairseq <= 0.9 (fc1/fc2 Xavier-uniform, zero bias); current fairseq leaves them at
nn.Linear's default; Lemma 2 / Theorem 1 assume Xavier-Gaussian, FFN width d and W^Q = W^K = 0. The
variances checked here are the ones ``normpos.theory.predict`` derives its predictions from, measured on
models built through fairseq-train's entry point.
"""

import math

import pytest
import torch

from normpos.theory import model as theory_model
from normpos.theory.predict import Init

D, FFN = 512, 1024  # the paper's IWSLT14 shape (App. A.1)


def build(dict_dir, **setting):
    _, _, model, _ = theory_model.build(dict_dir, theory_model.Setting("post_ln", **setting), depth=1, seed=3)
    return model


def kurtosis(w: torch.Tensor) -> float:
    """4th standardized moment: 1.8 for a uniform distribution, 3 for a Gaussian."""
    z = (w - w.mean()) / w.std()
    return float(z.pow(4).mean())


def ffn_layers(model):
    return [layer for stack in (model.encoder, model.decoder) for layer in stack.layers]


@pytest.mark.parametrize("ffn_init", ["xavier", "torch_default"])
def test_ffn_init_sets_the_formula_std(dict_dir, ffn_init):
    model = build(dict_dir, ffn_init=ffn_init)
    init = Init(D, FFN, ffn_init, theory=False, dropout=0.1)
    for layer in ffn_layers(model):
        for fc in (layer.fc1, layer.fc2):
            w_var, b_var = init.ffn_vars(fc.in_features, fc.out_features)
            # 0.5M weights: the sample std is within 0.2% of the true one; 2% separates the inits by far
            assert float(fc.weight.detach().std()) == pytest.approx(math.sqrt(w_var), rel=0.02)
            assert kurtosis(fc.weight.detach()) == pytest.approx(1.8, abs=0.05)  # both inits are uniform
            if b_var == 0:
                assert torch.count_nonzero(fc.bias) == 0
            else:
                assert float(fc.bias.detach().std()) == pytest.approx(math.sqrt(b_var), rel=0.15)


def test_the_two_inits_differ(dict_dir):
    """The option is not a no-op: fc2's std is sqrt(2/3d) under Xavier and 1/sqrt(6d) under nn.Linear's default."""
    xavier, default = build(dict_dir, ffn_init="xavier"), build(dict_dir, ffn_init="torch_default")
    ratio = float(xavier.encoder.layers[0].fc2.weight.detach().std() / default.encoder.layers[0].fc2.weight.detach().std())
    assert ratio == pytest.approx(math.sqrt((2 / (3 * D)) / (1 / (6 * D))), rel=0.02)  # = 2


def test_theory_assumptions(dict_dir):
    model = build(dict_dir, ffn_init="torch_default", theory_assumptions=True)  # the init option is overridden
    init = Init(D, D, "torch_default", theory=True, dropout=0.0)
    for layer in ffn_layers(model):
        assert layer.fc1.out_features == D  # FFN width d, not 2d
        for fc in (layer.fc1, layer.fc2):
            assert float(fc.weight.detach().std()) == pytest.approx(math.sqrt(init.ffn_vars(D, D)[0]), rel=0.02)
            assert kurtosis(fc.weight.detach()) == pytest.approx(3.0, abs=0.1)  # Gaussian, not uniform
            assert torch.count_nonzero(fc.bias) == 0
        attns = [layer.self_attn] + ([layer.encoder_attn] if hasattr(layer, "encoder_attn") else [])
        sv, _, so, _ = init.attn_vars()
        for attn in attns:
            for proj in (attn.q_proj, attn.k_proj):
                assert torch.count_nonzero(proj.weight) == 0 and torch.count_nonzero(proj.bias) == 0
            assert float(attn.v_proj.weight.detach().std()) == pytest.approx(math.sqrt(sv), rel=0.02)
            assert float(attn.out_proj.weight.detach().std()) == pytest.approx(math.sqrt(so), rel=0.02)
            assert torch.count_nonzero(attn.v_proj.bias) == 0 and torch.count_nonzero(attn.out_proj.bias) == 0
    assert model.encoder.dropout_module.p == 0 and model.decoder.dropout_module.p == 0


def test_fairseq_attention_init_is_what_the_prediction_assumes(dict_dir):
    model = build(dict_dir, ffn_init="xavier")
    sv, bv, so, bo = Init(D, FFN, "xavier", theory=False, dropout=0.1).attn_vars()
    attn = model.decoder.layers[0].encoder_attn
    assert float(attn.v_proj.weight.detach().std()) == pytest.approx(math.sqrt(sv), rel=0.02)
    assert float(attn.v_proj.bias.detach().std()) == pytest.approx(math.sqrt(bv), rel=0.15)
    assert float(attn.out_proj.weight.detach().std()) == pytest.approx(math.sqrt(so), rel=0.02)
    assert bo == 0 and torch.count_nonzero(attn.out_proj.bias) == 0
