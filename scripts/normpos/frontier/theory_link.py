"""Does a steeper fall of the gradient with depth (Theorem 1, at init) go with a frontier that rises with depth?

Xiong et al.'s argument read as a statement about training: the last layer's W^2 gradient of Post-LN does not
shrink with depth (slope 0 of log ||grad|| against log L), Pre-LN's falls as L^-1/2; if a large gradient
at a large lr is what breaks training without warm-up, the largest lr that trains should grow with depth
roughly as the gradient falls, lr* ~ L^-s for a gradient ~ L^s. So across schemes the frontier slope should
fall as the gradient slope rises: a negative rank correlation.

The gradient slopes are ``make gradnorm-schemes``' (``results/theory/schemes/measurements.csv``: the paper's
IWSLT shape at depths 6-14, 3 seeds, the mean of the per-seed slopes, as its report prints them), read with
the theory report's own aggregation; the frontier slopes are this map's. The two are measured at different
sizes (the CPU map's model is 8 x narrower and 2-8 layers deep): the comparison asks whether the ordering
carries over, not whether the numbers match. ReZero's gradient is exactly 0 at init: it has no slope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

STACKS = ("encoder", "decoder")


def gradient_slopes(folder: Path) -> Dict[str, Dict[str, Optional[float]]]:
    """scheme -> {stack: mean over seeds of Theorem 1's slope} from a ``make gradnorm-schemes`` folder (xavier
    FFN init, the paper's); {} when the folder has no measurements."""
    from normpos.theory.aggregate import last_fc2, slopes
    from normpos.theory.report import load

    if not (Path(folder) / "measurements.csv").is_file():
        return {}
    rows, _ = load(Path(folder))
    found = slopes(last_fc2(rows))
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for (setting, stack), (per_seed, _, _) in found.items():
        scheme, init = setting.split("/")[0], setting.split("/")[1]
        if init == "xavier":
            out.setdefault(scheme, {s: None for s in STACKS})[stack] = float(np.mean(per_seed))
    return out


def spearman(xs, ys) -> Optional[dict]:
    """Spearman's rank correlation and its two-sided p-value (scipy), None for fewer than 3 pairs."""
    if len(xs) < 3:
        return None
    from scipy.stats import spearmanr

    result = spearmanr(xs, ys)
    rho, p = float(result.statistic), float(result.pvalue)
    return {"rho": rho, "p": p, "n": len(xs)}


def verdict(stat: Optional[dict], stack: str) -> str:
    """One sentence on what the data show, from the numbers alone."""
    if stat is None or stat["n"] < 4 or np.isnan(stat["rho"]):
        n = 0 if stat is None else stat["n"]
        return f"{stack}: too few schemes with both slopes (n = {n}) to say, or no spread in the ranks."
    words = f"Spearman ρ = {stat['rho']:+.2f} over {stat['n']} schemes (p = {stat['p']:.2f})"
    if stat["rho"] < 0 and stat["p"] < 0.05:
        return (f"{stack}: {words}: schemes whose gradient falls faster with depth have frontiers that rise "
                "faster, as the reading predicts.")
    if stat["rho"] < 0:
        return (f"{stack}: {words}: the predicted direction, but at this n not distinguishable from no "
                "relation.")
    return f"{stack}: {words}: not the predicted direction (a negative ρ); the data do not support the reading."


def compare(folder: Path, frontier_slopes: Dict[str, Optional[float]]) -> dict:
    """Rows (scheme, gradient slope per stack, predicted and measured frontier slope) and, per stack, the
    rank correlation of gradient slope and frontier slope over the schemes that have both."""
    grads = gradient_slopes(folder)
    rows = []
    for scheme, measured in frontier_slopes.items():
        g = grads.get(scheme, {})
        rows.append({"scheme": scheme, "gradient_slope_encoder": g.get("encoder"),
                     "gradient_slope_decoder": g.get("decoder"), "frontier_slope": measured})
    stats = {}
    for stack in STACKS:
        pairs = [(r[f"gradient_slope_{stack}"], r["frontier_slope"]) for r in rows
                 if r[f"gradient_slope_{stack}"] is not None and r["frontier_slope"] is not None]
        stat = spearman([a for a, _ in pairs], [b for _, b in pairs])
        stats[stack] = {"stat": stat, "verdict": verdict(stat, stack)}
    return {"rows": rows, "stats": stats, "theory_folder": str(folder), "found": bool(grads)}
