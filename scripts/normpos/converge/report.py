"""Write ``results/<dataset>/reproduce-<preset>/`` from the preset's run folders (issue 25, item 2).

The table (``table.md/.tex/.csv``: test tokenized BLEU, sacreBLEU, chrF++, mean +- std over seeds, paired
significance against Post-LN with its best warm-up, the paper's IWSLT14 column) is the project's
``normpos.report.table``; the per-epoch valid loss and BLEU figures (Fig. 2 / Fig. 4 analogues) are
``normpos.report.figures``, whose speed-up is asked here at the epoch where Post-LN-with-warm-up's mean valid
BLEU peaks (Xiong et al. 2020, sec. 4: Pre-LN's epoch 9 ~ Post-LN's epoch 15). This module adds what the
preset knows: which runs converged and which hit the epoch cap, the frontier cross-check (``crosscheck.py``),
what agrees with the paper (``paper.py``), and the README (command, commit, machine, time). Reads files only.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Optional

from normpos.experiment.convergence import CONVERGED, verdict
from normpos.files import write_text
from normpos.report.figures import make_figures, mean_curve
from normpos.report.runs import FINISHED, by_config, load_runs
from normpos.report.table import make_table

from . import crosscheck, paper


def post_ln_peak(groups: dict, baseline: str) -> Optional[int]:
    """The epoch at which the baseline's mean valid BLEU is highest (its first such epoch), else None."""
    curve = mean_curve(groups[baseline], "valid_bleu", "epoch")
    return max(curve, key=lambda p: (p[1], -p[0]))[0] if curve else None


HEADER = re.compile(r"# (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")  # run_one's line above each start's command


