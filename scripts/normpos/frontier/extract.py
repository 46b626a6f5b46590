"""From the outcomes of a column's runs to its frontier lr* and band, and from lr* over depths to a slope.

A column is one scheme at one depth: per grid lr, the outcome of each seed run there. Per lr, *every seed
trains* and *some seed trains* are two columns of yes / no / not run; the frontier of each is the top of the
lowest band of training lrs (``plan.band_top``: the largest lr that trains with every smaller lr of the band
training too). lr* is the first (every seed run there trains), the band's top the second; with one seed,
or seeds that agree, they are the same lr. Flags the table prints:

- *below the grid*: no lr trains (lr* < the smallest grid lr, or none trains in N updates at all);
- *at the top*: lr* is the largest grid lr, or the lr above it was not run (a column of the record not yet
  climbed onto lrs a later grid added, ``record.py``), so the true frontier may lie above it;
- *slow bottom*: lrs below the band did not train (too slow for N updates);
- *trains again*: a lr above the first failure trains again (a non-monotone column; lr* stays the lower);
- lrs left out by the skip rule (``plan.py``), and lrs not run yet: above a climb that is not over.

The slope is the least-squares slope of log lr* against log L over the depths whose lr* lies inside the
grid (neither below it nor at its top, where it is only a bound); fewer than two such depths give none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .plan import TRAINS, band_top, next_up


@dataclass
class Frontier:
    lr_star: Optional[float]          # every seed run trains, up the band
    band_top: Optional[float]         # some seed trains, up the band
    at_top: bool = False
    slow_bottom: List[float] = field(default_factory=list)
    trains_again: List[float] = field(default_factory=list)
    skipped: List[float] = field(default_factory=list)  # lrs the first seed did not run: its climb was over
    not_yet: List[float] = field(default_factory=list)  # lrs above a climb that is not over (the grid grew)

    @property
    def below_grid(self) -> bool:
        return self.lr_star is None

    @property
    def inside(self) -> bool:
        """lr* is a measured point, not a bound."""
        return self.lr_star is not None and not self.at_top


def column_frontier(lrs: Sequence[float], outcomes: Dict[int, Dict[int, str]], first_seed: int,
                    skip_after: int = 2) -> Frontier:
    """``outcomes``: lr index -> {seed: outcome}; lrs ascending; ``skip_after``: the map's skip rule, which
    tells lrs the climb left out from lrs it has not reached yet."""
    def per_lr(pick) -> List[Optional[bool]]:
        return [pick([k == TRAINS for k in outcomes[i].values()]) if outcomes.get(i) else None
                for i in range(len(lrs))]

    every, some = per_lr(all), per_lr(any)
    low, high = band_top(every), band_top(some)
    start = next((i for i, t in enumerate(some) if t), None)
    stop = high if high is not None else len(lrs)
    again = [lrs[i] for i in range(stop + 2, len(lrs)) if some[i]] if high is not None else []
    unrun = [lr for i, lr in enumerate(lrs) if first_seed not in outcomes.get(i, {})]
    climbing = next_up([outcomes.get(i, {}).get(first_seed) for i in range(len(lrs))], skip_after) is not None
    return Frontier(
        lr_star=None if low is None else lrs[low], band_top=None if high is None else lrs[high],
        at_top=low is not None and (low == len(lrs) - 1 or every[low + 1] is None),
        slow_bottom=[lrs[i] for i in range(start or 0) if some[i] is False],
        trains_again=again,
        skipped=[] if climbing else unrun, not_yet=unrun if climbing else [])


def slope(points: Sequence[Tuple[int, Optional[Frontier]]]) -> Tuple[Optional[float], List[int]]:
    """(slope of log lr* against log depth, the depths it used) over the depths whose lr* is inside the grid."""
    used = [(d, f.lr_star) for d, f in points if f is not None and f.inside]
    depths = sorted({d for d, _ in used})
    if len(depths) < 2:
        return None, depths
    fit = np.polyfit(np.log([d for d, _ in used]), np.log([lr for _, lr in used]), 1)
    # rounded: columns with the same pattern (lr* halving per doubling, flat...) fit to -1 or 0 only up to float
    # noise (-1.0000000000000009, -0.9999999999999996), which would rank equal slopes apart in the Spearman test
    return round(float(fit[0]), 9) + 0.0, depths
