"""The results table of one experiment (``make table``): Markdown, LaTeX and CSV, one row per configuration.

Per configuration (all seeds of one ``run.json["config"]``): runs, how many diverged or failed, test
tokenized BLEU, sacreBLEU and chrF++ as mean +- sample standard deviation over the finished, scored seeds;
against the baseline row, the mean sacreBLEU and chrF++ difference and in how many seed pairs it is
significant under both paired tests (``significance.py``, which says how seeds enter and why; every p-value
is in the Markdown's significance section and in ``significance.csv``); the best validation loss (fairseq's
base-2 units) and the epochs trained, both averaged over finished seeds; the training budget each row had
and the updates actually trained (mean over finished seeds); and the paper's number in its own column where
``run.json["paper"]`` has one (Xiong et al. 2020, sec. 3.2, print BLEU for some IWSLT14 settings only). The
Markdown file ends with the notes a reader needs (which BLEU, the signatures, decoding settings) and the
provenance of every number (commit, machine, command).
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from normpos.experiment.identity import budget_words
from normpos.files import write_text
from normpos.provenance import portable_path
from normpos.report import significance
from normpos.report.runs import DIVERGED, FAILED, FINISHED, RUNNING, by_config, experiment_title, load_runs, mean_std

# Column key, Markdown/LaTeX header
COLUMNS = [
    ("label", "configuration"),
    ("runs", "seeds"),
    ("diverged", "diverged"),
    ("failed", "failed"),
    ("tok_bleu", "test BLEU (tok.)"),
    ("sacrebleu", "sacreBLEU"),
    ("chrf", "chrF++"),
    ("compound_split_bleu", "compound-split BLEU"),
    ("sacrebleu_vs_baseline", "Δ sacreBLEU (sig.)"),
    ("chrf_vs_baseline", "Δ chrF++ (sig.)"),
    ("best_valid_loss", "best valid loss"),
    ("epochs", "epochs"),
    ("budget", "budget (updates trained)"),
    ("paper", "paper BLEU"),
]
LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX_ESCAPES)))
SCORES = {"tok_bleu": "test_tok_bleu", "sacrebleu": "sacrebleu", "chrf": "chrf",
          "compound_split_bleu": "compound_split_bleu"}
# an interpreter given by its absolute path (python, python3.11, .../bin/python): shown as "python"
INTERPRETER = re.compile(r"^(/\S*/)?python[0-9.]*$")


def _scored(runs: list) -> list:
    return [r.score for r in runs if r.status == FINISHED and r.score and r.score.get("scored")]


def summarize(config: str, runs: list) -> dict:
    """The numbers of one row, unformatted (the CSV writes them as they are)."""
    finished = [r for r in runs if r.status == FINISHED]
    scored = _scored(runs)
    row = {"config": config, "label": runs[0].info["label"], "runs": len(runs),
           "finished": len(finished), "diverged": sum(r.status == DIVERGED for r in runs),
           "failed": sum(r.status == FAILED for r in runs), "running": sum(r.status == RUNNING for r in runs)}
    for key, field in SCORES.items():
        row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_n"] = mean_std([s.get(field) for s in scored])
    best = [min((v for _, v in r.curve("valid_loss", "epoch")), default=None) for r in finished]
    row["best_valid_loss_mean"], row["best_valid_loss_std"], row["best_valid_loss_n"] = mean_std(best)
    row["epochs_mean"], _, _ = mean_std([r.epochs for r in finished])
    # the budget each seed had (old run.json files have none: "not recorded") and the updates it trained
    budgets = sorted({budget_words(r.budget) if r.budget is not None else "not recorded" for r in runs})
    row["budget"] = "; ".join(budgets)
    row["num_updates_mean"], _, _ = mean_std([r.num_updates for r in finished])
    paper = runs[0].info.get("paper") or {}
    row["paper_test_bleu"] = paper.get("test_bleu")
    return row


def _pm(mean, std, n, finished, digits) -> str:
    if mean is None:
        return "–"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    return text + (f" ({n}/{finished})" if n < finished else "")


def cells(row: dict) -> dict:
    """Formatted cells of a row (Markdown text; latex() escapes them)."""
    out = {key: row[key] for key in ("label", "runs", "diverged", "failed")}
    for key in SCORES:
        out[key] = _pm(row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_n"], row["finished"], 2)
    out["best_valid_loss"] = _pm(row["best_valid_loss_mean"], row["best_valid_loss_std"], row["best_valid_loss_n"],
                                 row["finished"], 3)
    epochs = row["epochs_mean"]
    out["epochs"] = "–" if epochs is None else (f"{epochs:.0f}" if float(epochs).is_integer() else f"{epochs:.1f}")
    updates = row["num_updates_mean"]
    out["budget"] = row["budget"] + (" (–)" if updates is None else f" ({updates:,.0f})")
    for key in significance.METRIC_KEYS.values():
        compared = "seed_pairs" in row or row.get("is_baseline")
        out[f"{key}_vs_baseline"] = significance.cell(row, key) if compared else "–"
    paper = row["paper_test_bleu"]  # a number, or text such as "~34" for a value read off a figure
    out["paper"] = "–" if paper is None else (f"{paper:.2f}" if isinstance(paper, (int, float)) else str(paper))
    return out


def _columns(rows: list) -> list:
    # The compound-split column exists for WMT14 only (run.json compound_split), the comparison columns only
    # when there is a baseline to compare with: hide them when empty.
    def shown(key):
        if key == "compound_split_bleu":
            return any(r["compound_split_bleu_n"] for r in rows)
        if key.endswith("_vs_baseline"):
            return any(r.get("is_baseline") for r in rows)
        return True
    return [(k, h) for k, h in COLUMNS if shown(k)]


def _align(cols: list) -> list:
    return ["left" if key == "label" else "right" for key, _ in cols]


def latex_escape(text: str) -> str:
    """Plain text as LaTeX (a config label may hold ``_`` or ``%``); ``±`` becomes ``$\\pm$``, ``Δ`` ``$\\Delta$``."""
    return LATEX_SPECIAL.sub(lambda m: LATEX_ESCAPES[m.group()], text).replace("±", r"$\pm$").replace("–", "--") \
        .replace("Δ", r"$\Delta$")


def markdown(rows: list) -> str:
    cols = _columns(rows)
    body = [[cells(r)[k] for k, _ in cols] for r in rows]
    return tabulate(body, headers=[h for _, h in cols], tablefmt="pipe", disable_numparse=True, colalign=_align(cols))


def latex(rows: list, title: str) -> str:
    cols = _columns(rows)
    body = [[latex_escape(str(cells(r)[k])) for k, _ in cols] for r in rows]
    table = tabulate(body, headers=[latex_escape(h) for _, h in cols], tablefmt="latex_raw", disable_numparse=True,
                     colalign=_align(cols))
    legend = ("% Delta: mean difference to the baseline over the seed pairs compared; (k/n seeds): significant "
              "(p < 0.05) in k of n seed pairs\n% under both paired bootstrap resampling and paired approximate "
              "randomization; *: in every pair (see table.md)\n") if any(r.get("is_baseline") for r in rows) else ""
    return (f"% {title}\n% written by python -m normpos.report table; mean $\\pm$ sample std over finished seeds\n"
            f"{legend}{table}\n")


def csv_text(rows: list) -> str:
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))  # the baseline row has no comparison fields
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def notes(runs: list, groups: dict, baseline: str | None, compared: bool, asked: bool = True) -> list:
    scored = _scored(runs)
    lines = ["- Mean ± sample standard deviation over the finished, scored seeds; \"(k/n)\": only k of the n "
             "finished seeds are scored yet. Diverged and failed runs are counted, not averaged."]
    if scored:
        lines.append("- test BLEU (tok.): tokenized BLEU as fairseq-score computes it (Moses-tokenized, subword "
                     "removed), the number IWSLT papers print.")
        signatures = sorted({s["sacrebleu_signature"] for s in scored})
        lowercased = any("case:lc" in s for s in signatures)
        lines.append("- sacreBLEU on detokenized output against the untokenized references: "
                     + "; ".join(f"`{s}`" for s in signatures)
                     + (" (case:lc: compared lowercased, the training text is lowercased)." if lowercased else "."))
        for note in sorted({s["sacrebleu_reference_note"] for s in scored if s.get("sacrebleu_reference_note")}):
            lines.append(f"- sacreBLEU references: {note} (score.json has the score with \u2019 read as ': "
                         "sacrebleu_apostrophe_normalized).")
        chrf = sorted({s["chrf_signature"] for s in scored if s.get("chrf_signature")})
        if chrf:
            lines.append("- chrF++ (character 6-grams and word 1-2-grams, F-beta 2) on the same text as sacreBLEU: "
                         + "; ".join(f"`{s}`" for s in chrf) + ".")
        if any("compound_split_bleu" in s for s in scored):
            lines.append("- compound-split BLEU: tokenized BLEU after the ##AT## hyphen rule of tensor2tensor's "
                         "get_ende_bleu.sh, on text tokenized without -a (our -a hyphens are joined first); the WMT14 "
                         "convention of the Transformer papers, higher than plain tokenized BLEU.")
        decoding = sorted({(s["beam"], s["lenpen"], bool(s.get("averaged"))) for s in scored})
        lines.append("- Decoding: " + "; ".join(
            f"beam {b}, lenpen {lp}, " + ("average of the last epoch checkpoints" if avg else "best checkpoint")
            for b, lp, avg in decoding) + ".")
    if baseline is not None:
        label = groups[baseline][0].info["label"]
        lines.append(f"- Δ sacreBLEU / Δ chrF++ (sig.): mean difference to the baseline ({label}) over the seed "
                     "pairs compared, seed n against the baseline's seed n; (k/n seeds): the difference is significant "
                     "(p < 0.05) in k of the n pairs under both paired bootstrap resampling (1,000 resamples) and "
                     "paired approximate randomization (10,000 trials); *: in every pair. A paired test sees the test "
                     "set's sampling noise only, the seeds carry the training noise: pairing seed with seed keeps the "
                     "two apart. Every p-value and confidence interval is in the section below and in "
                     "significance.csv." if compared else
                     f"- Significance against the baseline ({label}): no seed pair could be compared (see below).")
    elif asked:
        lines.append("- No significance tests: no baseline (a Post-LN configuration with warm-up; choose one with "
                     "--baseline).")
    else:
        lines.append("- No significance tests (--no-significance).")
    lines.append("- best valid loss: minimum over validations of fairseq's validation loss (base 2, label-smoothed).")
    lines.append("- budget (updates trained): the limit each configuration was trained to (max_update / max_epoch; "
                 "\"not recorded\" for runs from before budgets were written), and in brackets the updates trained, "
                 "mean over finished seeds.")
    papers = {r.info.get("paper", {}).get("source") for rs in groups.values() for r in rs[:1] if r.info.get("paper")}
    if papers - {None}:
        lines.append(f"- paper BLEU: {'; '.join(sorted(papers - {None}))}.")
    for config, rs in groups.items():
        for r in rs:
            if r.status in (DIVERGED, FAILED):
                lines.append(f"- {config} seed {r.info['seed']}: {r.status}" + (f" ({r.reason})" if r.reason else ""))
            elif r.status == RUNNING:
                lines.append(f"- {config} seed {r.info['seed']}: still running or killed (no status.json)")
    return lines


def provenance(runs: list, root: Path, out: Path, baseline: str | None = None, compare: bool = True,
               made_by: str | None = None) -> list:
    """Where every number comes from: the commands, commits and machines, and when the table was made (with the
    options that chose the baseline row, so the command given reproduces the table; ``made_by``: the command
    of a caller that chose the runs or the title itself)."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    options = ([] if compare else ["--no-significance"]) + (["--baseline", baseline] if baseline and compare else [])
    report = made_by or shlex.join(["python", "-m", "normpos.report", "table", "--root", portable_path(root),
                                    "--out", portable_path(out), *options])
    commits = sorted({str(r.info.get("commit")) for r in runs if r.info.get("commit")})
    machines = sorted({str(r.info.get("machine")) for r in runs if r.info.get("machine")})
    lines = ["## Provenance", "",
             f"- Table written {date} by `{report}`.",
             f"- Commit(s): {', '.join(f'`{c}`' for c in commits) or 'not recorded'}.",
             f"- Machine(s): {'; '.join(machines) or 'not recorded'}.", "",
             "<details><summary>Commands (training, then test decoding)</summary>", ""]
    for run in runs:
        lines.append(f"- `{portable_path(run.path)}`: `{portable_command(run.info.get('command', 'not recorded'))}`")
        if run.score and run.score.get("command"):
            lines.append(f"  - test decoding: `{portable_command(run.score['command'])}`")
    lines += ["", "</details>"]
    return lines


