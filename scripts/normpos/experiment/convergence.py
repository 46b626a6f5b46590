"""When a run has converged: a pure rule over its per-epoch validation losses (issue 25; Xiong et al. 2020,
sec. 3.2 and 4 compare models trained to the end, not stopped at a fixed update).

The rule: a run has converged after epoch e when its best valid loss (fairseq's base-2 ``valid_loss``, in
bits per token) improved by less than ``min_gain_bits`` over the last ``window`` epochs, i.e.

    min(loss[1..e-window]) - min(loss[1..e]) < min_gain_bits

The best-so-far, not the last value, is compared: the scored checkpoint is the best one
(``checkpoint_best.pt``), and a noisy epoch that goes up and back down is not progress. A run that stalls
(Post-LN without warm-up at a high lr, sec. 3.2) converges by the same rule, at its high loss: it stops
instead of spending the budget on flat epochs. A run that reaches ``max_epoch`` first is marked as having hit
the maximum: it was still improving. Nothing here reads files or fairseq: :func:`verdict` is tested on
built series (tests/test_converge.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

CONVERGED, IMPROVING, HIT_MAX = "converged", "improving", "hit the maximum"


@dataclass(frozen=True)
class Verdict:
    state: str               # CONVERGED | IMPROVING | HIT_MAX
    epoch: int               # epochs seen
    gain_bits: Optional[float]  # best-loss improvement over the last `window` epochs (None: too few epochs)

    def words(self, window: int, min_gain_bits: float) -> str:
        if self.gain_bits is None:
            return f"{self.state} after epoch {self.epoch}"
        return (f"{self.state} after epoch {self.epoch}: best valid loss improved {self.gain_bits:.3f} bits over "
                f"the last {window} epochs (rule: < {min_gain_bits})")


def verdict(losses: Sequence[float], window: int, min_gain_bits: float, max_epoch: int = 0) -> Verdict:
    """The state of a run whose epochs 1..len(losses) had these valid losses.

    ``window`` < 1 turns the rule off (always IMPROVING until ``max_epoch``); ``max_epoch`` 0: no maximum.
    Converging at the maximum epoch counts as converged (the rule held there)."""
    if any(not isinstance(x, (int, float)) for x in losses):
        raise ValueError(f"valid losses must be numbers, got {list(losses)}")
    epoch = len(losses)
    gain = None
    if window >= 1 and epoch > window:
        gain = min(losses[:epoch - window]) - min(losses)
        if gain < min_gain_bits:
            return Verdict(CONVERGED, epoch, gain)
    if max_epoch and epoch >= max_epoch:
        return Verdict(HIT_MAX, epoch, gain)
    return Verdict(IMPROVING, epoch, gain)
