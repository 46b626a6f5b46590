"""Does the frontier's 100-update verdict predict the converged run? (issue 25, item 3)

For every converged-reproduction configuration without warm-up (Post-LN and Pre-LN), the cells of the frontier
map (``results/<dataset>/frontier-cpu/runs.csv`` and its ``plan.json``) with the same scheme, depth (encoder =
decoder layers), width (d, FFN) and lr, without warm-up, beside the converged run's best valid loss and test
BLEU. Differences the comparison carries are named in the section: the frontier's batch size, its constant lr
against the schedule of the converged run, 100 updates against convergence. Reads files only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List

from normpos.report.runs import FINISHED, has_warmup, mean_std

DEFAULT_FRONTIER = Path("results/multi30k/frontier-cpu")
NO_WARMUP = "1"  # the frontier's warm-up column: 1 = none


def _num(x) -> str:
    return f"{x:.3g}"


def rows(groups: dict, settings: dict, frontier: Path = DEFAULT_FRONTIER) -> List[dict]:
    """One row per (configuration without warm-up, frontier seed) pair that matches; ``settings`` are the
    converged runs' shared depth / width / batch."""
    plan_path, runs_path = frontier / "plan.json", frontier / "runs.csv"
    if not plan_path.is_file() or not runs_path.is_file():
        return []
    fs = json.loads(plan_path.read_text())["settings"]
    if (fs["embed_dim"], fs["ffn_embed_dim"]) != (settings["embed_dim"], settings["ffn_embed_dim"]):
        return []
    with open(runs_path, newline="", encoding="utf-8") as f:
        cells = list(csv.DictReader(f))
    out = []
    for config, runs in groups.items():
        info = runs[0].info
        if info.get("scheme") not in ("post_ln", "pre_ln") or has_warmup(info):
            continue
        finished = [r for r in runs if r.status == FINISHED]
        losses = [min((m["valid_loss"] for m in r.metrics if m.get("valid_loss") is not None), default=None)
                  for r in finished]
        bleu, _, n = mean_std([(r.score or {}).get("test_tok_bleu") for r in finished])
        for cell in cells:
            if (cell["scheme"], int(cell["depth"]), cell["warmup"]) == (info["scheme"], settings["layers"], NO_WARMUP) \
                    and abs(float(cell["lr"]) - float(info["lr"])) <= 1e-12:
                out.append({"scheme": info["scheme"], "lr": float(info["lr"]), "schedule": info.get("lr_scheduler"),
                            "frontier_seed": cell["seed"], "frontier": cell["outcome"],
                            "frontier_valid_nll": cell["valid_nll"], "frontier_tokens": fs["max_tokens"],
                            "frontier_updates": fs["max_update"], "runs": len(runs), "finished": len(finished),
                            "best_valid_loss": min((x for x in losses if x is not None), default=None),
                            "test_bleu": bleu, "scored": n, "label": info.get("label", config)})
    return out


def section(groups: dict, settings: dict, frontier: Path = DEFAULT_FRONTIER) -> List[str]:
    """The README's cross-check section (Markdown lines)."""
    found = rows(groups, settings, frontier)
    head = ["## Cross-check with the stability frontier", ""]
    if not found:
        return head + [f"No cell of `{frontier}/runs.csv` has these runs' scheme, depth {settings['layers']}, width "
                       f"d {settings['embed_dim']} / FFN {settings['ffn_embed_dim']} and lr without warm-up: the "
                       f"frontier must first be run there, e.g. `make frontier PRESET=cpu SCHEMES=post_ln,pre_ln "
                       f"DEPTHS={settings['layers']}`.", ""]
    ratio = settings["max_tokens"] / found[0]["frontier_tokens"]
    batch = "the frontier's batch size" if ratio == 1 else f"{ratio:g}x the frontier's"
    lines = head + [
        f"The frontier's verdict after {found[0]['frontier_updates']} updates of {found[0]['frontier_tokens']} tokens "
        f"at a constant lr, beside the converged runs (batches of {settings['max_tokens']} tokens: {batch}). "
        "Post-LN without warm-up here decays as lr/sqrt(update) from update 1 (fairseq's inverse_sqrt with W = 1, "
        "the paper's reading); Pre-LN keeps its lr constant up to its step.", "",
        "| configuration | frontier seed | frontier (valid nll) | converged runs finished | best valid loss | test BLEU (tok.) |",
        "|---|---|---|---|---|---|"]
    for r in found:
        loss = _num(r["best_valid_loss"]) if r["best_valid_loss"] is not None else "-"
        bleu = f"{r['test_bleu']:.2f} ({r['scored']} scored)" if r["test_bleu"] is not None else "-"
        lines.append(f"| {r['label']} | {r['frontier_seed']} | {r['frontier']} ({r['frontier_valid_nll']}) | "
                     f"{r['finished']}/{r['runs']} | {loss} | {bleu} |")
    return lines + ["", verdict(found), ""]


def verdict(found: List[dict]) -> str:
    """Does the 100-update verdict order the finished runs? Every cell it calls "trains" should end with a
    higher test BLEU than every cell it calls "stalls" (a ranking, so no BLEU threshold is chosen here)."""
    bleu = {kind: [r["test_bleu"] for r in found if r["frontier"] == kind and r["test_bleu"] is not None]
            for kind in ("trains", "stalls")}
    if not bleu["trains"] or not bleu["stalls"]:
        return ("Only one verdict among these cells (" + ", ".join(k for k, v in bleu.items() if v) + "): no "
                "ordering to check.")
    low, high = min(bleu["trains"]), max(bleu["stalls"])
    holds = low > high
    return (f"**The 100-update verdict {'orders' if holds else 'does not order'} the finished runs**: the cells it "
            f"calls trains end at test BLEU >= {low:.2f}, those it calls stalls at <= {high:.2f}"
            + ("." if holds else " (a stalled start that recovered, or a trained start that fell behind)."))
