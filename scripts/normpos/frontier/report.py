"""The map's results folder, from two files the command writes first: ``runs.csv`` (every cell of the plan:
its outcome, valid nll, updates, seconds and run folder, or ``not run``) and ``plan.json`` (the preset as run,
the settings, the unigram bar, command, commit, machine, time). From them alone (``--report-only`` redoes
this step): ``frontier.csv`` and ``table.md`` (lr* and its band per scheme and depth, the per-depth maps of
every cell, the warm-up map), ``slopes.csv`` and the comparison with Theorem 1 (``theory_link.py``),
``fig1_frontier.png``, ``fig2_warmup.png`` and ``README.md``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional

from normpos.experiment.command import format_number
from normpos.files import atomic_output, write_text
from normpos.theory.aggregate import markdown_table

from . import figures, theory_link
from .figures import signed
from .classify import LETTER, NOT_RUN
from .extract import Frontier, column_frontier, slope

# commit: the commit of the invocation that measured the row (the record of 429047a has none: plan.json's)
FIELDS = ["scheme", "depth", "warmup", "lr", "seed", "outcome", "valid_nll", "at_update", "updates",
          "wall_seconds", "reason", "run", "commit"]


def save_runs(out: Path, rows: List[dict]) -> None:
    with atomic_output(Path(out) / "runs.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in FIELDS} for row in rows)


def load_runs(out: Path) -> List[dict]:
    with open(Path(out) / "runs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("depth", "warmup", "seed"):
            row[key] = int(row[key])
        row["lr"] = float(row["lr"])
        for key in ("valid_nll", "wall_seconds"):
            row[key] = float(row[key]) if row[key] else None
        for key in ("at_update", "updates"):
            row[key] = int(row[key]) if row[key] else None
    return rows


def lr_words(x: Optional[float]) -> str:
    return "–" if x is None else format_number(x)


def frontier_words(f: Frontier, lrs: List[float]) -> str:
    """A table cell: lr*, its band, and the bounds at the grid's ends."""
    if f.lr_star is None:
        return f"none (< {lr_words(lrs[0])})" if f.band_top is None else f"< {lr_words(lrs[0])}, some seed {lr_words(f.band_top)}"
    text = ("≥ " if f.at_top else "") + lr_words(f.lr_star)
    if f.band_top and f.band_top > f.lr_star:
        text += f" – {lr_words(f.band_top)}"
    return text


def notes(f: Frontier) -> List[str]:
    words = []
    if f.slow_bottom:
        words.append("too slow below: " + ", ".join(map(lr_words, f.slow_bottom)))
    if f.trains_again:
        words.append("trains again at " + ", ".join(map(lr_words, f.trains_again)))
    if f.skipped:
        words.append("not run (skip rule): " + ", ".join(map(lr_words, f.skipped)))
    if f.not_yet:
        words.append("not run yet (the climb goes on): " + ", ".join(map(lr_words, f.not_yet)))
    return words


def frontiers_of(rows: List[dict], plan: dict) -> Dict[tuple, Frontier]:
    lrs, first = plan["lrs"], plan["seeds"][0]
    cells: Dict[tuple, Dict[int, Dict[int, str]]] = {}
    for r in rows:
        if r["warmup"] == 1 and r["outcome"] != NOT_RUN:
            cells.setdefault((r["scheme"], r["depth"]), {}).setdefault(lrs.index(r["lr"]), {})[r["seed"]] = r["outcome"]
    # a column nobody measured (a depth added for some schemes only: SCHEMES=post_ln,pre_ln DEPTHS=6) has no
    # frontier, which is not the same as "none trains": it is left out, and the table says "not measured"
    return {(s, d): column_frontier(lrs, cells[(s, d)], first, plan["skip_after"])
            for s in plan["schemes"] for d in plan["depths"] if (s, d) in cells}


def column_map(rows: List[dict], plan: dict, depth: int) -> List[str]:
    """One depth's map: scheme x lr, each cell the outcome letter of every seed run there."""
    lrs = plan["lrs"]
    by = {}
    for r in rows:
        if r["warmup"] == 1 and r["depth"] == depth and r["outcome"] != NOT_RUN:
            by.setdefault((r["scheme"], r["lr"]), []).append((r["seed"], LETTER.get(r["outcome"], "?")))
    measured = {s for s, _ in by}  # schemes never run at this depth get no row
    body = [[f"`{s}`"] + [" ".join(letter for _, letter in sorted(by.get((s, lr), []))) or LETTER[NOT_RUN]
                          for lr in lrs] for s in plan["schemes"] if s in measured]
    return markdown_table(["scheme"] + [lr_words(x) for x in lrs], body)