def training_span(runs) -> Optional[dict]:
    """When the preset's runs trained, from their own records, whichever invocations trained them: the first
    start (the earliest command header of a train.log: ``# YYYY-mm-dd HH:MM:SS ...``), the last end (the latest
    status.json), the minutes between (gaps between invocations included), and the commits they trained at."""
    starts, ends = [], []
    for r in runs:
        log, status = r.path / "train.log", r.path / "status.json"
        if log.is_file():
            with open(log, encoding="utf-8") as lines:  # the first header is at the top: no need to read on
                found = next(filter(None, (HEADER.match(line) for line in lines)), None)
            if found:
                starts.append(time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")))
        if status.is_file():
            ends.append(status.stat().st_mtime)
    if not starts or not ends:
        return None
    return {"start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(min(starts))),
            "minutes": (max(ends) - min(starts)) / 60,
            "commits": sorted({str(r.info.get("commit", "?"))[:7] for r in runs})}


def ended_words(run, window: int) -> str:
    """How a run ended; for one that hit the epoch cap, how far it still was from the rule: its best valid loss's
    gain over the rule's window and in its last epoch (a step decay inside the window shows as a large gain)."""
    if run.status != FINISHED:
        return f"{run.status}: {run.reason}"
    if run.reason.startswith(CONVERGED):
        return run.reason
    losses = [v for _, v in sorted(run.curve("valid_loss", "epoch"))]
    over_window, last = verdict(losses, window, 0).gain_bits, verdict(losses, 1, 0).gain_bits  # the rule's gains
    gains = (f": best valid loss still improved {over_window:.3f} bits over the last {window} epochs, {last:.3f} "
             "in the last" if over_window is not None else "")
    return f"**hit the maximum** ({run.epochs} epochs){gains}"


def write(root: Path, out: Path, baseline: str, info: dict, frontier: Path = crosscheck.DEFAULT_FRONTIER,
          planned: Optional[set] = None) -> dict:
    """``planned``: the run folders of this preset's plan; other runs below ``root`` (an earlier preset's, another
    batch size's) are left out of every table and figure, and named."""
    every = load_runs(root)
    runs = [r for r in every if planned is None or r.path.resolve() in planned]
    stray = sorted({r.info["config"] for r in every} - {r.info["config"] for r in runs})
    groups = by_config(runs)
    converged = sum(r.status == FINISHED and r.reason.startswith(CONVERGED) for r in runs)
    # the titles say how the runs ended, from their records, rather than the section string each run.json holds
    title = (f"{runs[0].info.get('dataset', '')} / {info['experiment']} (sec. 3.2 and sec. 4 on CPU, until converged "
             f"or {info['max_epoch']} epochs: {converged} of {len(runs)} runs converged)") if runs else None
    table = make_table(root, out, baseline=baseline, runs=runs, title=title, made_by=info["make_command"])
    peak = post_ln_peak(groups, baseline)
    figures = make_figures(root, out, x="epoch", at=peak, runs=runs, title=title)
    pair = [s for s in figures["speedup_results"] if s["post_ln"] == baseline and s["metric"] == "valid_bleu"]
    span = training_span(runs)
    lines = [f"# Multi30k, trained until converged or capped, on CPU: Xiong et al. 2020 sec. 3.2 and sec. 4 "
             f"({info['preset']})", "",
             f"Made by `{info['make_command']}` at commit {info['commit']} on {info['machine']}, "
             f"started {info['started']}: {info['minutes']:.1f} min "
             f"({info['trained_now']} runs trained in this invocation, {info['reused']} reused); projected before "
             f"it started: <= {info['projected_minutes']:.0f} min."
             + (f" The runs trained from {span['start']} to their last end {span['minutes']:.1f} min later, at "
                f"commit {', '.join(span['commits'])} (from their train.log and status.json, over every invocation "
                "that trained them)." if span else ""), "",
             f"Runs of `configs/experiment/{info['experiment']}.yaml` chosen by `configs/converge/{info['preset']}.yaml`: "
             f"d {info['settings']['embed_dim']}, FFN {info['settings']['ffn_embed_dim']}, "
             f"{info['settings']['layers']}+{info['settings']['layers']} layers, batches of "
             f"{info['settings']['max_tokens']} tokens, at most {info['max_epoch']} epochs. Convergence: {info['rule']}. "
             "Test scores are of `checkpoint_best.pt` (the lowest valid loss; no averaging).", "",
             "## Test BLEU", "", f"[table.md](table.md): every configuration, with the paper's IWSLT14 BLEU beside "
             f"it and paired significance against `{baseline}` (Post-LN with its best warm-up at sec. 4's lr).", "",
             *paper.section(groups, paper.table_rows(out), baseline, pair[0] if pair else None),
             "## How each run ended", "", "| run | seed | epochs | ended |", "|---|---|---|---|"]
    for config, rs in groups.items():
        for r in rs:
            lines.append(f"| {config} | {r.info['seed']} | {r.epochs} | {ended_words(r, info['window'])} |")
    lines += ["", f"{converged} of {len(runs)} runs met the convergence rule; the others stopped at the cap of "
              f"{info['max_epoch']} epochs (the table's numbers are theirs at that budget).", "",
              "## Curves and speed-up", "", "![valid loss and BLEU per epoch](curves.png)", ""]
    if pair and peak is not None:
        s = pair[0]
        reach = s["pre_ln_reaches_at"]
        lines += [f"Post-LN with warm-up reaches its best mean valid BLEU, {s['target']:.2f}, at epoch {peak}; "
                  + (f"Pre-LN without warm-up reaches it at epoch {reach}" if reach is not None
                     else f"Pre-LN without warm-up does not reach it in {s['pre_ln_last']} epochs")
                  + " (the paper, IWSLT14: epoch 9 vs 15)"
                  + (". Post-LN's best is its last epoch, where the cap stopped it: trained on, it would set a higher "
                     "target later" if peak == max(r.epochs or 0 for r in groups[baseline]) else "")
                  + ". [speedup.json](speedup.json)", ""]
    lines += crosscheck.section(groups, info["settings"], frontier)
    if stray:
        lines += ["Left out: runs below the run root that this preset's plan does not hold (another preset's, or "
                  "an earlier version of this one): " + ", ".join(f"`{c}`" for c in stray) + ".", ""]
    write_text(out / "README.md", "\n".join(lines))
    return {"table": table, "figures": figures, "readme": out / "README.md"}
