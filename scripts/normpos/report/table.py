"""The results table of one experiment (``make table``): Markdown, LaTeX and CSV, one row per configuration.

Per configuration (all seeds of one ``run.json["config"]``): runs, how many diverged or failed, test
tokenized BLEU and sacreBLEU as mean +- sample standard deviation over the finished, scored seeds, the best
validation loss (fairseq's base-2 units) and the epochs trained, both averaged over finished seeds, and the
paper's number in its own column where ``run.json["paper"]`` has one (Xiong et al. 2020, sec. 3.2, print
BLEU for some IWSLT14 settings only). The Markdown file ends with the notes a reader needs (which BLEU,
the sacreBLEU signature, decoding settings) and the provenance of every number (commit, machine, command).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from normpos.files import write_text
from normpos.report.runs import DIVERGED, FAILED, FINISHED, RUNNING, by_config, experiment_title, load_runs, mean_std

# Column key, Markdown/LaTeX header
COLUMNS = [
    ("label", "configuration"),
    ("runs", "seeds"),
    ("diverged", "diverged"),
    ("failed", "failed"),
    ("tok_bleu", "test BLEU (tok.)"),
    ("sacrebleu", "sacreBLEU"),
    ("compound_split_bleu", "compound-split BLEU"),
    ("best_valid_loss", "best valid loss"),
    ("epochs", "epochs"),
    ("paper", "paper BLEU"),
]
LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX_ESCAPES)))
SCORES = {"tok_bleu": "test_tok_bleu", "sacrebleu": "sacrebleu", "compound_split_bleu": "compound_split_bleu"}


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
    paper = row["paper_test_bleu"]  # a number, or text such as "~34" for a value read off a figure
    out["paper"] = "–" if paper is None else (f"{paper:.2f}" if isinstance(paper, (int, float)) else str(paper))
    return out


def _columns(rows: list) -> list:
    # The compound-split column exists for WMT14 only (run.json compound_split); hide it when empty.
    return [(k, h) for k, h in COLUMNS if k != "compound_split_bleu" or any(r["compound_split_bleu_n"] for r in rows)]


def _align(cols: list) -> list:
    return ["left" if key == "label" else "right" for key, _ in cols]


def latex_escape(text: str) -> str:
    """Plain text as LaTeX (a config label may hold ``_`` or ``%``); ``±`` becomes ``$\\pm$``."""
    return LATEX_SPECIAL.sub(lambda m: LATEX_ESCAPES[m.group()], text).replace("±", r"$\pm$").replace("–", "--")


def markdown(rows: list) -> str:
    cols = _columns(rows)
    body = [[cells(r)[k] for k, _ in cols] for r in rows]
    return tabulate(body, headers=[h for _, h in cols], tablefmt="pipe", disable_numparse=True, colalign=_align(cols))


def latex(rows: list, title: str) -> str:
    cols = _columns(rows)
    body = [[latex_escape(str(cells(r)[k])) for k, _ in cols] for r in rows]
    table = tabulate(body, headers=[latex_escape(h) for _, h in cols], tablefmt="latex_raw", disable_numparse=True,
                     colalign=_align(cols))
    return (f"% {title}\n% written by python -m normpos.report table; mean $\\pm$ sample std over finished seeds\n"
            f"{table}\n")


def csv_text(rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def notes(runs: list, groups: dict) -> list:
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
        if any("compound_split_bleu" in s for s in scored):
            lines.append("- compound-split BLEU: tokenized BLEU after fairseq's compound_split_bleu.sh hyphen rule "
                         "(WMT14 convention; higher than plain tokenized BLEU).")
        decoding = sorted({(s["beam"], s["lenpen"], bool(s.get("averaged"))) for s in scored})
        lines.append("- Decoding: " + "; ".join(
            f"beam {b}, lenpen {lp}, " + ("average of the last epoch checkpoints" if avg else "best checkpoint")
            for b, lp, avg in decoding) + ".")
    lines.append("- best valid loss: minimum over validations of fairseq's validation loss (base 2, label-smoothed).")
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


def provenance(runs: list, root: Path, out: Path) -> list:
    """Where every number comes from: the commands, commits and machines, and when the table was made."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commits = sorted({str(r.info.get("commit")) for r in runs if r.info.get("commit")})
    machines = sorted({str(r.info.get("machine")) for r in runs if r.info.get("machine")})
    lines = ["## Provenance", "",
             f"- Table written {date} by `python -m normpos.report table --root {root} --out {out}`.",
             f"- Commit(s): {', '.join(f'`{c}`' for c in commits) or 'not recorded'}.",
             f"- Machine(s): {'; '.join(machines) or 'not recorded'}.", "",
             "<details><summary>Commands (training, then test decoding)</summary>", ""]
    for run in runs:
        lines.append(f"- `{run.path}`: `{run.info.get('command', 'not recorded')}`")
        if run.score and run.score.get("command"):
            lines.append(f"  - test decoding: `{run.score['command']}`")
    lines += ["", "</details>"]
    return lines


def make_table(root: Path, out: Path) -> dict:
    """Write table.md, table.tex, table.csv into ``out``; returns {name: path}."""
    root, out = Path(root), Path(out)
    runs = load_runs(root)
    groups = by_config(runs)
    rows = [summarize(config, rs) for config, rs in groups.items()]
    title = f"{experiment_title(runs)}: test BLEU per configuration"
    md = "\n".join([f"# {title}", "", markdown(rows), "", *notes(runs, groups), "", *provenance(runs, root, out), ""])
    paths = {"md": out / "table.md", "tex": out / "table.tex", "csv": out / "table.csv"}
    write_text(paths["md"], md)
    write_text(paths["tex"], latex(rows, title))
    write_text(paths["csv"], csv_text(rows))
    return paths

