"""Fig. 3(c,d) for every normalization scheme: the last layer's W^2 gradient at initialization against depth.

Xiong et al. draw this for Post-LN and Pre-LN only; a run with more schemes
(``python -m normpos.theory --schemes ...``) gets one compact figure with a line per scheme, and a table of
Theorem 1's slope (log ||grad W^2_L|| against log L) per scheme. Like ``report.py`` (which calls it; both
build on ``aggregate.py``) it reads only the run's ``measurements.csv`` and ``run.json`` (the scheme's paper
and formula were written there by the command).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .aggregate import fmt, last_fc2, markdown_table, mean_std, settings_in, slopes


def schemes_in(rows) -> list:
    return list(dict.fromkeys(s.split("/")[0] for s in settings_in(rows)))


def figure_schemes(out: Path, rows, init: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grads = last_fc2(rows)
    settings = [s for s in settings_in(rows) if s.split("/")[1] == init]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    markers = "osD^v<>pPX*h"
    colors = list(plt.get_cmap("tab10").colors) + ["black", "gold"]  # 12 distinct colours
    for ax, stack in zip(axes, ("encoder", "decoder")):
        for i, setting in enumerate(settings):
            depths = sorted(d for (s, st, d) in grads if s == setting and st == stack)
            if not depths:
                continue
            stats = [mean_std(grads[(setting, stack, d)].values()) for d in depths]
            style = dict(marker=markers[i % len(markers)], color=colors[i % len(colors)],
                         ls="-" if i < 10 else "--")
            if all(m == 0 for m, _ in stats):
                # e.g. ReZero: alpha = 0 gates every branch, so its weights get no gradient at all at init;
                # a log axis cannot draw 0, the legend says it
                ax.plot([], [], **style, label=f"{setting.split('/')[0]} (exactly 0, not drawn)")
                continue
            ax.errorbar(depths, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3,
                        label=setting.split("/")[0], **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({d for (_, _, d) in grads})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(f"({'cd'[stack == 'decoder']}) {stack}: last-layer W^2 gradient at init")
        ax.set_xlabel("layers per stack (L-L model, log scale)")
        ax.set_ylabel("||grad W^2_L||_F, mean ± std over seeds (log scale)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=9)  # below both panels, off the curves
    fig.suptitle(f"Xiong et al. 2020, Fig. 3(c,d), for every normalization scheme ({init} FFN init)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    name = f"fig3_schemes_{init}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def section_schemes(rows, meta) -> list:
    """One row per scheme: its paper and formula (from run.json), the gradient at the smallest and largest
    depth, and Theorem 1's slope per stack (mean ± std over seeds)."""
    grads, sl = last_fc2(rows), slopes(last_fc2(rows))
    info = meta.get("schemes", {})
    body = []
    for setting in settings_in(rows):
        scheme = setting.split("/")[0]
        cells = [f"`{scheme}`", info.get(scheme, {}).get("paper", ""), info.get(scheme, {}).get("summary", "")]
        for stack in ("encoder", "decoder"):
            ds = sorted(d for (s, st, d) in grads if s == setting and st == stack)
            if not ds:
                cells += ["–", "–"]
                continue
            lo, hi = (np.mean(list(grads[(setting, stack, d)].values())) for d in (ds[0], ds[-1]))
            zero = all(v == 0 for d in ds for v in grads[(setting, stack, d)].values())
            slope = fmt(*mean_std(sl[(setting, stack)][0]), digits=2) if (setting, stack) in sl else "–"
            cells += [f"{fmt(lo)} → {fmt(hi)}", "none: exactly 0 at every depth" if zero else slope]
        body.append(cells)
    depths = sorted({d for (_, _, d) in grads})
    return [
        "## Every scheme: Fig. 3(c,d) and Theorem 1's slope",
        "",
        f"Last layer's W^2 gradient at initialization, mean over seeds, at {depths[0]}-{depths[0]} → "
        f"{depths[-1]}-{depths[-1]}; slope of log ||grad W^2_L|| against log L per seed, mean ± std over seeds "
        "(Theorem 1: 0 for Post-LN, -0.5 for Pre-LN).",
        "",
        *markdown_table(["scheme", "paper", "formula", "encoder grad", "encoder slope", "decoder grad",
                         "decoder slope"], body),
        "",
    ]
