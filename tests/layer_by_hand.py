"""Shared pieces of the one-layer equation tests (tests/test_scheme_dyt.py, _peri_ln, _mix_ln, _ln_scaling): a
tiny model built through fairseq-train's entry point in eval mode, its norms moved off their init, a layer's
sub-layers F called as fairseq's own modules, and the layer recomputed from them by a scheme's equation."""

import torch
import torch.nn.functional as F

from fairseq_entry import build_model

D = 32
# encoder and decoder depths differ on purpose (N = 4, M = 3): per-stack layer counts must not mix
TINY = ("--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D), "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
        "--encoder-layers", "4", "--decoder-layers", "3")
NORMS = {"self_attn": "self_attn_layer_norm", "encoder_attn": "encoder_attn_layer_norm", "ffn": "final_layer_norm"}


def build(dict_dir, scheme, *extra, seed=1):
    model = build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY, *extra, seed=seed)
    return model.eval()  # dropout off: the comparisons are exact up to float rounding


def randomize_norms(model, seed=5):
    """Give every norm parameter (LayerNorm gain and bias, DyT's alpha, gamma, beta) a value of its own, so that
    an equation using the wrong one, or none, shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                if name.endswith(".alpha"):
                    p.copy_(0.3 + torch.rand(p.shape, generator=g))
                elif name.endswith("weight"):
                    p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))


def ln(norm, x):
    """torch's layer_norm with a module's own gain and bias (and eps; LayerNorm's 1e-5 for a module without one)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, getattr(norm, "eps", 1e-5))


def sublayers(layer, enc=None):
    """(name, F) for each sub-layer of a layer in its order; F is fairseq's own module (no masks, eval mode)."""
    subs = [("self_attn", lambda h: layer.self_attn(query=h, key=h, value=h, need_weights=False)[0])]
    if enc is not None:
        subs.append(("encoder_attn",
                     lambda h: layer.encoder_attn(query=h, key=enc, value=enc, static_kv=True)[0]))
    subs.append(("ffn", lambda h: layer.fc2(torch.relu(layer.fc1(h)))))
    return subs


def layer_by_hand(layer, x, step, enc=None):
    """Apply ``step(sub, norm, x, F) -> x`` for each sub-layer: the scheme's equation for one residual block,
    with ``norm`` the layer's module at that sub-layer's LayerNorm site."""
    with torch.no_grad():
        for sub, f in sublayers(layer, enc):
            x = step(sub, getattr(layer, NORMS[sub]), x, f)
    return x


def layer_output(layer, x, enc=None):
    """What the built layer computes for x (encoder layer: no padding; decoder layer: no self-attention mask)."""
    with torch.no_grad():
        return layer(x, None) if enc is None else layer(x, enc, None)[0]


def inputs(seed=0):
    """A layer input (6 positions, batch 2) and an encoder output (7 positions) with a scale and offset that a
    missing norm would not hide."""
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(6, 2, D, generator=g) + 0.5, torch.randn(7, 2, D, generator=g)


def assert_layer_follows(model, stack, index, step, other_step, other_equal=False, seed=0):
    """Move the model's norms off their init; then layer ``index`` of ``stack`` must compute
    ``layer_by_hand(step)``, and ``layer_by_hand(other_step)`` (another scheme's equation on the same weights)
    must differ from it unless ``other_equal``: so the comparison can fail."""
    randomize_norms(model)
    layer = getattr(model, stack).layers[index]
    x, enc = inputs(seed)
    enc = enc if stack == "decoder" else None
    got = layer_output(layer, x, enc)
    torch.testing.assert_close(got, layer_by_hand(layer, x, step, enc), atol=1e-5, rtol=1e-5)
    assert torch.allclose(got, layer_by_hand(layer, x, other_step, enc), atol=1e-2) is other_equal


def incremental_and_full(model, seed=5):
    """The decoder's output fed one target token at a time (beam search's path) and in one full forward."""
    g = torch.Generator().manual_seed(seed)
    src, prev = torch.randint(4, 96, (3, 7), generator=g), torch.randint(4, 96, (3, 5), generator=g)
    lengths = torch.full((3,), 7)
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=lengths)
        full = model.decoder(prev, encoder_out=enc)[0]
        state = {}
        steps = [model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)[0]
                 for t in range(prev.shape[1])]
    return torch.cat(steps, dim=1), full