def warmup_maps(rows: List[dict], plan: dict) -> Dict[str, Dict]:
    """scheme -> {(W, lr): (outcome, valid nll)} at the warm-up depth, seed 1; W = 1 from the map's column."""
    w, first = plan["warmup"], plan["seeds"][0]
    maps: Dict[str, Dict] = {}
    for r in rows:
        if r["scheme"] in w["schemes"] and r["depth"] == w["depth"] and r["seed"] == first and r["lr"] in w["lrs"]:
            maps.setdefault(r["scheme"], {})[(r["warmup"], r["lr"])] = (r["outcome"], r["valid_nll"])
    return maps


def warmup_table(maps: Dict[str, Dict], plan: dict) -> List[str]:
    w = plan["warmup"]
    lines = []
    for scheme, cells in maps.items():
        body = []
        for u in w["updates"]:
            row = [f"{scheme}, W {u}"]
            for lr in w["lrs"]:
                kind, nll = cells.get((u, lr), (NOT_RUN, None))
                row.append((f"{nll:.2f} " if nll is not None else "") + LETTER.get(kind, "?"))
            body.append(row)
        lines += markdown_table(["scheme, warm-up"] + [lr_words(x) for x in w["lrs"]], body) + [""]
    return lines


def settings_words(plan: dict) -> str:
    s = plan["settings"]
    return (f"{s['dataset']}, {s['shape']}: d {s['embed_dim']}, FFN {s['ffn_embed_dim']}, {s['heads']} heads, "
            f"dropout {s['dropout']}; {s['optimizer']} betas {s['betas']}, clip {s['clip_norm']}; batches of "
            f"{s['max_tokens']} tokens; N = {s['max_update']} updates at a constant lr after W warm-up "
            f"updates (W = 1: none); label smoothing {s['label_smoothing']}; {s['device']}")


