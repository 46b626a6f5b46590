"""The paper's figures for one experiment (``make figures``), drawn from the runs' metrics.jsonl.

- ``curves.{png,pdf}``: Fig. 2 (sec. 3.2, Post-LN learning rate x warm-up) and Fig. 4 (sec. 4, Pre-LN vs
  Post-LN) of Xiong et al. 2020: validation loss and, when the runs logged it, validation BLEU per epoch,
  one curve per configuration: the mean over its finished seeds with a min..max band; each diverged or
  failed seed is drawn dashed and ends in an ``x``.
- ``speedup.{png,pdf}`` and ``speedup.json``: sec. 4's claim that "the 9-th epoch of Pre-LN" matches "the
  15-th epoch of Post-LN" (IWSLT14). For each Pre-LN configuration without warm-up and the Post-LN
  configuration with warm-up at the same optimizer and learning rate (the paper's pairing), the epoch at
  which Pre-LN first reaches the valid loss (and BLEU) that Post-LN has at its epoch 15, or at its last
  epoch when it ran fewer; the figure and the JSON say which.

The x axis is the epoch; when a run validated more than once per epoch (the CPU demo validates every few
updates) it is the number of updates instead, and the speed-up is then measured in updates.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (CI, GPU nodes)
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from normpos.files import atomic_output, write_json  # noqa: E402
from normpos.report.runs import (  # noqa: E402
    FINISHED, ReportError, by_config, experiment_title, has_warmup, load_runs)

# metric key -> (axis label, True when lower is better)
METRICS = {"valid_loss": ("valid loss (base 2)", True), "valid_bleu": ("valid BLEU", False)}
X_NAMES = {"epoch": "epoch", "num_updates": "updates"}
SPEEDUP_AT_EPOCH = 15  # Xiong et al. 2020, sec. 4: Post-LN's 15th epoch, matched by Pre-LN's 9th
PAPER_SPEEDUP = "IWSLT14, Xiong et al. 2020 sec. 4: Pre-LN epoch 9 ~ Post-LN epoch 15"
FORMATS = ("png", "pdf")


def choose_x(runs: list) -> str:
    """``epoch``, unless some run has several validations in one epoch: then ``num_updates``."""
    for run in runs:
        epochs = [r.get("epoch") for r in run.metrics if r.get("valid_loss") is not None]
        if len(epochs) != len(set(epochs)):
            return "num_updates"
    return "epoch"


def mean_curve(runs: list, metric: str, x: str) -> list:
    """(x, mean, min, max) over the finished seeds that have a value at x."""
    values = {}
    for run in runs:
        if run.status == FINISHED:
            for at, value in run.curve(metric, x):
                values.setdefault(at, []).append(value)
    return [(at, sum(v) / len(v), min(v), max(v)) for at, v in sorted(values.items())]


def _y_top(groups: dict, metric: str, x: str):
    """Top of the y axis: the finished curves plus half their range, so one exploding diverged run does
    not flatten everything else (its dashed line is clipped at the top edge instead)."""
    finished = [p[3] for runs in groups.values() for p in mean_curve(runs, metric, x)]
    low = [p[2] for runs in groups.values() for p in mean_curve(runs, metric, x)]
    if not finished:
        return None
    return max(finished) + 0.5 * max(max(finished) - min(low), 1e-3)


def draw_config(ax, runs: list, metric: str, x: str, color, top) -> None:
    curve = mean_curve(runs, metric, x)
    broken = [r for r in runs if r.status != FINISHED]
    label = runs[0].info["label"] + (f" ({len(broken)} of {len(runs)} diverged/failed)" if broken else "")
    if curve:
        xs, mean, lo, hi = zip(*curve)
        ax.plot(xs, mean, color=color, label=label, marker="." if len(xs) < 30 else None)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        label = None
    for run in broken:
        points = run.curve(metric, x)
        if not points:
            continue
        xs, ys = zip(*points)
        ys = [min(y, top) if top is not None else y for y in ys]
        ax.plot(xs, ys, color=color, linestyle="--", label=label)
        ax.plot(xs[-1], ys[-1], color=color, marker="x", markersize=9, markeredgewidth=2)
        label = None


def label_axes(ax, metric: str, x: str) -> None:
    ax.set_xlabel(X_NAMES[x])
    ax.set_ylabel(METRICS[metric][0])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and updates are whole numbers
    ax.grid(alpha=0.3)


def save(fig, out: Path, name: str) -> list:
    paths = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        with atomic_output(path) as tmp:
            # no creation date in the PDF: the same results give the same file
            fig.savefig(tmp, format=fmt, dpi=150, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def present_metrics(runs: list, x: str) -> list:
    return [m for m in METRICS if any(run.curve(m, x) for run in runs)]


def curves_figure(groups: dict, x: str, title: str, out: Path) -> list:
    runs = [r for rs in groups.values() for r in rs]
    metrics = present_metrics(runs, x)
    if not metrics:
        raise ReportError("no run has a validation loss in metrics.jsonl yet: nothing to draw")
    many = len(groups) > 6  # e.g. every scheme: the legend goes below the panels, off the curves
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6.4 * len(metrics), 9), 4.6 + 0.25 * len(groups) * many),
                             squeeze=False, layout="constrained")
    colors = list(plt.get_cmap("tab10").colors) + ["black", "gold"] if len(groups) <= 12 else \
        plt.get_cmap("tab20").colors
    for ax, metric in zip(axes[0], metrics):
        top = _y_top(groups, metric, x)
        for i, runs_of_config in enumerate(groups.values()):
            draw_config(ax, runs_of_config, metric, x, colors[i % len(colors)], top)
        label_axes(ax, metric, x)
        if top is not None and METRICS[metric][1]:
            ax.set_ylim(top=top)
    if many:
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    else:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title}\nmean over finished seeds, band min..max; dashed, x: diverged/failed seeds", fontsize=10)
    return save(fig, out, "curves")


def speedup_pairs(groups: dict) -> list:
    """(Pre-LN without warm-up, Post-LN with warm-up) configurations at the same optimizer and lr."""
    def info(config):
        return groups[config][0].info

    pre = [c for c in groups if info(c).get("scheme") == "pre_ln" and not has_warmup(info(c))]
    post = [c for c in groups if info(c).get("scheme") == "post_ln" and has_warmup(info(c))]
    return [(p, q) for p in pre for q in post
            if (info(p).get("optimizer"), info(p).get("lr")) == (info(q).get("optimizer"), info(q).get("lr"))]


def speedup(groups: dict, pre: str, post: str, metric: str, x: str, at) -> dict | None:
    """Where Pre-LN's mean curve first reaches Post-LN's value at ``at`` (or at its last point)."""
    post_curve, pre_curve = mean_curve(groups[post], metric, x), mean_curve(groups[pre], metric, x)
    if not post_curve or not pre_curve:
        return None
    reached = [p for p in post_curve if at is not None and p[0] <= at]
    ref_x, target = (reached[-1] if reached else post_curve[-1])[:2]
    why = (f"{X_NAMES[x]} {ref_x}" if at is not None and ref_x == at
           else f"its last {X_NAMES[x]} ({ref_x}; it has none at {at})" if at is not None
           else f"its last {X_NAMES[x]} ({ref_x})")
    lower = METRICS[metric][1]
    hits = [p[0] for p in pre_curve if (p[1] <= target if lower else p[1] >= target)]
    return {"pre_ln": pre, "post_ln": post, "metric": metric, "x": X_NAMES[x], "post_ln_at": ref_x,
            "post_ln_point": f"Post-LN (warm-up) at {why}", "target": target,
            "pre_ln_reaches_at": hits[0] if hits else None, "pre_ln_last": pre_curve[-1][0],
            "paper": PAPER_SPEEDUP}


def speedup_figure(groups: dict, results: list, x: str, out: Path) -> list:
    pairs = sorted({(r["pre_ln"], r["post_ln"]) for r in results}, key=lambda p: list(groups).index(p[0]))
    metrics = [m for m in METRICS if any(r["metric"] == m for r in results)]
    fig, axes = plt.subplots(len(pairs), len(metrics), figsize=(6.4 * len(metrics), 4.4 * len(pairs)),
                             squeeze=False, layout="constrained")
    for row, (pre, post) in enumerate(pairs):
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            result = next((r for r in results if (r["pre_ln"], r["post_ln"], r["metric"]) == (pre, post, metric)), None)
            for config, color in ((post, "tab:blue"), (pre, "tab:orange")):
                curve = mean_curve(groups[config], metric, x)
                if curve:  # one of the pair may lack this metric (no valid BLEU logged)
                    xs, mean, _, _ = zip(*curve)
                    ax.plot(xs, mean, color=color, marker=".", label=groups[config][0].info["label"])
            label_axes(ax, metric, x)
            if result is None:
                continue
            ax.axhline(result["target"], color="grey", linestyle=":")
            ax.axvline(result["post_ln_at"], color="tab:blue", linestyle=":")
            reach = result["pre_ln_reaches_at"]
            if reach is not None:
                ax.axvline(reach, color="tab:orange", linestyle=":")
            said = (f"Pre-LN reaches it at {X_NAMES[x]} {reach}" if reach is not None
                    else f"Pre-LN does not reach it in {result['pre_ln_last']} {X_NAMES[x]}s")
            ax.set_title(f"{result['post_ln_point']}: {result['target']:.3g}\n{said}", fontsize=9)
            ax.legend(fontsize=8)
    fig.suptitle(f"Speed-up of Pre-LN without warm-up (mean over finished seeds); {PAPER_SPEEDUP}", fontsize=10)
    return save(fig, out, "speedup")


def make_figures(root: Path, out: Path, x: str = "auto", at=None, runs: list | None = None,
                 title: str | None = None) -> dict:
    """Draw the figures of the experiment under ``root`` (or of ``runs``, some of them) into ``out``; returns
    {"curves": [...], "speedup": [...], "speedup_json": path or None, "speedup_results": [...], "x": ...}.
    ``title``: the curves' title (default: dataset / experiment and the section the runs recorded)."""
    runs = load_runs(root) if runs is None else runs
    groups = by_config(runs)
    x = choose_x(runs) if x == "auto" else x
    if at is None and x == "epoch":
        at = SPEEDUP_AT_EPOCH
    result = {"x": X_NAMES[x], "curves": curves_figure(groups, x, title or experiment_title(runs), Path(out)),
              "speedup": [], "speedup_json": None, "speedup_results": []}
    found = [s for pre, post in speedup_pairs(groups) for m in METRICS if (s := speedup(groups, pre, post, m, x, at))]
    if found:
        result["speedup"] = speedup_figure(groups, found, x, Path(out))
        result["speedup_json"] = Path(out) / "speedup.json"
        write_json(result["speedup_json"], found)
        result["speedup_results"] = found
    else:  # an earlier speed-up drawn from other runs would now be stale
        for stale in [Path(out) / "speedup.json", *(Path(out) / f"speedup.{fmt}" for fmt in FORMATS)]:
            stale.unlink(missing_ok=True)
    return result
