"""LayerNorm helpers for the scheme equation tests: move every norm off its init, and apply a norm by hand."""

import torch
import torch.nn.functional as F


def randomize_norms(model, seed=5):
    """Give every norm parameter (gain and bias) its own value, so that using the wrong norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.3 * torch.randn(p.shape, generator=g))


def ln(norm, v):
    """torch's own layer_norm with ``norm``'s shape, gain, bias and eps (not the module's forward)."""
    return F.layer_norm(v, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def padded_states(seed=1, length=6, batch=3, dim=32):
    """A (length, batch, dim) input of one layer and its key padding mask (the first sequence left-padded by 2)."""
    x = torch.randn(length, batch, dim, generator=torch.Generator().manual_seed(seed))
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[0, :2] = True
    return x, pad
