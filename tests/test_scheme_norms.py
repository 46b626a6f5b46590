"""Schemes that replace the LayerNorm module itself: LayerNorm-simple and AdaNorm (Xu et al. 2019), RMSNorm
(Zhang & Sennrich 2019), ScaleNorm + FixNorm (Nguyen & Salazar 2019). Every model is built through
fairseq-train's entry point; each norm is checked for the property that defines it, taken from the model."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fairseq_entry import build_model
from normpos_fairseq.modules.adanorm import AdaNorm
from normpos_fairseq.modules.layernorm_simple import LayerNormSimple
from normpos_fairseq.modules.rmsnorm import RMSNorm
from normpos_fairseq.modules.scalenorm import ScaleNorm

D = 32
# tiny model; encoder and decoder depths differ on purpose (N != M)
TINY = (
    "--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D),
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--encoder-layers", "3", "--decoder-layers", "2",
)
# scheme -> (norm class, Pre-LN position?)
SCHEMES = {
    "ln_simple": (LayerNormSimple, True),  # the paper's runs are PreNorm (lancopku/AdaNorm scripts)
    "adanorm": (AdaNorm, True),
    "rmsnorm_post": (RMSNorm, False),
    "rmsnorm_pre": (RMSNorm, True),
    "scalenorm_fixnorm": (ScaleNorm, True),
}


def build(dict_dir, scheme, *extra, seed=1):
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY, *extra, seed=seed)


def norm_sites(model):
    """(name, module) of every place fairseq puts a LayerNorm, the stacks' final norms where present."""
    sites = []
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, stack).layers):
            for attr in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
                if hasattr(layer, attr):
                    sites.append((f"{stack}.layers.{i}.{attr}", getattr(layer, attr)))
        final = getattr(model, stack).layer_norm
        if final is not None:
            sites.append((f"{stack}.layer_norm", final))
    return sites


