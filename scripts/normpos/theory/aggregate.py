"""The numbers the theory reports are built from: per-setting aggregates of ``measurements.csv`` rows
(Xiong et al. 2020, Fig. 3(c,d): the last layer's W^2 gradient per depth, and Theorem 1's slope of
log ||grad W^2_L|| against log L), their formatting, and the Markdown table helper. ``report.py`` (the
Post-LN/Pre-LN report) and ``report_schemes.py`` (its every-scheme section) both build on this module;
neither imports the other's internals, so the dependency points one way: report -> report_schemes -> here.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

INIT_ORDER = ("xavier", "torch_default", "theory")


def init_of(setting: str) -> str:
    return setting.split("/")[1]


def settings_in(rows, state="init") -> list:
    """Setting names in a stable order: by scheme as given, then xavier, torch_default, theory."""
    names = list(dict.fromkeys(r["setting"] for r in rows if r["state"] == state))
    schemes = list(dict.fromkeys(n.split("/")[0] for n in names))
    return sorted(names, key=lambda n: (schemes.index(n.split("/")[0]), INIT_ORDER.index(init_of(n))
                                        if init_of(n) in INIT_ORDER else 99))


def fmt(mean, std=None, digits=3) -> str:
    if mean is None or np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None or np.isnan(std) else f" ± {std:.{digits}f}")


def mean_std(values) -> tuple:
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def last_fc2(rows) -> dict:
    """{(setting, stack, depth): {seed: mean over batches of ||grad W^2_L||_F}} (Fig. 3c,d)."""
    per = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["quantity"] == "grad_norm" and r["param"] == "fc2" and r["layer"] == r["depth"] and r["state"] == "init":
            per[(r["setting"], r["stack"], r["depth"])][r["seed"]].append(r["value"])
    return {k: {seed: float(np.mean(v)) for seed, v in seeds.items()} for k, seeds in per.items()}


def slopes(grads: dict) -> dict:
    """{(setting, stack): (per-seed slopes, slope of the seed means, depths)}: log ||grad|| against log L."""
    by = defaultdict(dict)
    for (setting, stack, depth), seeds in grads.items():
        by[(setting, stack)][depth] = seeds
    out = {}
    for key, depths in by.items():
        ds = sorted(depths)
        if len(ds) < 2:
            continue
        seeds = sorted(set.intersection(*(set(depths[d]) for d in ds)))
        if any(depths[d][s] <= 0 for d in ds for s in seeds):
            continue  # no log-log slope (ReZero's gradient is exactly 0 at init)
        per_seed = [np.polyfit(np.log(ds), np.log([depths[d][s] for d in ds]), 1)[0] for s in seeds]
        of_means = np.polyfit(np.log(ds), np.log([np.mean(list(depths[d].values())) for d in ds]), 1)[0]
        out[key] = (per_seed, float(of_means), ds)
    return out


def markdown_table(header, body) -> list:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in body]