def write(out: Path) -> dict:
    """Every output of the folder from ``runs.csv`` and ``plan.json``; returns what it computed."""
    out = Path(out)
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    rows = load_runs(out)
    lrs, depths, schemes = plan["lrs"], plan["depths"], plan["schemes"]
    fronts = frontiers_of(rows, plan)
    slopes = {s: slope([(d, fronts.get((s, d))) for d in depths]) for s in schemes}
    frontier_slopes = {s: v for s, (v, _) in slopes.items()}
    link = theory_link.compare(Path(plan["theory_folder"]), frontier_slopes)
    maps = warmup_maps(rows, plan)
    bar = plan["bar"]["bar_bits"]

    with atomic_output(out / "frontier.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["scheme", "depth", "lr_star", "band_top", "at_top", "below_grid", "notes"])
            for (s, d), fr in fronts.items():
                writer.writerow([s, d, fr.lr_star or "", fr.band_top or "", fr.at_top, fr.below_grid, "; ".join(notes(fr))])
    with atomic_output(out / "slopes.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["scheme", "frontier_slope", "depths_in_fit", "gradient_slope_encoder", "gradient_slope_decoder"])
            for r in link["rows"]:
                writer.writerow([r["scheme"], _num(r["frontier_slope"]), " ".join(map(str, slopes[r["scheme"]][1])),
                                 _num(r["gradient_slope_encoder"]), _num(r["gradient_slope_decoder"])])

    st = plan["settings"]
    short = (f"{st['dataset']}, d {st['embed_dim']}, FFN {st['ffn_embed_dim']}, {st['heads']} heads, "
             f"N = {st['max_update']} updates of {st['max_tokens']} tokens, {st['optimizer']}, {st['device']}")
    fig1 = figures.figure_frontier(out, schemes, depths, lrs, fronts, frontier_slopes,
                                   f"Largest lr that trains without warm-up ({plan['preset']} preset)\n{short}")
    w = plan["warmup"]
    fig2 = figures.figure_warmup(out, maps, w["lrs"], w["updates"], bar, w["depth"],
                                 f"Warm-up map ({plan['preset']} preset, seed {plan['seeds'][0]}): {short}") \
        if maps else None

    table = frontier_table(fronts, slopes, plan) + [""]
    for d in depths:
        table += [f"### Every run at L = {d}", ""] + column_map(rows, plan, d) + [""]
    write_text(out / "table.md", "\n".join(["# Stability frontier: tables", ""] + table + warmup_section(maps, plan)))
    write_text(out / "README.md", readme(plan, rows, fronts, slopes, link, maps, fig1, fig2))
    return {"frontiers": fronts, "slopes": frontier_slopes, "link": link}


def _num(x) -> str:
    return "" if x is None else f"{round(x, 4) + 0.0:.4f}"  # never -0.0000


def frontier_table(fronts: Dict[tuple, Frontier], slopes: dict, plan: dict) -> List[str]:
    lrs, depths = plan["lrs"], plan["depths"]
    body = []
    for s in plan["schemes"]:
        value, used = slopes[s]
        cells = [f"`{s}`"] + [frontier_words(fronts[(s, d)], lrs) if (s, d) in fronts else "not measured"
                              for d in depths]
        cells.append("–" if value is None else f"{signed(value)} (L {', '.join(map(str, used))})")
        remarks = [f"L{d}: " + "; ".join(notes(fronts[(s, d)])) for d in depths
                   if (s, d) in fronts and notes(fronts[(s, d)])]
        body.append(cells + ["<br>".join(remarks)])
    return markdown_table(["scheme"] + [f"lr* at L = {d}" for d in depths] + ["slope of log lr* vs log L", "notes"], body)


def warmup_section(maps: Dict[str, Dict], plan: dict) -> List[str]:
    if not maps:
        return []
    w = plan["warmup"]
    return [f"## Warm-up map: L = {w['depth']}, seed {plan['seeds'][0]}", "",
            "Valid nll (bits per target token) at update N and the outcome (T trains, S stalls, D diverges, "
            "· not run: above two lrs that did not train).", ""] + warmup_table(maps, plan)


def comparison_section(link: dict) -> List[str]:
    if not link["found"]:
        return ["## Against Theorem 1's gradient slopes", "",
                f"No `measurements.csv` in `{link['theory_folder']}` (run `make gradnorm-schemes`): nothing to compare.", ""]
    body = []
    for r in link["rows"]:
        g = [r["gradient_slope_encoder"], r["gradient_slope_decoder"]]
        body.append([f"`{r['scheme']}`"] + [signed(v) for v in g] + [signed(None if g[1] is None else -g[1]),
                                                                     signed(r["frontier_slope"])])
    return ["## Against Theorem 1's gradient slopes", "",
            "Theorem 1's slope (log ||grad W^2_L|| against log L at initialization, the paper's IWSLT shape, depths "
            f"6-14, 3 seeds: `{link['theory_folder']}`) beside the frontier's slope measured here. If a gradient "
            "~ L^s sets the largest stable lr, lr* ~ L^-s: the prediction column is -s (decoder). The "
            "two are measured at different sizes: the question is whether the order carries over.", "",
            *markdown_table(["scheme", "gradient slope, encoder", "gradient slope, decoder", "predicted lr* slope",
                             "measured lr* slope"], body), "",
            "What the data show (computed; predicted: a negative rank correlation between gradient slope and "
            "frontier slope):", "",
            *[f"- {link['stats'][stack]['verdict']}" for stack in theory_link.STACKS], ""]


def measured_at(rows: List[dict], plan: dict) -> str:
    """'' when every run was measured by this plan's invocation (or the runs.csv predates the commit column),
    else which commits measured how many runs: a record grown by several invocations says so."""
    counts: Dict[str, int] = {}
    for r in rows:
        if r["outcome"] != NOT_RUN:
            c = (r.get("commit") or plan["commit"])[:7]
            counts[c] = counts.get(c, 0) + 1
    if set(counts) <= {plan["commit"][:7]}:
        return ""
    return "; **runs measured at** " + ", ".join(f"`{c}` ({n})" for c, n in counts.items())


def readme(plan, rows, fronts, slopes, link, maps, fig1, fig2) -> str:
    b = plan["bar"]
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    ran = sum(v for k, v in counts.items() if k != NOT_RUN)
    failed = [r for r in rows if r["outcome"] == "failed"]
    at_top = sum(f.at_top for f in fronts.values())
    below = sum(f.below_grid for f in fronts.values())
    seconds = sum(r["wall_seconds"] or 0 for r in rows if r["outcome"] != NOT_RUN)
    lines = [
        f"# Stability frontier without warm-up: {plan['preset']} preset",
        "",
        "For every normalization scheme and depth, the largest learning rate that trains without warm-up "
        "(Adam, constant lr from the first update). Beyond the paper: sec. 3.2's question (Xiong et al. 2020) "
        "asked of each scheme at several depths, and Theorem 1's depth dependence read as a prediction about "
        "training.",
        "",
        f"- **Command**: `{plan['make_command']}` (runs `{plan['command']}`)",
        f"- **Commit**: `{plan['commit']}`; **machine**: {plan['machine']}; **started** {plan['started']}"
        + measured_at(rows, plan),
        f"- **Time**: {plan['session_seconds'] / 60:.1f} min for this invocation ({plan['trained_now']} runs "
        f"trained, {plan['reused']} reused from earlier invocations); the {ran} runs' own wall time adds up to "
        f"{seconds / 60:.1f} min at {plan['jobs']} at once; the training processes of this invocation used "
        f"{plan['cpu_seconds'] / 60:.1f} CPU-min ({plan['cores']} cores)",
        f"- **Runs**: {plan['experiment']} ({settings_words(plan)}); schemes x depths {plan['depths']} x lrs "
        f"{', '.join(map(lr_words, plan['lrs']))}; {ran} runs: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k != NOT_RUN)
        + f"; {counts.get(NOT_RUN, 0)} cells of the plan not run (the skip rule, or seeds only next to the frontier)",
        "",
        "## The rule",
        "",
        f"A run **trains** when it finished its N updates and fairseq's valid `nll_loss` at update N (base 2, per "
        f"target token, no label smoothing) is below **{b['bar_bits']:.3f} bits** = the valid set's cross-entropy "
        f"under the training targets' unigram distribution ({b['bits']:.3f} bits: a model that knows only word "
        f"frequencies; {b['valid_tokens']} valid tokens, add-one over {b['vocab']} symbols, computed from "
        f"`{b['data_bin']}`) minus a margin of {b['margin_bits']} bit. It **diverges** when the sweep's watcher "
        "stopped it (non-finite loss, fp16 minimum loss scale, training loss above 1.5 x its first value), and "
        "**stalls** otherwise. Stalled runs are not cut short (a slow start looks the same half-way).",
        "",
        f"**lr\\*** is the largest grid lr that trains with every smaller lr of its band training too, for every "
        f"seed run there; seed {plan['seeds'][0]} climbs every column from the smallest lr and stops after "
        f"{plan['skip_after']} lrs in a row that do not train (the lrs above cannot move lr\\*; the maps below "
        f"mark them ·); " + (f"seed(s) {', '.join(map(str, plan['seeds'][1:]))} run next to that frontier, and "
                              "where they disagree the table gives a band: lr* (every seed trains) – the lr some "
                              "seed still trains at. " if len(plan["seeds"]) > 1 else "one seed: no bands. ")
        + "`≥` marks a lr* at the "
        "top of the grid (a bound" + ("; or at the top of a column whose climb has not reached the lrs a later grid "
                                      "added: notes say `not run yet`" if any(f.not_yet for f in fronts.values())
                                      else "") +
        "), `none` a column in which no lr trains in N updates. The slope is fitted to "
        "the depths whose lr* lies inside the grid.",
        "",
        "## Frontier",
        "",
        f"![lr* against depth]({fig1})",
        "",
        *frontier_table(fronts, slopes, plan),
        "",
        f"{at_top} of the {len(fronts)} measured columns have lr* at the top of the grid and {below} have none that trains.",
        "",
        *comparison_section(link),
    ]
    if fig2:
        lines += [f"## Warm-up (sec. 3.2's question as one picture)", "", f"![warm-up map]({fig2})", "",
                  *warmup_section(maps, plan)[2:]]
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['scheme']} L{r['depth']} lr {lr_words(r['lr'])} seed {r['seed']}: "
                                           f"{r['reason']} (`{r['run']}`)" for r in failed] + [""]
    lines += ["## Files", "",
              "`table.md` (every run of every depth), `runs.csv` (every cell: outcome, valid nll, updates, "
              "seconds, run folder), `frontier.csv`, `slopes.csv`, `plan.json` (the preset as run, the bar, the "
              "settings). `python -m normpos.frontier --preset " + plan["preset"] + " --report-only` rebuilds "
              "the tables, figures and this file from `runs.csv` and `plan.json`.", ""]
    return "\n".join(lines)
