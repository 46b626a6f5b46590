"""Each configuration of an experiment against its baseline row, seed by seed, by paired significance tests.

The baseline is the paper's: Post-LN with learning-rate warm-up (Xiong et al. 2020, sec. 3.2 and 4 compare
everything with Post-LN warmed up over 4,000 updates), i.e. the Post-LN configuration with warm-up, preferring
4,000 warm-up updates, first in the table's order; ``--baseline NAME`` (configuration folder, slug or label)
chooses another. Each other configuration is compared on the test set with
``normpos.scoring.significance`` (sacreBLEU's paired bootstrap resampling, 1,000 resamples, and paired
approximate randomization, 10,000 trials; sacreBLEU and chrF++ on the detokenized output against the
untokenized references, as ``score.json`` scored them).

How seeds enter: seed n of a configuration is compared with seed n of the baseline, for every seed both have
finished and scored, and every p-value is shown. A paired test asks whether the test set's sampling alone
could produce the difference between two outputs; training noise is what the seeds carry, and the tests do
not see it. Pairing seed with seed keeps the two apart: a difference that is significant in every pair under
both tests holds across the training noise seen, one that is significant in some pairs only does not.
Pooling all seeds' outputs into one larger test set would count training noise as test-set evidence, and a
seed-averaged checkpoint would test a model that none of the table's rows is.

The per-seed results are kept in ``significance.json`` beside the table, with a fingerprint of their inputs
(sha256 of both outputs and the references, the settings, sacreBLEU's version): ``make table`` recomputes
only the pairs whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from importlib.metadata import version
from pathlib import Path

from normpos.report.runs import FINISHED, ReportError, has_warmup
from normpos.scoring import significance
from normpos.scoring.errors import ScoringError

PAPER_WARMUP = 4000  # Xiong et al. 2020: the Post-LN baseline warms up over 4,000 updates
HYPOTHESES = "test.hyp.detok.txt"  # what sacreBLEU scored (normpos.scoring.score_run)
CACHE = "significance.json"
METRIC_KEYS = {significance.BLEU_NAME: "sacrebleu", significance.CHRF_NAME: "chrf"}  # -> table column keys


def choose_baseline(groups: dict, asked: str | None = None) -> str | None:
    """The configuration (group key) every other row is compared with, or None when there is none."""
    def info(config):
        return groups[config][0].info

    if asked:
        for config in groups:
            if asked in (config, info(config).get("slug"), info(config).get("label")):
                return config
        raise ReportError(f"--baseline {asked!r} is none of this experiment's configurations: "
                          + ", ".join(groups))
    warmed = [c for c in groups if info(c).get("scheme") == "post_ln" and has_warmup(info(c))]
    paper = [c for c in warmed if int(info(c).get("warmup_updates") or 0) == PAPER_WARMUP]
    return (paper or warmed or [None])[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decoded_test_set(run) -> dict:
    """What a run contributes to a paired test (its decoded test set, references, lowercasing), or
    ``{"why": reason}`` when it has none."""
    from normpos.scoring.score_run import reference_file

    if run.status != FINISHED or not (run.score or {}).get("scored"):
        return {"why": f"seed {run.info['seed']} is {run.status}" + ("" if run.status != FINISHED else ", not scored")}
    hyp = run.path / HYPOTHESES
    if not hyp.is_file():
        return {"why": f"seed {run.info['seed']} has no {HYPOTHESES} (rescore it: python -m normpos.scoring)"}
    try:
        ref = reference_file(run.info, run.path)
    except ScoringError as err:
        return {"why": f"seed {run.info['seed']}: {err}"}
    return {"hyp": hyp, "ref": ref, "lowercase": bool(run.score.get("lowercase"))}


def fingerprint(system: dict, baseline: dict) -> dict:
    return {"system": _sha256(system["hyp"]), "baseline": _sha256(baseline["hyp"]), "refs": _sha256(system["ref"]),
            "lowercase": system["lowercase"], "seed": significance.SEED,
            "bootstrap_resamples": significance.BOOTSTRAP_RESAMPLES, "randomization_trials": significance.AR_TRIALS,
            "sacrebleu": version("sacrebleu")}


def _read_cache(out: Path) -> list:
    path = out / CACHE
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("pairs", [])
    except (json.JSONDecodeError, AttributeError):
        return []  # a damaged cache is recomputed, not trusted


def _pair_record(config: str, seed, comparison, fp: dict) -> dict:
    name, base = str(config), comparison.baseline
    metrics = {}
    for metric in significance.METRICS:
        sys_r, base_r = comparison.results[name][metric], comparison.results[base][metric]
        metrics[metric] = {"score": sys_r.score, "mean": sys_r.mean, "ci": sys_r.ci,
                           "baseline_score": base_r.score, "baseline_mean": base_r.mean, "baseline_ci": base_r.ci,
                           "delta": sys_r.score - base_r.score, "p_bootstrap": sys_r.p_bootstrap,
                           "p_randomization": sys_r.p_randomization}
    return {"config": config, "seed": seed, "fingerprint": fp, "metrics": metrics,
            "signatures": comparison.signatures}


def compare_runs(groups: dict, baseline: str, out: Path) -> list:
    """One record per (configuration, seed) other than the baseline: its metrics against the baseline's same
    seed, or why it was not compared. Reuses ``out/significance.json`` where the inputs are unchanged."""
    base_runs = {r.info["seed"]: r for r in groups[baseline]}
    cached = {(p["config"], p["seed"]): p for p in _read_cache(out) if "metrics" in p}
    records, todo = {}, {}  # todo: seed -> [(config, system inputs, fingerprint)]
    for config, runs in groups.items():
        if config == baseline:
            continue
        for run in runs:
            seed = run.info["seed"]
            system = decoded_test_set(run)
            base = decoded_test_set(base_runs[seed]) if seed in base_runs else \
                {"why": f"the baseline has no seed {seed}"}
            why = system.get("why") or (f"baseline {base['why']}" if "why" in base else None)
            if why is None and (system["ref"] != base["ref"] or system["lowercase"] != base["lowercase"]):
                why = "other references or lowercasing than the baseline's"
            if why:
                records[(config, seed)] = {"config": config, "seed": seed, "not_compared": why}
                continue
            fp = fingerprint(system, base)
            old = cached.get((config, seed))
            if old and old.get("fingerprint") == fp:
                records[(config, seed)] = old
            else:
                todo.setdefault(seed, []).append((config, system, fp))
    for seed, systems in todo.items():
        base = decoded_test_set(base_runs[seed])
        refs = _lines(base["ref"])
        # one call per seed: the baseline's statistics are computed once for all configurations
        comparison = significance.compare(refs, (str(baseline), _lines(base["hyp"])),
                                          [(str(config), _lines(system["hyp"])) for config, system, _ in systems],
                                          lowercase=base["lowercase"])
        for config, _, fp in systems:
            records[(config, seed)] = _pair_record(config, seed, comparison, fp)
    order = [(c, r.info["seed"]) for c, runs in groups.items() if c != baseline for r in runs]
    return [records[key] for key in order]


def _lines(path: Path) -> list:
    from normpos.data.textfiles import read_lines

    return list(read_lines(path))


def significant(m: dict) -> bool:
    """Both tests give p < 0.05 and the scores differ. sacreBLEU counts resamples whose difference is strictly
    larger than the observed one, so two identical outputs get p = 1/(n+1) from both tests; a zero difference
    is never marked."""
    return m["delta"] != 0 and significance.mark([m["p_bootstrap"], m["p_randomization"]]) == "*"


def summarize(pairs: list, config: str) -> dict:
    """The table row's significance fields of ``config``: per metric, the mean difference to the baseline over
    the compared seeds, how many seed pairs are significant under both tests, the mark, and every p-value."""
    mine = [p for p in pairs if p["config"] == config and "metrics" in p]
    row = {"seed_pairs": len(mine)}
    for metric, key in METRIC_KEYS.items():
        found = [p["metrics"][metric] for p in mine]
        both = [significant(m) for m in found]
        row[f"{key}_delta_mean"] = statistics.fmean(m["delta"] for m in found) if found else None
        row[f"{key}_significant_pairs"] = sum(both)
        row[f"{key}_mark"] = "*" if found and all(both) else ""
        row[f"{key}_p_bootstrap"] = ";".join(f"{m['p_bootstrap']:.4f}" for m in found)
        row[f"{key}_p_randomization"] = ";".join(f"{m['p_randomization']:.4f}" for m in found)
    return row


def cell(row: dict, key: str) -> str:
    """``+1.23 * (3/3 seeds)``: mean difference to the baseline; the seed pairs in which it is significant
    under both tests, of those compared; ``*`` when that is every pair."""
    if row.get("is_baseline"):
        return "baseline"
    if not row.get("seed_pairs"):
        return "–"
    mark = " *" if row[f"{key}_mark"] else ""
    return f"{row[f'{key}_delta_mean']:+.2f}{mark} ({row[f'{key}_significant_pairs']}/{row['seed_pairs']} seeds)"


def save(out: Path, baseline: str, pairs: list) -> Path:
    """``significance.json``: every per-seed result with its fingerprint (the cache of the next ``make table``)."""
    from normpos.files import write_json

    path = Path(out) / CACHE
    write_json(path, {"baseline": baseline, "tests": {
        "bootstrap_resamples": significance.BOOTSTRAP_RESAMPLES, "randomization_trials": significance.AR_TRIALS,
        "seed": significance.SEED, "seeds_paired": "seed n of each configuration against seed n of the baseline"},
        "pairs": pairs})
    return path


def _ci(score: float, mean: float, ci: float) -> str:
    return f"{score:.2f} ({mean:.2f} ± {ci:.2f})"


def detail_markdown(pairs: list, groups: dict, baseline: str) -> list:
    """The section listing every seed pair: both scores with the bootstrap's mean and 95% CI, the difference,
    both p-values per metric; then the signatures and the pairs that could not be compared."""
    from tabulate import tabulate

    head = ["configuration", "seed"]
    for metric in significance.METRICS:
        name = "sacreBLEU" if metric == significance.BLEU_NAME else "chrF++"
        head += [f"{name} (μ ± 95% CI)", f"baseline {name}", "Δ", "p bootstrap", "p AR"]
    body, skipped = [], []
    for p in pairs:
        label = groups[p["config"]][0].info["label"]
        if "metrics" not in p:
            skipped.append(f"- {label}, seed {p['seed']}: not compared ({p['not_compared']}).")
            continue
        row = [label, str(p["seed"])]
        for metric in significance.METRICS:
            m = p["metrics"][metric]
            row += [_ci(m["score"], m["mean"], m["ci"]), _ci(m["baseline_score"], m["baseline_mean"], m["baseline_ci"]),
                    f"{m['delta']:+.2f}", f"{m['p_bootstrap']:.4f}{significance.mark([m['p_bootstrap']])}",
                    f"{m['p_randomization']:.4f}{significance.mark([m['p_randomization']])}"]
        body.append(row)
    lines = ["## Significance against the baseline", "",
             f"Baseline: {groups[baseline][0].info['label']}. Seed n of each configuration against seed n of the "
             f"baseline on the test set: paired bootstrap resampling ({significance.BOOTSTRAP_RESAMPLES} resamples; "
             "it gives each score's bootstrap mean μ and 95% confidence interval) and paired approximate "
             f"randomization ({significance.AR_TRIALS} trials), sacreBLEU's implementation; * p < 0.05.", ""]
    if body:
        lines += [tabulate(body, headers=head, tablefmt="pipe", disable_numparse=True), ""]
        signatures = {}
        for p in pairs:
            for test, by_metric in p.get("signatures", {}).items():
                for metric, sig in by_metric.items():
                    signatures.setdefault((test, metric), set()).add(sig)
        lines += [f"- {test} {metric}: " + "; ".join(f"`{s}`" for s in sorted(sigs))
                  for (test, metric), sigs in sorted(signatures.items())]
    return lines + skipped + [""]


def pairs_csv(pairs: list, groups: dict) -> str:
    """``significance.csv``: one row per compared seed pair, every number unrounded."""
    import csv
    import io

    fields = ["config", "label", "seed"]
    for key in METRIC_KEYS.values():
        fields += [f"{key}_{f}" for f in ("score", "mean", "ci", "baseline_score", "baseline_mean", "baseline_ci",
                                          "delta", "p_bootstrap", "p_randomization", "mark")]
    fields.append("not_compared")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for p in pairs:
        row = {"config": p["config"], "label": groups[p["config"]][0].info["label"], "seed": p["seed"],
               "not_compared": p.get("not_compared", "")}
        for metric, key in METRIC_KEYS.items():
            m = p.get("metrics", {}).get(metric)
            if m:
                row.update({f"{key}_{f}": m[f] for f in ("score", "mean", "ci", "baseline_score", "baseline_mean",
                                                          "baseline_ci", "delta", "p_bootstrap", "p_randomization")})
                row[f"{key}_mark"] = "*" if significant(m) else ""
        writer.writerow(row)
    return buffer.getvalue()
