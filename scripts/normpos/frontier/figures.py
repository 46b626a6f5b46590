"""The map's two figures: lr* against depth per scheme (log-log, fitted slopes), and the warm-up map.

Both are drawn from the numbers ``report.py`` computed from ``runs.csv``; nothing here reads a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from normpos.experiment.command import format_number

from .classify import LETTER, NOT_RUN


def signed(x: Optional[float]) -> str:
    """+0.50, -0.14; a value that rounds to zero is +0.00, never -0.00."""
    return "–" if x is None else f"{round(x, 2) + 0.0:+.2f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_frontier(out: Path, schemes: List[str], depths: List[int], lrs: List[float], frontiers: dict,
                    slopes: Dict[str, Optional[float]], title: str) -> str:
    """Figure 1. ``frontiers``: (scheme, depth) -> extract.Frontier. A band is a bar from lr* up to the lr
    some seed trains at; a lr* at the top of the grid is an open triangle up (a bound), no training lr an
    open triangle down under the grid; schemes are nudged apart along the depth axis so that equal lr*
    stay visible."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6.5))
    colors = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)  # dashed after the 10th
    # beyond the 14 of 2022 (issue 26: 21) the legend goes beside the axes, where it hides no point; from the
    # 19th scheme on a colour comes again, dotted and with square markers
    outside = len(schemes) > 14
    if outside:
        fig.set_size_inches(12, 6.5)
    step = 0.012 if len(schemes) <= 14 else 0.17 / (len(schemes) - 1)  # +-8% across the schemes
    spread = step * (len(schemes) - 1) / 2
    below = lrs[0] / 1.5
    for i, scheme in enumerate(schemes):
        nudge = np.exp(-spread + step * i)
        color = colors[i % len(colors)]
        xs, ys = [], []
        for d in depths:
            f = frontiers.get((scheme, d))
            if f is None:
                continue
            x = d * nudge
            if f.lr_star is None:
                ax.plot([x], [below], marker="v", mfc="none", color=color, ls="none")
                continue
            xs.append(x)
            ys.append(f.lr_star)
            if f.band_top and f.band_top > f.lr_star:
                ax.plot([x, x], [f.lr_star, f.band_top], color=color, lw=2, alpha=0.6)
            if f.at_top:
                ax.plot([x], [f.lr_star], marker="^", mfc="none", color=color, ms=9, ls="none")
        s = slopes.get(scheme)
        label = f"{scheme} ({'slope ' + signed(s) if s is not None else 'no slope'})"
        ax.plot(xs, ys, marker="o" if i < len(colors) else "s", color=color,
                ls="-" if i < 10 else "--" if i < len(colors) else ":", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_yticks([below] + list(lrs), ["none"] + [format_number(x) for x in lrs])
    ax.minorticks_off()
    ax.set_xlabel("layers per stack L (encoder = decoder; log scale)")
    ax.set_ylabel("lr* (largest lr that trains without warm-up; log scale)")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.grid(True, which="major", alpha=0.3)
    if outside:
        ax.legend(fontsize=8, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8, ncol=2, loc="best")
    fig.tight_layout()
    name = "fig1_frontier.png"
    fig.savefig(Path(out) / name, dpi=110)
    plt.close(fig)
    return name


def figure_warmup(out: Path, maps: Dict[str, Dict], lrs: List[float], updates: List[int], bar: float,
                  depth: int, title: str) -> Optional[str]:
    """Figure 2: per scheme, lr (columns) x warm-up W (rows): valid nll at update N, the cell's outcome letter
    (T trains, S stalls, D diverges, · not run). ``maps``: scheme -> {(W, lr): (kind, nll)}."""
    if not maps:
        return None
    plt = _pyplot()
    # 4.5 in a panel for up to 6 lrs (the committed map's grid); more lrs widen it, so cells' text stays apart
    width = max(4.5, 0.75 * len(lrs))
    fig, axes = plt.subplots(1, len(maps), figsize=(width * len(maps) + 1, 3.6), squeeze=False)
    values = [nll for m in maps.values() for (_, nll) in m.values() if nll is not None]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    image = None
    for ax, (scheme, cells) in zip(axes[0], maps.items()):
        grid = np.full((len(updates), len(lrs)), np.nan)
        for r, w in enumerate(updates):
            for c, lr in enumerate(lrs):
                kind, nll = cells.get((w, lr), (NOT_RUN, None))
                if nll is not None:
                    grid[r, c] = nll
                text = f"{nll:.2f}\n{LETTER.get(kind, '?')}" if nll is not None else LETTER.get(kind, "?")
                ax.text(c, r, text, ha="center", va="center", fontsize=8,
                        color="white" if nll is not None and nll < (vmin + vmax) / 2 else "black")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_facecolor("0.85")
        ax.set_xticks(range(len(lrs)), [format_number(x) for x in lrs], fontsize=8)
        ax.set_yticks(range(len(updates)), [str(w) for w in updates])
        ax.set_xlabel("peak lr")
        ax.set_ylabel("warm-up updates W")
        ax.set_title(f"{scheme}, L = {depth}")
    fig.colorbar(image, ax=axes[0].tolist(), label=f"valid nll at update N (bits); trains below {bar:.2f}")
    fig.suptitle(title, fontsize=10)
    name = "fig2_warmup.png"
    fig.savefig(Path(out) / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name
