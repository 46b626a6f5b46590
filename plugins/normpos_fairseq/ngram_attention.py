"""N-gram masked decoder self-attention: each target position attends only to the last N positions.

Chelba, Chen, Bapna and Shazeer 2020, "Faster Transformer Decoding: N-gram Masked Self-Attention",
arXiv:2001.04589. In the decoder's self-attention, position t sees positions t-N+1 .. t (itself and the
N-1 before it) instead of 0 .. t; the source side (encoder, cross-attention) is unchanged. Since every
decoder layer keeps only N keys and values per step, the decoder state no longer grows with the output
length and each decoding step costs O(N) in self-attention instead of O(t). (Stacked layers still widen
the receptive field to L (N-1) + 1 positions, as in the paper; the bound is on the state, per layer.)

Selected by ``--decoder-ngram-window N`` (``model.ngram_window`` in the configs), for every scheme; not
given = fairseq's full causal self-attention, untouched. The decoder layers stay fairseq's own; the window
acts at two points (``architectures/scheme_layers.py`` calls these functions from the decoder layer):

- training and scoring (one forward over the whole target): the causal mask becomes a band mask,
  :func:`band_mask`. With target padding, a padded query whose whole window is padding would see no key
  at all (a softmax over nothing is NaN, which the values of later layers would carry into every
  position); :func:`self_attention_masks` then folds the padding into one mask per sentence and lets such a
  query see itself. Real tokens see exactly their band.
- incremental decoding (beam search): fairseq's attention appends each step's key and value to the cached
  ones; :func:`truncate_cache` keeps only the last N-1 after every step, so the next step attends to those
  N-1 and itself: the same band, and a cache that never holds more than N-1 positions.

N is at least 1 (N = 1: each position attends only to itself). With N >= the target length the band is
the causal mask and the model computes exactly what fairseq's does (tested).
"""

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

OPTION = "--decoder-ngram-window"


def add_args(parser) -> None:
    parser.add_argument(
        OPTION, type=int, default=None, metavar="N",
        help="N-gram masked decoder self-attention (Chelba et al. 2020): each target position attends to "
             "itself and the N-1 before it; incremental decoding keeps N-1 keys/values (default: all)",
    )


def window_of(args) -> Optional[int]:
    """N of a parsed command line or a checkpoint's args (None: full attention); refuses N < 1."""
    window = getattr(args, "decoder_ngram_window", None)
    if window is None:
        return None
    window = int(window)
    if window < 1:
        raise ValueError(f"{OPTION} must be >= 1 (1 = each position sees only itself), got {window}")
    if getattr(args, "cross_self_attention", False):
        raise ValueError(f"{OPTION} does not combine with --cross-self-attention (its mask spans the source too)")
    return window


def band_mask(size: int, window: int, like: Tensor) -> Tensor:
    """(size, size) additive mask: 0 where 0 <= t - s < window (query t, key s), -inf elsewhere."""
    t = torch.arange(size, device=like.device)
    distance = t.unsqueeze(1) - t.unsqueeze(0)
    allowed = (distance >= 0) & (distance < window)
    return torch.zeros(size, size, dtype=like.dtype, device=like.device).masked_fill(~allowed, float("-inf"))


def self_attention_masks(x: Tensor, window: int, attn_mask: Optional[Tensor], padding_mask: Optional[Tensor],
                         num_heads: int, per_sentence: bool = True) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The (attn_mask, key_padding_mask) for fairseq's decoder self-attention over the whole target ``x``
    (T x B x C), given fairseq's causal ``attn_mask`` and ``padding_mask`` (B x T, True = pad).

    Window >= T, or no causal mask (incremental step, full-context alignment): returned unchanged. Else the
    band replaces the causal mask; with padding present, padding and band become one (B * heads, T, T) mask
    in which a query with no visible key sees itself (see the module docstring).

    ``per_sentence`` False: the attention takes fairseq's unfused path (``skip_embed_dim_check``, set by a
    scheme that hooks the projections, e.g. hybridnorm), which adds ``attn_mask`` as one (T, T) mask to every
    sentence. Then the band goes alone: with fairseq's right-padded targets a real token's window holds no
    padding, so every real position gets exactly what the combined mask gives; a padding position sees the
    tokens before it (finite, and unused: the loss skips padding). Left padding is refused (ValueError)."""
    size = x.size(0)
    if attn_mask is None or window >= size:
        return attn_mask, padding_mask
    band = band_mask(size, window, attn_mask)
    if padding_mask is None or not padding_mask.any():
        return band, padding_mask
    if not per_sentence:
        pad = padding_mask.bool()
        if (pad[:, :-1] & ~pad[:, 1:]).any():  # a pad before a real token: left (or inner) padding
            raise ValueError("--decoder-ngram-window with unfused attention needs right-padded targets")
        return band, None
    blocked = torch.isinf(band).unsqueeze(0) | padding_mask.bool().unsqueeze(1)  # B x T(query) x T(key)
    nothing_left = blocked.all(dim=-1)  # queries whose whole window is padding
    eye = torch.eye(size, dtype=torch.bool, device=x.device).unsqueeze(0)
    blocked = blocked & ~(nothing_left.unsqueeze(-1) & eye)
    mask = torch.zeros(blocked.shape, dtype=band.dtype, device=x.device).masked_fill(blocked, float("-inf"))
    # fairseq's attention takes a 3-D mask as (batch * heads, T, T), batch-major
    return mask.repeat_interleave(num_heads, dim=0), None


def truncate_cache(attention, incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]],
                   keep: int) -> None:
    """Keep only the last ``keep`` positions of a fairseq ``MultiheadAttention``'s cached keys, values and
    key padding mask (shapes B x heads x S x d and B x S)."""
    if incremental_state is None:
        return
    saved = attention._get_input_buffer(incremental_state)
    if "prev_key" not in saved:
        return
    for name, dim in (("prev_key", 2), ("prev_value", 2), ("prev_key_padding_mask", 1)):
        value = saved.get(name)
        if value is not None and value.size(dim) > keep:
            # narrow from size - keep: a slice [-keep:] would keep everything when keep is 0
            saved[name] = value.narrow(dim, value.size(dim) - keep, keep)
    attention._set_input_buffer(incremental_state, saved)


def cached_positions(attention, incremental_state) -> int:
    """How many positions a fairseq ``MultiheadAttention`` holds in its incremental cache (0 when none)."""
    saved = attention._get_input_buffer(incremental_state)
    key = saved.get("prev_key")
    return 0 if key is None else key.size(2)
