"""Paired significance tests of systems against a baseline, BLEU and chrF++, by sacreBLEU's own implementation.

sacreBLEU (Post 2018; its ``significance`` module, 2.x) implements the two paired tests MT papers report:

- **paired bootstrap resampling** (Koehn 2004; Moses' ``bootstrap-hypothesis-difference-significance.pl``),
  1,000 resamples of the test sentences; it also estimates each system's true mean score and the 95%
  confidence interval around it (sacreBLEU's ``estimate_ci``: half the width of the 2.5..97.5 percentile range);
- **paired approximate randomization** (Riezler & Maxwell 2005; MultEval), 10,000 trials, each swapping the
  two systems' outputs sentence by sentence at random.

Both p-values are two-sided: the probability of a score difference at least as large as the one observed if
the two outputs came from the same system. They measure the test set's sampling noise only, not the training
noise of a seed (the report pairs seeds for that: ``normpos.report.significance``).

The numbers are exactly those of the command line ``sacrebleu REF -i BASELINE SYS ... -m bleu chrf
--chrf-word-order 2 --paired-bs`` (and ``--paired-ar``) with ``SACREBLEU_SEED`` set (tests/test_significance.py);
the Python API is used because sacreBLEU 2.6.0's JSON output of ``--paired-bs`` fails on a float32.
sacreBLEU reads its random seed from the environment only (default 12345); it is set here for the call and
restored after.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from normpos.scoring.errors import ScoringError

BOOTSTRAP_RESAMPLES = 1000  # sacreBLEU's --paired-bs-n default (Koehn 2004 uses 1,000)
AR_TRIALS = 10000  # sacreBLEU's --paired-ar-n default
SEED = 12345  # sacreBLEU's default SACREBLEU_SEED
SIGNIFICANT = 0.05  # sacreBLEU marks p < 0.05 with "*"
BLEU_NAME, CHRF_NAME = "BLEU", "chrF2++"  # sacreBLEU's own metric names, as its tables print them
METRICS = (BLEU_NAME, CHRF_NAME)


@dataclass(frozen=True)
class MetricResult:
    """One system's result on one metric: the score, the bootstrap's mean and 95% CI half-width, and the
    p-values against the baseline (None for the baseline itself)."""

    score: float
    mean: float
    ci: float
    p_bootstrap: Optional[float] = None
    p_randomization: Optional[float] = None


@dataclass(frozen=True)
class Comparison:
    """Every system against the baseline: results[name][metric], plus each test's signature per metric."""

    baseline: str
    systems: list  # names, baseline first
    results: dict
    signatures: dict  # {"bootstrap": {metric: signature}, "randomization": {metric: signature}}
    settings: dict

    def as_json(self) -> dict:
        results = {name: {m: asdict(r) for m, r in by_metric.items()} for name, by_metric in self.results.items()}
        return {"baseline": self.baseline, "systems": self.systems, "settings": self.settings,
                "signatures": self.signatures, "results": results}


@contextmanager
def sacrebleu_seed(seed: int):
    """sacreBLEU's tests take their seed from $SACREBLEU_SEED only; set it for the duration of a call."""
    before = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = before


def metrics(lowercase: bool) -> dict:
    """BLEU and chrF++ as the command line builds them for ``-m bleu chrf --chrf-word-order 2 [-lc]``."""
    from sacrebleu.metrics import BLEU, CHRF

    # -lc lowercases BLEU only on the command line; chrF++ gets the same choice here (and in the CLI test
    # via --chrf-lowercase), so both metrics compare the same text
    return {BLEU_NAME: BLEU(lowercase=lowercase), CHRF_NAME: CHRF(word_order=2, lowercase=lowercase)}


def _check(named: list, refs: Sequence[str]) -> None:
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ScoringError(f"system names must differ, got {', '.join(names)}")
    for name, hyps in named:
        if len(hyps) != len(refs):
            raise ScoringError(f"{name} has {len(hyps)} lines but the references {len(refs)}: the files do not line up")
    if len(named) < 2:
        raise ScoringError("a paired test needs a baseline and at least one other system")


def compare(refs: Sequence[str], baseline: tuple, systems: Sequence[tuple], lowercase: bool, seed: int = SEED,
            resamples: int = BOOTSTRAP_RESAMPLES, trials: int = AR_TRIALS) -> Comparison:
    """Paired bootstrap and paired approximate randomization of every (name, hypotheses) in ``systems``
    against ``baseline`` (name, hypotheses), on BLEU and chrF++, against one reference stream."""
    from sacrebleu.significance import PairedTest

    named = [(baseline[0], list(baseline[1]))] + [(name, list(hyps)) for name, hyps in systems]
    refs = list(refs)
    _check(named, refs)
    with sacrebleu_seed(seed):
        # a fresh metric object per test: sacreBLEU caches reference statistics inside the metric
        bs_sigs, bs = PairedTest(named, metrics(lowercase), [refs], test_type="bs", n_samples=resamples)()
        ar_sigs, ar = PairedTest(named, metrics(lowercase), [refs], test_type="ar", n_samples=trials)()
    results = {}
    for i, (name, _) in enumerate(named):
        results[name] = {}
        for metric in METRICS:
            b, a = bs[metric][i], ar[metric][i]
            results[name][metric] = MetricResult(score=float(b.score), mean=float(b.mean), ci=float(b.ci),
                                                 p_bootstrap=None if i == 0 else float(b.p_value),
                                                 p_randomization=None if i == 0 else float(a.p_value))
    signatures = {"bootstrap": {m: str(s) for m, s in bs_sigs.items()},
                  "randomization": {m: str(s) for m, s in ar_sigs.items()}}
    settings = {"seed": seed, "bootstrap_resamples": resamples, "randomization_trials": trials,
                "lowercase": lowercase, "sentences": len(refs)}
    return Comparison(baseline=baseline[0], systems=[name for name, _ in named], results=results,
                      signatures=signatures, settings=settings)


def mark(p_values: Sequence[Optional[float]]) -> str:
    """sacreBLEU's "*" when every given p-value is below 0.05, else ""."""
    known = [p for p in p_values if p is not None]
    return "*" if known and all(p < SIGNIFICANT for p in known) else ""


def text_table(comparison: Comparison) -> str:
    """The comparison as a plain-text table: score (bootstrap mean ± 95% CI) and both p-values per metric."""
    from tabulate import tabulate

    rows = []
    for name in comparison.systems:
        row = [("Baseline: " if name == comparison.baseline else "") + name]
        for metric in METRICS:
            r = comparison.results[name][metric]
            cell = f"{r.score:.2f} ({r.mean:.2f} ± {r.ci:.2f})"
            if r.p_bootstrap is not None:
                cell += (f" p_bs = {r.p_bootstrap:.4f}{mark([r.p_bootstrap])}"
                         f" p_ar = {r.p_randomization:.4f}{mark([r.p_randomization])}")
            row.append(cell)
        rows.append(row)
    s = comparison.settings
    head = ["system", *(f"{m} (μ ± 95% CI)" for m in METRICS)]
    lines = [tabulate(rows, headers=head, tablefmt="simple", disable_numparse=True), "",
             f"Paired bootstrap resampling ({s['bootstrap_resamples']} resamples) and paired approximate "
             f"randomization ({s['randomization_trials']} trials) against the baseline, seed {s['seed']}; "
             "* p < 0.05. Signatures:"]
    for test, by_metric in comparison.signatures.items():
        lines += [f"  {test}: {m}: {sig}" for m, sig in by_metric.items()]
    return "\n".join(lines)
