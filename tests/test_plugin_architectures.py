"""The paper's models, built through fairseq-train's own entry point, have exactly the paper's shape and
match fairseq's built-in Transformer weight for weight and output for output."""

import pytest
import torch
from fairseq.modules import LayerNorm  # noqa: F401  (fairseq's LayerNorm is torch's nn.LayerNorm on CPU)

from fairseq_entry import build_model

# (architecture, layers, d, ffn, heads): Xiong et al. 2020 App. A.1 and sec. 4; Vaswani et al. 2017.
PAPER_SHAPES = [
    ("normpos_iwslt_de_en", 6, 512, 1024, 4),
    ("normpos_wmt_en_de_base", 6, 512, 2048, 8),
    ("normpos_wmt_en_de_big", 6, 1024, 4096, 16),
]


def stack_layers(model):
    return [("encoder", layer) for layer in model.encoder.layers] + [
        ("decoder", layer) for layer in model.decoder.layers
    ]


def assert_shape(model, layers, d, ffn, heads):
    assert len(model.encoder.layers) == layers and len(model.decoder.layers) == layers
    for side, layer in stack_layers(model):
        assert layer.fc1.in_features == d and layer.fc1.out_features == ffn, side
        assert layer.fc2.in_features == ffn and layer.fc2.out_features == d, side
        assert layer.self_attn.num_heads == heads and layer.self_attn.embed_dim == d, side
        if side == "decoder":
            assert layer.encoder_attn.num_heads == heads
    # output projection tied to the decoder input embedding
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight


@pytest.mark.parametrize("shape", PAPER_SHAPES, ids=[s[0] for s in PAPER_SHAPES])
@pytest.mark.parametrize("scheme", ["post_ln", "pre_ln"])
def test_paper_shape_and_layernorm_position(dict_dir, shape, scheme):
    arch, layers, d, ffn, heads = shape
    model = build_model(dict_dir, "--arch", f"{arch}_{scheme}")
    assert_shape(model, layers, d, ffn, heads)
    pre = scheme == "pre_ln"
    for side, layer in stack_layers(model):
        # fairseq puts each LayerNorm before (Pre-LN) or after (Post-LN) the residual add by this flag
        assert layer.normalize_before is pre, side
        assert layer.self_attn_layer_norm.normalized_shape == (d,)
        assert layer.final_layer_norm.normalized_shape == (d,)
    # Pre-LN's extra final LayerNorm at the top of each stack; Post-LN has none
    for stack in (model.encoder, model.decoder):
        assert (stack.layer_norm is not None) is pre
        if pre:
            assert stack.layer_norm.normalized_shape == (d,)


def test_plain_shape_name_takes_scheme_option(dict_dir):
    post = build_model(dict_dir, "--arch", "normpos_iwslt_de_en", "--encoder-layers", "2", "--decoder-layers", "2")
    pre = build_model(
        dict_dir, "--arch", "normpos_iwslt_de_en", "--norm-scheme", "pre_ln",
        "--encoder-layers", "2", "--decoder-layers", "2",
    )
    assert post.encoder.layer_norm is None and not post.encoder.layers[0].normalize_before
    assert pre.encoder.layer_norm is not None and pre.decoder.layers[1].normalize_before


def _forward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 96, (3, 7), generator=g)
    prev = torch.randint(4, 96, (3, 5), generator=g)
    model.eval()
    with torch.no_grad():
        return model(src, torch.full((3,), 7), prev)[0]


@pytest.mark.parametrize(
    "ours, builtin_flags",
    [
        ("normpos_iwslt_de_en_post_ln", []),
        ("normpos_iwslt_de_en_pre_ln", ["--encoder-normalize-before", "--decoder-normalize-before"]),
    ],
)
def test_same_as_fairseq_builtin(dict_dir, ours, builtin_flags):
    """Same seed, same parameters, same output as fairseq's transformer_iwslt_de_en (current FFN init)."""
    mine = build_model(dict_dir, "--arch", ours, "--ffn-init", "torch_default", seed=7)
    ref = build_model(
        dict_dir, "--arch", "transformer_iwslt_de_en", "--share-decoder-input-output-embed", *builtin_flags, seed=7
    )
    n_mine = sum(p.numel() for p in mine.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_mine == n_ref
    mine_sd, ref_sd = mine.state_dict(), ref.state_dict()
    assert mine_sd.keys() == ref_sd.keys()
    for key in ref_sd:
        assert torch.equal(mine_sd[key], ref_sd[key]), key
    diff = (_forward(mine) - _forward(ref)).abs().max().item()
    assert diff < 1e-5


def test_paper_ffn_init_is_xavier_uniform_zero_bias(dict_dir):
    """--ffn-init xavier (default, fairseq <= 0.9) vs torch_default (fairseq >= 0.10)."""
    small = ("--encoder-layers", "2", "--decoder-layers", "2")
    paper = build_model(dict_dir, "--arch", "normpos_iwslt_de_en", *small)
    current = build_model(dict_dir, "--arch", "normpos_iwslt_de_en", "--ffn-init", "torch_default", *small)
    d, ffn = 512, 1024
    xavier_std = (2.0 / (d + ffn)) ** 0.5
    torch_std = (1.0 / (3 * d)) ** 0.5  # kaiming_uniform(a=sqrt(5)) on fc1: bound 1/sqrt(fan_in)
    for _, layer in stack_layers(paper):
        assert layer.fc1.weight.std().item() == pytest.approx(xavier_std, rel=0.02)
        assert layer.fc2.weight.std().item() == pytest.approx(xavier_std, rel=0.02)
        assert torch.count_nonzero(layer.fc1.bias) == 0 and torch.count_nonzero(layer.fc2.bias) == 0
    for _, layer in stack_layers(current):
        assert layer.fc1.weight.std().item() == pytest.approx(torch_std, rel=0.02)
        assert torch.count_nonzero(layer.fc1.bias) > 0
    # attention projections are untouched by the option
    assert paper.encoder.layers[0].self_attn.q_proj.weight.std().item() == pytest.approx(
        current.encoder.layers[0].self_attn.q_proj.weight.std().item(), rel=0.05
    )