def inputs(shape=(4, 3, D), seed=0):
    """Rows with a mean offset and widely different scales, so a wrong statistic shows."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 2, shape[0]).reshape(-1, 1, 1)
    return (torch.randn(shape, generator=g) + 0.7) * scale


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_norm_site_has_the_schemes_norm_and_no_layernorm_is_left(dict_dir, scheme):
    norm_class, pre = SCHEMES[scheme]
    model = build(dict_dir, scheme)
    sites = norm_sites(model)
    # 3 encoder layers x 2 norms + 2 decoder layers x 3 norms, + the two final norms in the Pre-LN position
    assert len(sites) == 3 * 2 + 2 * 3 + (2 if pre else 0)
    for name, module in sites:
        assert type(module) is norm_class, name
    assert (model.encoder.layer_norm is not None) is pre and (model.decoder.layer_norm is not None) is pre
    assert all(layer.normalize_before is pre for layer in [*model.encoder.layers, *model.decoder.layers])
    leftover = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) or type(m).__name__ == "LayerNorm"]
    assert leftover == []


def test_ln_simple_is_zero_mean_unit_variance_without_parameters(dict_dir):
    model = build(dict_dir, "ln_simple")
    for name, norm in norm_sites(model):
        assert list(norm.parameters()) == [] and list(norm.buffers()) == [], name
    y = model.decoder.layers[1].encoder_attn_layer_norm(inputs())
    assert y.mean(-1).abs().max().item() < 1e-5
    # unbiased variance, as the authors' code (torch.std); eps 1e-5 is added to the std
    assert y.var(-1, unbiased=True).sub(1).abs().max().item() < 2e-3
    # not merely rescaled: LayerNorm-simple is torch's LayerNorm without affine, up to the H/(H-1) variance
    ref = F.layer_norm(inputs(), (D,), eps=0.0) * math.sqrt((D - 1) / D)
    assert torch.allclose(y, ref, atol=2e-3)


def test_adanorm_backward_detaches_the_adaptive_factor(dict_dir):
    model = build(dict_dir, "adanorm")
    norm = model.encoder.layers[2].final_layer_norm
    assert (norm.scale, norm.k) == (2.0, 0.1)  # C = 2 (lancopku/AdaNorm default and script), k = 1/10
    x = inputs().requires_grad_(True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def grad(fn):
        (g,) = torch.autograd.grad(fn(x), x, upstream)
        return g

    def y_of(x):  # LayerNorm-simple, written out
        xc = x - x.mean(-1, keepdim=True)
        return xc / (x.std(-1, keepdim=True) + 1e-5)

    def detached(x):
        y = y_of(x)
        return 2.0 * (1 - 0.1 * y.detach()) * y

    def not_detached(x):
        y = y_of(x)
        return 2.0 * (1 - 0.1 * y) * y

    assert torch.allclose(norm(x), detached(x), atol=1e-5)  # same forward value either way
    assert torch.allclose(grad(norm), grad(detached), rtol=1e-4, atol=1e-5)
    assert (grad(norm) - grad(not_detached)).abs().max().item() > 1e-2


def test_adanorm_options_set_c_and_k(dict_dir):
    model = build(dict_dir, "adanorm", "--adanorm-scale", "1.5", "--adanorm-k", "0.2")
    assert {(n.scale, n.k) for _, n in norm_sites(model)} == {(1.5, 0.2)}


@pytest.mark.parametrize("scheme", ["rmsnorm_post", "rmsnorm_pre"])
def test_rmsnorm_output_has_rms_one_times_the_gain(dict_dir, scheme):
    model = build(dict_dir, scheme)
    norm = model.decoder.layers[0].self_attn_layer_norm
    assert norm.eps == 1e-8 and torch.equal(norm.weight, torch.ones(D))
    x = inputs()
    rms = lambda t: t.pow(2).mean(-1).sqrt()  # noqa: E731
    y = norm(x)
    assert torch.allclose(rms(y), torch.ones(y.shape[:-1]), atol=1e-4)
    assert y.mean(-1).abs().min().item() > 0.1  # no re-centring: the inputs' offset survives
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-2, 3, D))
    y = norm(x)
    assert torch.allclose(rms(y / norm.weight), torch.ones(y.shape[:-1]), atol=1e-4)  # y = g * x / RMS(x)
    assert torch.allclose(y, norm.weight * x / rms(x).unsqueeze(-1), atol=1e-4)


def test_scalenorm_output_length_is_g_and_g_starts_at_sqrt_d(dict_dir):
    model = build(dict_dir, "scalenorm_fixnorm")
    x = inputs()
    for name, norm in norm_sites(model):
        assert norm.scale.shape == (1,) and norm.scale.item() == pytest.approx(math.sqrt(D)), name
        assert torch.allclose(norm(x).norm(dim=-1), torch.full(x.shape[:-1], math.sqrt(D)), rtol=1e-5), name
    norm = model.encoder.layer_norm
    with torch.no_grad():
        norm.scale.fill_(3.0)
    y = norm(x)
    assert torch.allclose(y.norm(dim=-1), torch.full(x.shape[:-1], 3.0), rtol=1e-5)
    assert torch.allclose(y / y.norm(dim=-1, keepdim=True), x / x.norm(dim=-1, keepdim=True), atol=1e-6)


def test_fixnorm_embeddings_have_unit_length_in_the_forward_and_keep_the_tie(dict_dir):
    model = build(dict_dir, "scalenorm_fixnorm")
    decoder = model.decoder
    weight = decoder.embed_tokens.weight
    assert decoder.output_projection.weight is weight  # the decoder's input/output tie is one Parameter
    # the stored matrices are not unit-length (uniform [-0.01, 0.01], the authors' init): the forward makes them so
    for w in (model.encoder.embed_tokens.weight, weight):
        assert w.abs().max().item() <= 0.01 and w.norm(dim=-1).max().item() < 0.1
    assert not any("parametrizations" in key for key in model.state_dict())  # fairseq's keys unchanged

    tokens = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(0))
    tokens[0, -2:] = decoder.padding_idx  # the padding row is normalized too (as the authors'); no NaN
    for embedding in (model.encoder.embed_tokens, decoder.embed_tokens):
        assert torch.allclose(embedding(tokens).norm(dim=-1), torch.ones(tokens.shape), atol=1e-6)
    # what the encoder feeds its first layer: the unit embedding times fairseq's embed_scale sqrt(d)
    _, embed = model.encoder.forward_embedding(tokens)
    assert torch.allclose(embed.norm(dim=-1), torch.full(tokens.shape, math.sqrt(D)), atol=1e-5)
    # the output layer uses the same unit vectors: logits = h (W / ||W||)^T
    h = torch.randn(2, 5, D)
    assert torch.allclose(decoder.output_layer(h), h @ F.normalize(weight, dim=-1).t(), atol=1e-5)
    # and the gradient reaches the stored (unnormalized) matrix through the normalization
    decoder.output_layer(h).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum().item() > 0


def test_fixnorm_with_shared_all_embeddings_normalizes_once(dict_dir):
    model = build(dict_dir, "scalenorm_fixnorm", "--share-all-embeddings")
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    # hooked once: the one module is both stacks' embedding
    assert len(model.encoder.embed_tokens._forward_hooks) == 1
    tokens = torch.randint(4, 100, (2, 5))
    assert torch.allclose(model.encoder.embed_tokens(tokens).norm(dim=-1), torch.ones(2, 5), atol=1e-6)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_state_dict_reload_and_incremental_decoding_match(dict_dir, scheme):
    """A checkpoint's weights rebuild the same model, and beam search's step-by-step decoding (incremental
    state) gives the same outputs as one full forward pass."""
    trained = build(dict_dir, scheme, seed=1)
    with torch.no_grad():  # move every norm parameter off its initial value, as training would
        for _, norm in norm_sites(trained):
            for p in norm.parameters():
                p.mul_(1.5).add_(0.1)
    fresh = build(dict_dir, scheme, seed=2)
    fresh.load_state_dict(trained.state_dict())
    trained.eval(), fresh.eval()
    g = torch.Generator().manual_seed(3)
    src, prev = torch.randint(4, 100, (2, 7), generator=g), torch.randint(4, 100, (2, 5), generator=g)
    with torch.no_grad():
        full = trained(src, torch.full((2,), 7), prev)[0]
        encoder_out = fresh.encoder(src, src_lengths=torch.full((2,), 7))
        state, steps = {}, []
        for t in range(prev.size(1)):
            steps.append(fresh.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0])
    assert torch.isfinite(full).all()
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (("--arch", "normpos_iwslt_de_en_rmsnorm_post", "--encoder-normalize-before"), "rmsnorm_pre instead"),
    (("--arch", "normpos_iwslt_de_en_rmsnorm_pre", "--rmsnorm-eps", "0"), "--rmsnorm-eps must be > 0"),
    (("--arch", "normpos_iwslt_de_en_scalenorm_fixnorm", "--scalenorm-fixnorm-embed-init", "0"), "must be > 0"),
])
def test_contradictory_options_are_refused(dict_dir, argv, message):
    with pytest.raises(ValueError, match=message):
        build_model(dict_dir, *argv, *TINY)
