"""ReZero (Bachlechner et al. 2020, arXiv:2003.04887), built through fairseq-train's entry point:
x_{l+1} = x_l + alpha_l F(x_l) with alpha_l = 0 at init, one trainable alpha per layer, no LayerNorm."""

import pytest
import torch
from torch import nn

from fairseq_entry import build_model

ARCH = "normpos_iwslt_de_en_rezero"
N, M = 3, 2  # encoder and decoder depths differ on purpose
TINY = [
    "--encoder-layers", str(N), "--decoder-layers", str(M),
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    # every dropout live, so that train mode really drops something
    "--dropout", "0.3", "--attention-dropout", "0.2", "--activation-dropout", "0.2",
]


def build(dict_dir, *extra, seed=1):
    return build_model(dict_dir, "--arch", ARCH, *TINY, *extra, seed=seed)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 100, (3, 7), generator=g)
    src[0, :2] = 1  # left padding (fairseq's default for sources), so the padding masks are used
    lengths = torch.tensor([5, 7, 7])
    prev = torch.randint(4, 100, (3, 5), generator=g)
    prev[:, 0] = 2  # decoding starts from </s>
    return src, lengths, prev


def layers(model):
    return list(model.encoder.layers) + list(model.decoder.layers)


def layer_inputs_outputs(model, train: bool):
    """Run one forward; return (input, output) of every encoder and decoder layer."""
    seen = []

    def hook(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        seen.append((args[0].detach().clone(), out.detach().clone()))

    handles = [layer.register_forward_hook(hook) for layer in layers(model)]
    model.train(train)
    src, lengths, prev = batch()
    try:
        with torch.no_grad():
            model(src, lengths, prev)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == N + M
    return seen


def alphas(model):
    return [p for name, p in model.named_parameters() if name.endswith(".alpha")]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_with_dropout"])
def test_every_layer_is_the_identity_at_init(dict_dir, train):
    model = build(dict_dir)
    for i, (x_in, x_out) in enumerate(layer_inputs_outputs(model, train)):
        assert torch.equal(x_in, x_out), f"layer {i} is not the identity at init"
    # the check can fail: with alpha != 0 the same layers change their input
    with torch.no_grad():
        for alpha in alphas(model):
            alpha.fill_(0.5)
    for i, (x_in, x_out) in enumerate(layer_inputs_outputs(model, train)):
        assert not torch.allclose(x_in, x_out), f"layer {i} ignores alpha"


def test_no_layernorm_anywhere(dict_dir):
    model = build(dict_dir)
    # torch's LayerNorm, or fairseq's (torch's on CPU, apex FusedLayerNorm on GPU when installed)
    norms = [name for name, m in model.named_modules()
             if isinstance(m, nn.LayerNorm) or "LayerNorm" in type(m).__name__]
    assert norms == []
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None  # no final stack norm
    assert model.encoder.layernorm_embedding is None and model.decoder.layernorm_embedding is None
    for layer in layers(model):
        assert isinstance(layer.self_attn_layer_norm, nn.Identity)
        assert isinstance(layer.final_layer_norm, nn.Identity)
    assert all(isinstance(layer.encoder_attn_layer_norm, nn.Identity) for layer in model.decoder.layers)


@pytest.mark.parametrize("flag", ["--encoder-normalize-before", "--decoder-normalize-before", "--layernorm-embedding"])
def test_options_that_add_a_layernorm_are_refused(dict_dir, flag):
    with pytest.raises(ValueError, match="rezero has no LayerNorm"):
        build(dict_dir, flag)


def test_alpha_is_one_trainable_scalar_per_layer_in_the_state_dict(dict_dir):
    model = build(dict_dir)
    # one alpha per layer, shared by its sub-layers (the authors' RZTX layers have one resweight each)
    assert len(alphas(model)) == N + M
    for layer in layers(model):
        joins = list(layer.residuals.values())
        assert all(j.alpha is joins[0].alpha for j in joins)
        assert joins[0].alpha.requires_grad and joins[0].alpha.shape == (1,)
        assert joins[0].alpha.item() == 0.0
    keys = model.state_dict().keys()
    for i in range(N):
        assert {f"encoder.layers.{i}.residuals.{s}.alpha" for s in ("self_attn", "ffn")} <= keys
    for i in range(M):
        assert {f"decoder.layers.{i}.residuals.{s}.alpha" for s in ("self_attn", "encoder_attn", "ffn")} <= keys

    # the ablation: one alpha per sub-layer
    per_sub = build(dict_dir, "--rezero-alpha-per-sublayer")
    assert len(alphas(per_sub)) == 2 * N + 3 * M


def loss_step(model, optimizer):
    src, lengths, prev = batch()
    target = torch.roll(prev, -1, dims=1)
    optimizer.zero_grad()
    logits = model(src, lengths, prev)[0]
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    grads = [a.grad.clone() for a in alphas(model)]
    optimizer.step()
    return grads


def test_alpha_learns_and_survives_save_and_load(dict_dir, tmp_path):
    model = build(dict_dir)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = loss_step(model, optimizer)
    # At init every layer is the identity, so F's weights get no gradient and only the decoder's alphas
    # do; the encoder output reaches the loss only through the decoder's (zero-gated) cross-attention.
    assert all(g.abs().item() > 0 for g in grads[N:])
    assert all(g.item() == 0 for g in grads[:N])
    assert torch.count_nonzero(model.decoder.layers[0].fc1.weight.grad) == 0
    # one step later the decoder's cross-attention is open and the encoder's alphas learn too
    grads = loss_step(model, optimizer)
    assert all(g.abs().item() > 0 for g in grads)
    values = torch.cat([a.detach() for a in alphas(model)])
    assert torch.count_nonzero(values) == N + M

    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = build(dict_dir, seed=2)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert torch.equal(torch.cat([a.detach() for a in alphas(fresh)]), values)
    for layer in layers(fresh):  # still one tensor per layer after loading
        joins = list(layer.residuals.values())
        assert all(j.alpha is joins[0].alpha for j in joins)
    model.eval()
    fresh.eval()
    src, lengths, prev = batch()
    with torch.no_grad():
        assert torch.equal(model(src, lengths, prev)[0], fresh(src, lengths, prev)[0])


def test_incremental_decoding_matches_full_forward(dict_dir):
    """Beam search decodes step by step (incremental state): same logits as one full forward."""
    model = build(dict_dir)
    with torch.no_grad():
        for i, alpha in enumerate(alphas(model)):
            alpha.fill_(0.3 + 0.1 * i)
    model.eval()
    src, lengths, prev = batch()
    with torch.no_grad():
        encoder_out = model.encoder(src, src_lengths=lengths)
        full = model.decoder(prev, encoder_out=encoder_out)[0]
        state = {}
        steps = [model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0]
                 for t in range(prev.size(1))]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
