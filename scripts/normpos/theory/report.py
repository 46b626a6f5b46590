"""Figures and Markdown report of the theory check (Xiong et al. 2020, sec. 3.4 / Fig. 3, Lemma 2, Theorem 1).

Reads only ``measurements.csv`` and ``run.json`` in the output folder (it never builds a model), so every
number in ``report.md`` comes from the CSV the command wrote. Regenerate with
``python -m normpos.theory.report results/theory``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from normpos import numerics
from normpos.files import write_text

from . import report_schemes
from .aggregate import INIT_ORDER, fmt, init_of, last_fc2, markdown_table, mean_std, settings_in, slopes
from .predict import THEOREM1_SLOPE

# Xiong et al. 2020, sec. 3.4 / Fig. 3(c): "the gradient norm remains in Post-LN Transformer (around 1.6)"
PAPER_POST_LN_LAST_FC2 = 1.6
INIT_TITLE = {
    "xavier": "fairseq 0.9 FFN init (Xavier, the paper's)",
    "torch_default": "current fairseq FFN init (nn.Linear default)",
    "theory": "the theory's assumptions (Xavier-Gaussian, FFN width d, W^Q=W^K=0, no dropout)",
}


def load(out: Path):
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["value"] = float(row["value"])
        for key in ("depth", "seed", "layer", "d"):
            row[key] = int(row[key]) if row[key] not in ("", None) else None
    return rows, json.loads((out / "run.json").read_text())


# ---- aggregations -----------------------------------------------------------------------------------------

def implied_slopes(rows) -> dict:
    """Pre-LN's Theorem 1 at finite depth: the final LayerNorm divides by ||x_L||, so the gradient should go
    as E||x_L||^{-1}; this is the slope of -1/2 log E||x_L||^2 against log L, from the measured norms."""
    acc = defaultdict(list)
    for r in rows:
        if r["quantity"] == "hidden_sq" and r["layer"] == r["depth"] and r["state"] == "init":
            acc[(r["setting"], r["stack"], r["depth"])].append(r["value"])
    by = defaultdict(dict)
    for (setting, stack, depth), v in acc.items():
        by[(setting, stack)][depth] = np.mean(v)
    out = {}
    for key, depths in by.items():
        ds = sorted(depths)
        if len(ds) >= 2:
            out[key] = float(np.polyfit(np.log(ds), -0.5 * np.log([depths[d] for d in ds]), 1)[0])
    return out


def lemma2_profiles(rows) -> dict:
    """{(setting, quantity, stack, depth): {layer: (mean/d over seeds, pred_low, pred_high, paper_low, paper_high)}}."""
    acc = defaultdict(lambda: defaultdict(list))
    preds = {}
    for r in rows:
        if r["quantity"] in ("hidden_sq", "ffn_ln_input_sq") and r["state"] == "init":
            key = (r["setting"], r["quantity"], r["stack"], r["depth"])
            acc[key][r["layer"]].append(r["value"] / r["d"])
            preds[key + (r["layer"],)] = tuple(
                float(r[c]) / r["d"] if r[c] not in ("", None) else float("nan")
                for c in ("pred_low", "pred_high", "paper_low", "paper_high"))
    return {key: {layer: (float(np.mean(v)),) + preds[key + (layer,)] for layer, v in sorted(layers.items())}
            for key, layers in acc.items()}


def expected_grads(rows) -> dict:
    """{(setting, param, depth): {(stack, layer): [per-seed expected-gradient norms]}} (Fig. 3a,b)."""
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["quantity"] == "expected_grad_norm":
            out[(r["setting"], r["param"], r["depth"])][(r["stack"], r["layer"])].append(r["value"])
    return out


def per_layer_keys(eg: dict) -> list:
    """(setting, param, depth) keys with every layer measured (the Fig. 3a,b runs), not just the last W^2."""
    return [k for k, layers in eg.items() if len(layers) > 2]


# ---- figures ---------------------------------------------------------------------------------------------

def _layer_axis(layers: dict):
    enc = sorted(l for s, l in layers if s == "encoder")
    dec = sorted(l for s, l in layers if s == "decoder")
    keys = [("encoder", l) for l in enc] + [("decoder", l) for l in dec]
    return keys, len(enc)


def figure_fig3(out: Path, rows, init: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grads, eg = last_fc2(rows), expected_grads(rows)
    settings = [s for s in settings_in(rows) if init_of(s) == init]
    schemes = [s.split("/")[0] for s in settings]
    ckpt = [k for k in per_layer_keys(eg) if k[0].count("/") == 2 and k[0].split("/")[1] == init]
    fig, axes = plt.subplots(2, max(2, len(schemes)), figsize=(5.2 * max(2, len(schemes)), 8.5), squeeze=False)
    for col, param in enumerate(("fc1", "fc2")):
        ax = axes[0][col]
        keys_here = [k for k in per_layer_keys(eg) if k[1] == param and (k[0] in settings or k in ckpt)]
        if not keys_here:
            ax.text(0.5, 0.5, "not measured in this run\n(no --per-layer-depth model)", ha="center",
                    va="center", transform=ax.transAxes)
            ax.axis("off")
            continue
        for key in keys_here:
            keys, n_enc = _layer_axis(eg[key])
            means = [np.mean(eg[key][k]) for k in keys]
            stds = [np.std(eg[key][k], ddof=1) if len(eg[key][k]) > 1 else 0 for k in keys]
            color = None
            for part in (slice(0, n_enc), slice(n_enc, len(keys))):  # no line from the encoder into the decoder
                bar = ax.errorbar(list(range(1, len(keys) + 1))[part], means[part], yerr=stds[part], marker="o",
                                  capsize=3, color=color, label=None if color else f"{key[0]} ({key[2]}-{key[2]})")
                color = bar.lines[0].get_color()
            ax.axvline(n_enc + 0.5, color="grey", lw=0.5)
            ax.set_xticks(range(1, len(keys) + 1), [f"{stack[0].upper()}{layer}" for stack, layer in keys])
        ax.set_title(f"({'ab'[col]}) expected gradient of W^{col + 1} ({param}) per layer")
        ax.set_xlabel("layer (E = encoder, D = decoder)")
        ax.set_ylabel("||E[grad]||_F")
        ax.legend(fontsize=8)
    for ax in axes[0][2:]:
        ax.axis("off")
    for col, setting in enumerate(settings):
        ax = axes[1][col]
        for stack, marker in (("encoder", "o"), ("decoder", "s")):
            depths = sorted(d for (s, st, d) in grads if s == setting and st == stack)
            stats = [mean_std(grads[(setting, stack, d)].values()) for d in depths]
            ax.errorbar(depths, [m for m, _ in stats], yerr=[s for _, s in stats], marker=marker, capsize=3,
                        label=stack)
            ax.set_xticks(depths)
        if setting.startswith("post_ln/"):
            ax.axhline(PAPER_POST_LN_LAST_FC2, ls="--", color="grey", label="paper, Post-LN (about 1.6)")
        ax.set_title(f"({'cdefgh'[col]}) {setting}: last-layer W^2 gradient")
        ax.set_xlabel("layers per stack (L-L model)")
        ax.set_ylabel("||grad W^2_L||_F (mean ± std over seeds)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle(f"Xiong et al. 2020, Fig. 3, at initialization: {INIT_TITLE.get(init, init)}")
    fig.tight_layout()
    name = f"fig3_{init}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def figure_lemma2(out: Path, rows) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prof = lemma2_profiles(rows)
    settings = settings_in(rows)
    schemes = list(dict.fromkeys(s.split("/")[0] for s in settings))
    inits = [i for i in INIT_ORDER if any(init_of(s) == i for s in settings)]
    fig, axes = plt.subplots(len(schemes), len(inits), figsize=(5 * len(inits), 4 * len(schemes)), squeeze=False)
    for i, scheme in enumerate(schemes):
        # Post-LN: the pre-norm sum x^{post,5} (the layer output is LayerNorm-ed); others: the layer output
        quantity = "ffn_ln_input_sq" if scheme == "post_ln" else "hidden_sq"
        for j, init in enumerate(inits):
            ax, setting = axes[i][j], f"{scheme}/{init}"
            keys = [k for k in prof if k[0] == setting and k[1] == quantity]
            if not keys:
                ax.axis("off")
                continue
            depth = max(k[3] for k in keys)
            for stack, ls in (("encoder", "-"), ("decoder", "--")):
                p = prof.get((setting, quantity, stack, depth))
                if not p:
                    continue
                layers = list(p)
                line, = ax.plot(layers, [p[l][0] for l in layers], ls, marker="o", label=f"{stack}, measured")
                low, high = [p[l][1] for l in layers], [p[l][2] for l in layers]
                if np.allclose(low, high, equal_nan=True):  # a point prediction (Post-LN): a line
                    ax.plot(layers, low, ls, color=line.get_color(), alpha=0.4, lw=3,
                            label=f"{stack}, predicted (this setting)")
                else:
                    ax.fill_between(layers, low, high, alpha=0.15, color=line.get_color(),
                                    label=f"{stack}, predicted range (this setting)")
                ax.set_xticks(layers)
                if stack == "encoder":
                    ax.plot(layers, [p[l][3] for l in layers], "k:", label="paper's Lemma 2 (value or bounds)")
                    ax.plot(layers, [p[l][4] for l in layers], "k:")
            ax.set_title(f"{setting}, {depth}-{depth}", fontsize=10)
            ax.set_xlabel("layer l (0 = embeddings)")
            ax.set_ylabel("E||x||^2 / d" + (" (pre-norm sum)" if quantity == "ffn_ln_input_sq" else ""))
            ax.legend(fontsize=7)
    fig.suptitle("Xiong et al. 2020, Lemma 2: squared norm of the hidden states at initialization")
    fig.tight_layout()
    name = "lemma2.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


# ---- Markdown --------------------------------------------------------------------------------------------

def session_lines(meta) -> list:
    """A record grown by several invocations (``record.py``): which commit measured which schemes, when."""
    sessions = meta.get("sessions", [])
    if len(sessions) < 2:
        return []
    return ["- Measured in {} invocations, merged into one record: ".format(len(sessions)) + "; ".join(
        f"{', '.join(f'`{x}`' for x in s['schemes_measured'])} at {s['git_commit'][:7]} "
        f"({s['models_measured_now']} models, finished {s['finished']}, `{s['command']}`)" for s in sessions) + "."]


def section_setup(rows, meta) -> list:
    ntok = [r["value"] for r in rows if r["quantity"] == "ntokens"]
    opts, m = meta["options"], meta["machine"]
    n_batches = len({(r["setting"], r["depth"], r["seed"], r["batch"]) for r in rows if r["quantity"] == "ntokens"})
    return [
        "## How this was made",
        f"- Command: `{meta['command']}`",
        f"- Git commit: {meta['git_commit']}",
        *session_lines(meta),
        f"- Data: {meta['data']} (`{meta['data_dir']}`, {meta['dictionary_types']} dictionary entries"
        + "".join(f"; `{name}` sha256 {digest[:16]}" for name, digest in meta.get("data_sha256", {}).items())
        + ").",
        f"- Machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads "
        f"(OMP_WAIT_POLICY {m['omp_wait_policy']}), device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; torch {m['torch']}, fairseq {m['fairseq']}, Python {m['python']}"
        + (f"; {numerics.summary(m['numerics'])}." if "numerics" in m else "; CPU numerics not recorded (before pinning)."),
        f"- Time: {meta['wall_seconds'] / 60:.1f} min wall clock for {meta['models_measured_now']} of "
        f"{meta['models_total']} models" + ((" (the rest came from the record it was merged into, and from a "
                                              "resumed partial run if any)" if "sessions" in meta else
                                              " (the rest came from a resumed partial run)")
                                             if meta["models_measured_now"] < meta["models_total"] else "")
        + f"; {meta['cpu_seconds'] / 60:.1f} min of CPU time, i.e. about "
        f"{meta['cpu_seconds'] / 60 / m['torch_threads']:.1f} min on the same machine with nothing else "
        f"running; load average {meta['load_average_start_end'][0]} at the start and "
        f"{meta['load_average_start_end'][1]} at the end (other jobs share the machine).",
        f"- Finished: {meta['finished']}.",
        "",
        "## What is measured",
        "- Models: `normpos_iwslt_de_en` (d=512, FFN 1024, 4 heads, tied decoder embeddings) built through "
        "fairseq-train's parser and `task.build_model`, with `--norm-scheme` and `--ffn-init`; depth L = "
        "`--encoder-layers L --decoder-layers L`; seed s = `--seed s` (torch seeded before the model is built).",
        f"- Batches: the first {opts['batches']} batch(es) of fairseq's epoch iterator over the valid split, "
        f"shuffled with the seed, formed by `--max-tokens {opts['max_tokens']}` (padded tokens); "
        f"{n_batches} batches in all, "
        f"{int(min(ntok))}-{int(max(ntok))} target tokens each. The same seed gives the same batches at "
        "every depth and in every setting, so depth trends within a seed are not batch changes.",
        "- Loss: fairseq's `label_smoothed_cross_entropy`, epsilon 0.1, summed over target tokens and divided "
        "by `sample_size` = number of target tokens (`sentence_avg` off), which is the gradient "
        "`Trainer.train_step` produces (`loss.backward()`, then `multiply_grads(1 / sample_size)`); no clipping.",
        f"- Dropout: the model is in `train()` mode, as at the trainer's first update, with dropout "
        f"{opts['dropout']} (paper App. A.1); attention and activation dropout 0. The theory setting has no dropout.",
        "- Gradient norm (Fig. 3c,d): Frobenius norm of the gradient of the last layer's W^2 (`fc2.weight`) "
        "on each batch, averaged over the batches of a seed; mean ± std over seeds. Expected gradient "
        "(Fig. 3a,b): the gradients of a seed's batches averaged element-wise, then the Frobenius norm.",
        "- Hidden states (Lemma 2): mean over real target/source tokens of ||x||^2, divided by d below.",
        "",
    ]


def section_last_fc2(rows) -> list:
    grads = last_fc2(rows)
    depths = sorted({d for (_, _, d) in grads})
    body = []
    for setting in settings_in(rows):
        for stack in ("encoder", "decoder"):
            cells = [fmt(*mean_std(grads[(setting, stack, d)].values())) if (setting, stack, d) in grads else "–"
                     for d in depths]
            if any(c != "–" for c in cells):
                n = max(len(grads[(setting, stack, d)]) for d in depths if (setting, stack, d) in grads)
                body.append([f"`{setting}`", stack, n] + cells)
    return [
        "## Fig. 3(c,d): gradient norm of the last layer's W^2 at initialization",
        "",
        f"Paper: Post-LN about {PAPER_POST_LN_LAST_FC2} and flat in depth; Pre-LN decreasing with depth. "
        "Mean ± std over seeds (n).",
        "",
        *markdown_table(["setting", "stack", "n"] + [f"{d}-{d}" for d in depths], body),
        "",
    ]


def _verdict(per_seed) -> str:
    """Flat if zero is inside mean ± 2 standard errors; otherwise the sign of the trend."""
    m, s = mean_std(per_seed)
    if len(per_seed) < 2:
        return "–"
    half = 2 * s / np.sqrt(len(per_seed))
    if abs(m) <= half:
        return "flat (0 within ± 2 s.e.)"
    return "decreasing" if m < 0 else "increasing"


def section_slopes(rows) -> list:
    sl, implied = slopes(last_fc2(rows)), implied_slopes(rows)
    body = []
    for setting in settings_in(rows):
        for stack in ("encoder", "decoder"):
            if (setting, stack) not in sl:
                continue
            per_seed, of_means, ds = sl[(setting, stack)]
            scheme = setting.split("/")[0]
            body.append([
                f"`{setting}`", stack, f"{ds[0]}..{ds[-1]}", fmt(*mean_std(per_seed)), len(per_seed),
                fmt(of_means), fmt(THEOREM1_SLOPE.get(scheme, float("nan")), digits=1),
                fmt(implied.get((setting, stack), float("nan"))), _verdict(per_seed),
            ])
    return [
        "## Theorem 1: slope of log ||grad W^2_L|| against log L",
        "",
        "Per seed, a least-squares line through the depths; mean ± std over seeds (n). Predicted: 0 for "
        "Post-LN (O(d sqrt(ln d))), -0.5 for Pre-LN (O(d sqrt(ln d / L))). The Lemma-2-implied slope is "
        "-1/2 times the slope of log E||x_L||^2 measured at the top of the stack: what -0.5 becomes at "
        "these finite depths, where E||x_L||^2 = a + bL is not yet proportional to L (Post-LN: the "
        "top state is a LayerNorm output, so 0).",
        "",
        *markdown_table(["setting", "stack", "depths", "slope (per seed)", "n", "slope of means", "Theorem 1",
                 "Lemma-2-implied", "trend"], body),
        "",
    ]


def section_lemma2(rows) -> list:
    prof = lemma2_profiles(rows)
    body = []
    for (setting, quantity, stack, depth), p in sorted(prof.items(), key=lambda kv: (
            settings_in(rows).index(kv[0][0]), kv[0][1], kv[0][2], kv[0][3])):
        scheme = setting.split("/")[0]
        if quantity == "ffn_ln_input_sq" and scheme != "post_ln":
            continue  # Lemma 2 speaks of Pre-LN's layer outputs, Post-LN's pre-norm sums
        if quantity == "hidden_sq" and scheme == "post_ln":
            continue  # LayerNorm outputs: d by construction
        layers = [l for l in p if l >= 1]
        meas = [p[l][0] for l in layers]
        ours = [(p[l][1], p[l][2]) for l in layers]
        paper = [(p[l][3], p[l][4]) for l in layers]

        def inside(bounds, tol=0.0):
            ok = [lo * (1 - tol) <= m <= hi * (1 + tol) for m, (lo, hi) in zip(meas, bounds) if not np.isnan(lo)]
            return f"{sum(ok)}/{len(ok)}" if ok else "–"

        if scheme == "post_ln":
            what = "pre-norm sum x^{post,5}"
            pred = fmt(np.mean([lo for lo, _ in ours]))
            pap = fmt(paper[0][0], digits=2) if paper else "–"
            within_paper = inside(paper, tol=0.10) + " within 10%"
        else:
            what = "layer output x_l"
            pred = f"{fmt(ours[0][0], digits=2)}..{fmt(ours[0][1], digits=2)} (l=1), " \
                   f"{fmt(ours[-1][0], digits=2)}..{fmt(ours[-1][1], digits=2)} (l={layers[-1]})"
            pap = f"{fmt(paper[0][0], digits=1)}..{fmt(paper[0][1], digits=1)} (l=1), " \
                  f"{fmt(paper[-1][0], digits=1)}..{fmt(paper[-1][1], digits=1)} (l={layers[-1]})"
            within_paper = inside(paper) + " inside"
        body.append([
            f"`{setting}`", f"{depth}-{depth}", stack, what, f"{fmt(p[0][0], digits=2)}" if 0 in p else "–",
            f"{fmt(meas[0])} (l=1) .. {fmt(meas[-1])} (l={layers[-1]})", pred, inside(ours, tol=0.02) + " inside",
            pap, within_paper,
        ])
    return [
        "## Lemma 2: E||x||^2 / d at initialization",
        "",
        "Paper: Post-LN E||x^{post,5}_l||^2 = 1.5 d at every layer (the sum before the FFN's LayerNorm); Pre-LN "
        "(1 + l/2) d <= E||x_l||^2 <= (1 + 3l/2) d. 'Predicted' applies the same argument to what fairseq "
        "builds in that setting (see `normpos/theory/predict.py`): FFN init and width, dropout 1/(1-p) in "
        "train mode, fairseq's attention init, and the embeddings, whose E||x_0||^2 is 1.5 d / (1-p) "
        "(token embedding d plus sinusoidal positions d/2), not d; the decoder has two attention "
        "sub-layers per layer. 'inside' counts layers whose mean over seeds is inside the predicted range "
        "(2% slack for sampling noise); the paper's Post-LN value is checked to within 10%.",
        "",
        *markdown_table(["setting", "model", "stack", "quantity", "x_0", "measured", "predicted (this setting)",
                 "in prediction", "paper", "in paper's"], body),
        "",
    ]


def section_expected(rows) -> list:
    eg = expected_grads(rows)
    lines = [
        "## Fig. 3(a,b): scale of the expected gradient per layer",
        "",
        "Paper: Post-LN at init grows with the layer index (largest near the output), Pre-LN roughly flat, "
        "Post-LN after warm-up very small. Mean over seeds of ||E_batches[grad]||_F; "
        "'last/first' is the ratio of the top layer to the bottom layer of each stack.",
        "",
    ]
    body = []
    order = settings_in(rows)
    for key in sorted(per_layer_keys(eg), key=lambda k: (order.index(k[0]) if k[0] in order else 99, k)):
        setting, param, depth = key
        for stack in ("encoder", "decoder"):
            layers = sorted(l for s, l in eg[key] if s == stack)
            means = [np.mean(eg[key][(stack, l)]) for l in layers]
            body.append([f"`{setting}`", f"{depth}-{depth}", param, stack,
                         " ".join(f"{m:.3f}" for m in means), fmt(means[-1] / means[0], digits=2)])
    return lines + markdown_table(["setting", "model", "W", "stack", "layers 1..L", "last/first"], body) + [""]


def pooled_last_fc2(rows, setting: str, stack: str) -> tuple:
    """(mean, std, depths) of the per-seed last-layer W^2 gradient over every depth and seed of a setting."""
    grads = last_fc2(rows)
    keys = [k for k in grads if k[0] == setting and k[1] == stack]
    values = [v for k in keys for v in grads[k].values()]
    return (*mean_std(values), sorted(k[2] for k in keys))


def _depths(ds) -> str:
    return f"L = {', '.join(map(str, ds))}"


def batch_effect(rows, setting: str, stack: str):
    """(r, slope, min and max sentences per batch): log ||grad W^2_L|| against log(sentences in the batch),
    over every batch of every model of ``setting``."""
    sentences = {(r["setting"], r["depth"], r["seed"], r["batch"]): r["value"]
                 for r in rows if r["quantity"] == "nsentences"}
    pairs = [(sentences[key], r["value"]) for r in rows
             if r["quantity"] == "grad_norm" and r["setting"] == setting and r["stack"] == stack
             and r["param"] == "fc2" and r["layer"] == r["depth"]
             and (key := (r["setting"], r["depth"], r["seed"], r["batch"])) in sentences]
    if len(pairs) < 3:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.corrcoef(x, y)[0, 1]), float(np.polyfit(x, y, 1)[0]), int(min(p[0] for p in pairs)), \
        int(max(p[0] for p in pairs))


def section_comparison(rows) -> list:
    out = ["## Our numbers beside the paper's", ""]
    for stack in ("decoder", "encoder"):
        vals = {init: pooled_last_fc2(rows, f"post_ln/{init}", stack) for init in INIT_ORDER}
        vals = {k: v for k, v in vals.items() if v[2]}
        if "xavier" not in vals:
            continue
        names = {"xavier": "with the paper's init, fairseq 0.9's Xavier",
                 "torch_default": "with current fairseq's init", "theory": "under the theory's assumptions"}
        parts = [f"{fmt(m, sd)} {names[init]} ({_depths(ds)})" for init, (m, sd, ds) in vals.items()]
        line = (f"- Post-LN {stack}, last-layer W^2 gradient, depths and seeds pooled: " + "; ".join(parts)
                + f". Paper: about {PAPER_POST_LN_LAST_FC2}.")
        if "torch_default" in vals:
            x, t = vals["xavier"][0], vals["torch_default"][0]
            gap = PAPER_POST_LN_LAST_FC2 - t
            line += (f" The paper's init changes it by {x - t:+.3f}"
                     + (f", {100 * (x - t) / gap:.0f}% of the distance from current fairseq's value to the "
                        f"paper's" if gap else "")
                     + f"; {PAPER_POST_LN_LAST_FC2 - x:+.3f} remain between the paper and us.")
        out.append(line)
    grads, prof = last_fc2(rows), lemma2_profiles(rows)
    for setting in settings_in(rows):
        scheme = setting.split("/")[0]
        depths = sorted({d for (s, st, d) in grads if s == setting})
        if len(depths) < 2 or scheme not in THEOREM1_SLOPE:
            continue
        lo, hi = depths[0], depths[-1]
        parts = []
        for st in ("encoder", "decoder"):
            ratio = np.mean(list(grads[(setting, st, hi)].values())) / np.mean(list(grads[(setting, st, lo)].values()))
            part = f"{ratio:.2f} ({st}"
            if scheme == "pre_ln":
                # the final LayerNorm divides by ||x_L||: the factor the growth of the top state alone explains
                top = {d: prof[(setting, "hidden_sq", st, d)][d][0] for d in (lo, hi)}
                part += f"; the growth of E||x_L||^2 alone: {np.sqrt(top[lo] / top[hi]):.2f}"
            parts.append(part + ")")
        out.append(f"- `{setting}`: from {lo}-{lo} to {hi}-{hi} the last W^2 gradient changes by a factor "
                   + " and ".join(parts) + f"; Theorem 1: {(hi / lo) ** THEOREM1_SLOPE[scheme]:.2f} "
                   f"(= ({hi}/{lo})^{THEOREM1_SLOPE[scheme]}).")
    out += lemma2_summary(prof)
    effect = batch_effect(rows, "post_ln/xavier", "decoder")
    if effect:
        r, slope, lo, hi = effect
        out.append(
            f"- Batch composition: the 4096-token batches hold {lo} to {hi} sentences (fairseq groups sentences "
            f"of similar length). Over every batch of the Post-LN models with the paper's init, the log of the "
            f"decoder's last W^2 gradient against the log of the sentences in the batch has r = {r:.2f} and "
            f"slope {slope:.2f}: batches of {'fewer' if slope < 0 else 'more'}, "
            f"{'longer' if slope < 0 else 'shorter'} sentences give larger gradients, so the absolute level "
            "depends on which batches are drawn, and the std over seeds includes this.")
    out.append("")
    return out


def lemma2_summary(prof: dict) -> list:
    """One line per setting: Post-LN's pre-norm sum pooled over layers; Pre-LN's layers inside the ranges."""
    lines = []
    for setting in dict.fromkeys(k[0] for k in prof):
        scheme = setting.split("/")[0]
        if scheme == "post_ln":
            values = [v for k, p in prof.items() if k[0] == setting and k[1] == "ffn_ln_input_sq"
                      for l, v in p.items() if l >= 1]
            lines.append(f"- Lemma 2, `{setting}`: Post-LN's pre-norm sum is {np.mean([v[0] for v in values]):.3f} d "
                         f"(mean over {len(values)} layer means of every depth; "
                         f"{min(v[0] for v in values):.3f}..{max(v[0] for v in values):.3f}); predicted for this "
                         f"setting {np.mean([v[1] for v in values]):.3f} d; the paper's 1.5 d is "
                         f"{'within' if abs(np.mean([v[0] for v in values]) / 1.5 - 1) <= 0.10 else 'not within'} 10%.")
        elif scheme == "pre_ln":
            for stack in ("encoder", "decoder"):
                values = [v for k, p in prof.items() if k[0] == setting and k[1] == "hidden_sq" and k[2] == stack
                          for l, v in p.items() if l >= 1]
                ours = sum(lo * 0.98 <= m <= hi * 1.02 for m, lo, hi, _, _ in values)
                paper = sum(plo <= m <= phi for m, _, _, plo, phi in values)
                lines.append(f"- Lemma 2, `{setting}` {stack}: {ours} of {len(values)} layer means inside the range "
                             f"derived for this setting, {paper} of {len(values)} inside the paper's "
                             "(1 + l/2) d .. (1 + 3l/2) d"
                             + (" (derived for self-attention + FFN layers; a decoder layer adds cross-attention)."
                                if stack == "decoder" else "."))
    return lines


def load_checks(out: Path) -> list:
    """[(folder, rows, meta)] of the runs in ``checks/NAME/``: the command with one option changed."""
    folders = sorted(p.parent for p in (out / "checks").glob("*/measurements.csv"))
    return [(folder, *load(folder)) for folder in folders]


def section_checks(main_rows, checks: list) -> list:
    """The checks' last-layer W^2 gradients beside this run's for the same setting, depth and seeds."""
    if not checks:
        return []
    main = last_fc2(main_rows)
    body, commands = [], []
    for folder, rows, meta in checks:
        commands.append(f"- `{folder.name}`: `{meta['command']}`")
        for (setting, stack, depth), by_seed in sorted(last_fc2(rows).items(), key=lambda kv: (
                settings_in(rows).index(kv[0][0]), kv[0][1], kv[0][2])):
            ours = main.get((setting, stack, depth), {})
            same = [ours[seed] for seed in by_seed if seed in ours]
            body.append([f"`{folder.name}`", f"`{setting}`", stack, f"{depth}-{depth}", len(by_seed),
                         fmt(*mean_std(by_seed.values())), fmt(*mean_std(same)) if same else "–"])
    return [
        "## Checks: the same measurement with one thing changed",
        "",
        "Last-layer W^2 gradient, mean ± std over the check's seeds (n), beside this run's value for the same "
        "setting, depth and seeds (a seed draws the same first batch in both). Each check's own CSV and "
        "report are in its folder under `checks/`.",
        "",
        *markdown_table(["check", "setting", "stack", "model", "n", "check's value", "this run, same seeds"], body),
        "",
        "Commands:",
        "",
        *commands,
        "",
    ]


#: options that must be equal for a check's setting to stand beside the main run's (all but the FFN init)
SAME_MEASUREMENT = ("data", "dropout", "batches", "max_tokens", "model_args")


def with_check_settings(rows, meta, checks: list) -> list:
    """``rows`` plus the rows of every setting that only a check measured under the same conditions (e.g.
    current fairseq's init, which the default run leaves to ``checks/current-fairseq-init`` to stay within
    its time budget). A check that changed anything else (dropout, batches...) is not mixed in."""
    have = set(settings_in(rows))
    extra = []
    for _, check_rows, check_meta in checks:
        if any(check_meta["options"].get(k) != meta["options"].get(k) for k in SAME_MEASUREMENT):
            continue
        new = set(settings_in(check_rows)) - have
        extra += [r for r in check_rows if r["setting"] in new]
        have |= new
    return rows + extra


def write(out: Path) -> Path:
    rows, meta = load(out)
    checks = load_checks(out)
    inits = [i for i in INIT_ORDER if any(init_of(s) == i for s in settings_in(rows))]
    # beyond Post-LN and Pre-LN, one compact figure with a line per scheme replaces the per-scheme panels
    many = len(report_schemes.schemes_in(rows)) > 2
    if many:
        figures = [report_schemes.figure_schemes(out, rows, init) for init in inits]
    else:
        figures = [figure_fig3(out, rows, init) for init in inits] + [figure_lemma2(out, rows)]
    text = [
        "# Theory check at initialization: Xiong et al. 2020, Fig. 3, Lemma 2 and Theorem 1",
        "",
        "Reproduces sec. 3.4 of \"On Layer Normalization in the Transformer Architecture\" (ICML 2020) "
        "without training: gradient norms and hidden-state norms of IWSLT14 models (Post-LN, Pre-LN, or every scheme asked for) at "
        "initialization. Generated from `measurements.csv` and `run.json` in this folder by "
        "`normpos.theory.report`; every number below is computed from that CSV.",
        "",
        *section_setup(rows, meta),
        *(report_schemes.section_schemes(rows, meta) if many else []),
        *section_comparison(with_check_settings(rows, meta, checks)),
        *section_checks(rows, checks),
        *section_last_fc2(rows),
        *section_slopes(rows),
        *section_lemma2(rows),
        *section_expected(rows),
        "## Figures",
        "",
        *[f"![{name}]({name})" for name in figures],
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(text))
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "results/theory")))
