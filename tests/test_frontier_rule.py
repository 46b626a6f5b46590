"""The frontier's rule on real fairseq logs: a run that trains, one that stalls, one that diverges; and the bar.

The trains / stalls cases replay committed fairseq logs of the paper's IWSLT-size model on Multi30k (one H100,
``results/multi30k/h100-partial``) through the runner's own log reader up to their first validation: Post-LN at
lr 1e-3 without warm-up and Pre-LN at 5e-4. The bar is computed from the prepared Multi30k (skipped when
absent). The diverged case is a real run of the sweep app at lr 100 on the tiny corpus. The unigram bar is
checked against a computation from the raw text that shares no code with it (no fairseq).
"""

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO
from normpos.experiment.watch import Watcher, save_metrics
from normpos.files import write_json
from normpos.frontier.classify import DIVERGES, STALLS, classify
from normpos.frontier.plan import TRAINS
from normpos.frontier.unigram import unigram_cross_entropy

H100 = REPO / "results" / "multi30k" / "h100-partial"
POST_LN = H100 / "runs-sec3_postln_adam" / "post_ln_adam_lr-1e-3_warmup-inverse-sqrt_wu-1" / "seed-1" / "train.log"
PRE_LN = H100 / "runs-sec4_preln_vs_postln" / "pre_ln_adam_lr-5e-4_step-once" / "seed-1" / "train.log"
MULTI30K = REPO / "data" / "multi30k" / "bpe8000" / "bin"
MARGIN = 0.5  # the presets' margin_bits


@pytest.fixture(scope="module")
def multi30k_bar():
    if not (MULTI30K / "dict.en.txt").is_file():
        pytest.skip(f"prepared Multi30k absent: {MULTI30K} (make data-multi30k)")
    return unigram_cross_entropy(str(MULTI30K), "de", "en")


def replay(log: Path, directory: Path) -> float:
    """A run folder as the runner leaves it had the run stopped at its first validation: the watcher reads the
    real log lines into metrics.jsonl (with valid_nll_loss); status.json is what run_one writes for a finished
    run. Returns the nll fairseq printed there."""
    metrics = {}
    watcher = Watcher(1.5, metrics)
    for line in log.read_text(encoding="utf-8").splitlines(keepends=True):
        if watcher.feed(line):
            break
    directory.mkdir(parents=True)
    save_metrics(directory / "metrics.jsonl", metrics)
    (row,) = metrics.values()
    write_json(directory / "run.json", {"config": directory.name, "seed": 1})
    write_json(directory / "status.json", {"status": "finished", "num_updates": row["num_updates"], "reason": "",
                                           "wall_seconds": 1.0})
    printed = [json.loads(line[line.index("{"):]) for line in log.read_text().splitlines() if "| valid |" in line
               or "INFO:valid:" in line][0]
    return float(printed["valid_nll_loss"])


def test_post_ln_without_warmup_stalls_at_the_unigram_level_and_pre_ln_trains(multi30k_bar, tmp_path):
    bar = multi30k_bar["bits"] - MARGIN
    post = replay(POST_LN, tmp_path / "post")
    pre = replay(PRE_LN, tmp_path / "pre")
    stalled, trained = classify(tmp_path / "post", bar), classify(tmp_path / "pre", bar)
    assert (stalled.kind, trained.kind) == (STALLS, TRAINS)
    assert (stalled.nll, trained.nll) == (post, pre)  # fairseq's own number reached the rule
    # the bar is the right yardstick: Post-LN's plateau is the unigram model's cross-entropy (within 0.1 bit),
    # while one epoch of Pre-LN is 2 bits below it
    assert abs(post - multi30k_bar["bits"]) < 0.1
    assert pre < multi30k_bar["bits"] - 2
    # below means strictly below
    assert classify(tmp_path / "post", post + 1e-6).kind == TRAINS and classify(tmp_path / "post", post).kind == STALLS


@pytest.mark.slow
def test_a_diverging_run_of_the_sweep_app_is_classified_diverges(tiny_bin, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "normpos.sweep", "experiment=frontier_tiny", "optim.lr=100", f"run.root={tmp_path}",
         f"dataset.data_bin={tiny_bin}", f"dataset.ref_dir={tiny_bin.parent / 'ref'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (directory,) = [p.parent for p in tmp_path.rglob("status.json")]
    outcome = classify(directory, bar_bits=100.0)  # any bar: a diverged run never trains
    assert outcome.kind == DIVERGES and outcome.updates < 6, outcome  # stopped at once, not after N updates


@pytest.mark.slow
def test_the_unigram_bar_equals_a_count_of_the_raw_text(tiny_bin):
    got = unigram_cross_entropy(str(tiny_bin), "de", "en")
    text = tiny_bin.parent
    symbols = [line.split()[0] for line in (tiny_bin / "dict.en.txt").read_text(encoding="utf-8").splitlines()]
    vocab = len(symbols) + 4  # fairseq's <s>, <pad>, </s>, <unk> come before the file's symbols
    known = set(symbols)

    def tokens(split):
        out = Counter()
        for line in (text / f"{split}.en").read_text(encoding="utf-8").splitlines():
            out.update(w if w in known else "<unk>" for w in line.split())
            out["</s>"] += 1
        return out

    train, valid = tokens("train"), tokens("valid")
    n = sum(train.values())
    want = -sum(c * math.log2((train[t] + 1) / (n + vocab)) for t, c in valid.items()) / sum(valid.values())
    assert got["bits"] == pytest.approx(want, abs=1e-9)
    assert (got["train_tokens"], got["valid_tokens"], got["vocab"]) == (n, sum(valid.values()), vocab)