def portable_command(command: str) -> str:
    """The command as it runs on any clone: the interpreter that made it (an absolute path of that machine,
    e.g. /work/main/.venv/bin/python) shown as ``python``, and paths inside the checkout relative to it."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    if not argv:
        return command
    head = ["python"] if INTERPRETER.match(argv[0]) else [argv[0]]
    portable = [*head, *(portable_path(a) if a.startswith("/") else a for a in argv[1:])]
    return command if portable == argv else shlex.join(portable)


def make_table(root: Path, out: Path, baseline: str | None = None, compare: bool = True,
               runs: list | None = None, title: str | None = None, made_by: str | None = None) -> dict:
    """Write table.md, table.tex, table.csv (and, when seed pairs were compared with the baseline,
    significance.csv and its cache significance.json) into ``out``; returns {name: path}. ``baseline`` names
    the row to compare with (default: significance.choose_baseline); ``compare=False`` skips the paired tests;
    ``runs``: the runs to report (default: every run below ``root``); ``title``: what the table is of (default:
    dataset / experiment and the section the runs recorded); ``made_by``: the command a caller that chose
    ``runs`` or ``title`` was started with (default: the ``normpos.report table`` command that gives this table)."""
    root, out = Path(root), Path(out)
    runs = load_runs(root) if runs is None else runs
    groups = by_config(runs)
    rows = [summarize(config, rs) for config, rs in groups.items()]
    base = significance.choose_baseline(groups, baseline) if compare else None
    pairs = significance.compare_runs(groups, base, out) if base is not None else []
    for row in rows:
        row["is_baseline"] = row["config"] == base
        if base is not None and not row["is_baseline"]:
            row.update(significance.summarize(pairs, row["config"]))
    title = f"{title or experiment_title(runs)}: test BLEU per configuration"
    compared = any("metrics" in p for p in pairs)
    detail = significance.detail_markdown(pairs, groups, base) if pairs else []
    md = "\n".join([f"# {title}", "", markdown(rows), "", *notes(runs, groups, base, compared, compare), "",
                    *detail, *provenance(runs, root, out, baseline, compare, made_by), ""])
    paths = {"md": out / "table.md", "tex": out / "table.tex", "csv": out / "table.csv"}
    write_text(paths["md"], md)
    write_text(paths["tex"], latex(rows, title))
    write_text(paths["csv"], csv_text(rows))
    if compared:
        paths["significance_csv"] = out / "significance.csv"
        write_text(paths["significance_csv"], significance.pairs_csv(pairs, groups))
        paths["significance_json"] = significance.save(out, base, pairs)
    return paths

