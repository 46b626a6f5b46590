"""``make table``'s significance against the baseline, on run directories with real decoded files (150
newstest2014 English references, outputs with words dropped): the paper's baseline is found, seed n is paired
with the baseline's seed n, the numbers equal the sacrebleu command line's on the same files, the marks say
what the p-values say in Markdown, LaTeX and CSV, the cache is reused until an output changes, and
``--baseline`` chooses another row."""

import csv
import json
import random
import subprocess
import sys

import pytest

from conftest import shared_data
from normpos.data.sgm import segments
from normpos.report.table import make_table
from normpos.scoring.significance import SEED
from test_significance import sacrebleu_cli

POST_WU, PRE, POST_NO_WU = "post_ln_wu-4000_0a1b2c3d", "pre_ln_step-once_4e5f6a7b", "post_ln_wu-1_8c9d0e1f"
LABELS = {POST_WU: "Post-LN, warm-up 4000", PRE: "Pre-LN, no warm-up", POST_NO_WU: "Post-LN, no warm-up"}
DROP = {POST_WU: 0.3, PRE: 0.15, POST_NO_WU: 0.3}  # Pre-LN clearly better; Post-LN without warm-up as the baseline


def noisy(lines, drop, seed):
    rng = random.Random(seed)
    return [" ".join(w for w in line.split() if rng.random() > drop) for line in lines]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def experiment(tmp_path):
    refs = list(segments(shared_data("wmt14", "test-full", "newstest2014-deen-ref.en.sgm")))[:150]
    (tmp_path / "ref").mkdir()
    write(tmp_path / "ref" / "test.en", refs)
    root = tmp_path / "runs"
    for n, config in enumerate((POST_WU, PRE, POST_NO_WU)):
        scheme, wu, scheduler = {POST_WU: ("post_ln", 4000, "warmup_inverse_sqrt"),
                                 PRE: ("pre_ln", 4000, "step_once"),  # as describe() writes it: W recorded, unread
                                 POST_NO_WU: ("post_ln", 1, "warmup_inverse_sqrt")}[config]
        for seed in (1, 2):
            run = root / config / f"seed-{seed}"
            run.mkdir(parents=True)
            (run / "run.json").write_text(json.dumps({
                "config": config, "slug": config.rsplit("_", 1)[0], "label": LABELS[config], "seed": seed,
                "scheme": scheme, "optimizer": "adam", "lr": 5e-4, "lr_scheduler": scheduler, "warmup_updates": wu,
                "ref_dir": str(tmp_path / "ref"), "target_lang": "en", "dataset": "wmt14", "experiment": "x"}))
            (run / "status.json").write_text(json.dumps({"status": "finished", "reason": "", "epochs": 1,
                                                         "num_updates": 10}))
            (run / "score.json").write_text(json.dumps({"scored": True, "lowercase": False, "test_tok_bleu": 1.0,
                                                        "sacrebleu": 1.0, "sacrebleu_signature": "s", "beam": 4,
                                                        "lenpen": 0.6}))
            write(run / "test.hyp.detok.txt", noisy(refs, DROP[config], seed + 10 * n))
    return root


def test_table_compares_each_seed_with_the_baselines_same_seed(experiment, tmp_path):
    out = tmp_path / "out"
    paths = make_table(experiment, out)
    rows = {r["config"]: r for r in csv.DictReader(open(paths["csv"], encoding="utf-8"))}
    assert rows[POST_WU]["is_baseline"] == "True"  # Post-LN with 4,000 warm-up updates, the paper's baseline
    pairs = list(csv.DictReader(open(paths["significance_csv"], encoding="utf-8")))
    # the table's order (Post-LN before Pre-LN, by warm-up), the baseline left out
    assert [(p["config"], p["seed"]) for p in pairs] == [(POST_NO_WU, "1"), (POST_NO_WU, "2"), (PRE, "1"), (PRE, "2")]

    # every number of the Pre-LN seed-2 pair is the sacrebleu command line's for the same two files and seed
    pre2 = next(p for p in pairs if (p["config"], p["seed"]) == (PRE, "2"))
    files = [experiment / POST_WU / "seed-2" / "test.hyp.detok.txt", experiment / PRE / "seed-2" / "test.hyp.detok.txt"]
    bs, _ = sacrebleu_cli(experiment.parent / "ref" / "test.en", files, "bs", SEED, lowercase=False)
    ar, _ = sacrebleu_cli(experiment.parent / "ref" / "test.en", files, "ar", SEED, lowercase=False)
    for metric, key in (("BLEU", "sacrebleu"), ("chrF2++", "chrf")):
        ours = [float(pre2[f"{key}_{f}"]) for f in ("score", "mean", "ci", "p_bootstrap")]
        assert [round(v, 4) for v in ours] == bs[str(files[1])][metric]
        assert [round(float(pre2[f"{key}_{f}"]), 4) for f in ("baseline_score", "baseline_mean", "baseline_ci")] == \
            bs[str(files[0])][metric]
        assert round(float(pre2[f"{key}_p_randomization"]), 4) == ar[str(files[1])][metric][1]
        delta = float(pre2[f"{key}_score"]) - float(pre2[f"{key}_baseline_score"])
        assert float(pre2[f"{key}_delta"]) == pytest.approx(delta)

    # marks: Pre-LN is significant in both pairs under both tests; the same-noise Post-LN row is not
    assert (rows[PRE]["sacrebleu_mark"], rows[PRE]["sacrebleu_significant_pairs"], rows[PRE]["seed_pairs"]) == \
        ("*", "2", "2")
    assert rows[POST_NO_WU]["sacrebleu_mark"] == "" and rows[POST_NO_WU]["chrf_significant_pairs"] == "0"
    assert rows[PRE]["sacrebleu_p_bootstrap"] == ";".join(f"{float(p['sacrebleu_p_bootstrap']):.4f}"
                                                          for p in pairs if p["config"] == PRE)
    md = paths["md"].read_text(encoding="utf-8")
    pre_line = next(line for line in md.splitlines() if line.startswith("| Pre-LN, no warm-up "))
    mean_delta = (float(pairs[2]["sacrebleu_delta"]) + float(pairs[3]["sacrebleu_delta"])) / 2
    assert f"{mean_delta:+.2f} * (2/2 seeds)" in pre_line
    assert "(0/2 seeds)" in next(line for line in md.splitlines() if line.startswith("| Post-LN, no warm-up "))
    assert "## Significance against the baseline" in md and "bs:1000|seed:12345" in md and "ar:10000" in md
    tex = paths["tex"].read_text(encoding="utf-8")
    assert r"$\Delta$ sacreBLEU (sig.)" in tex and f"{mean_delta:+.2f} * (2/2 seeds)" in tex


def test_cached_pairs_are_reused_until_an_output_changes(experiment, tmp_path):
    out = tmp_path / "out"
    make_table(experiment, out)
    cache = json.loads((out / "significance.json").read_text())
    for pair in cache["pairs"]:
        pair["metrics"]["BLEU"]["p_bootstrap"] = 0.9999  # a value no test gave: shows where the number came from
    (out / "significance.json").write_text(json.dumps(cache))
    make_table(experiment, out)
    pairs = list(csv.DictReader(open(out / "significance.csv", encoding="utf-8")))
    assert {p["sacrebleu_p_bootstrap"] for p in pairs} == {"0.9999"}

    write(experiment / PRE / "seed-1" / "test.hyp.detok.txt",
          (experiment / POST_WU / "seed-1" / "test.hyp.detok.txt").read_text(encoding="utf-8").splitlines())
    paths = make_table(experiment, out)
    pairs = {(p["config"], p["seed"]): p for p in csv.DictReader(open(out / "significance.csv", encoding="utf-8"))}
    same = pairs[(PRE, "1")]  # now the baseline's own output: recomputed, no difference at all
    assert float(same["sacrebleu_delta"]) == 0 and same["sacrebleu_p_bootstrap"] != "0.9999"
    # sacreBLEU gives identical outputs p = 1/1001 (its strict ">" count); a zero difference is not marked
    assert float(same["sacrebleu_p_bootstrap"]) == pytest.approx(1 / 1001) and same["sacrebleu_mark"] == ""
    assert pairs[(PRE, "2")]["sacrebleu_p_bootstrap"] == "0.9999"  # unchanged inputs: still the cached value
    rows = {r["config"]: r for r in csv.DictReader(open(paths["csv"], encoding="utf-8"))}
    assert (rows[PRE]["sacrebleu_significant_pairs"], rows[PRE]["sacrebleu_mark"]) == ("0", "")


def test_baseline_option_and_its_errors(experiment, tmp_path):
    out = tmp_path / "out"
    paths = make_table(experiment, out, baseline="Pre-LN, no warm-up")  # by label
    rows = {r["config"]: r for r in csv.DictReader(open(paths["csv"], encoding="utf-8"))}
    assert rows[PRE]["is_baseline"] == "True" and rows[POST_WU]["sacrebleu_mark"] == "*"
    # the provenance line gives the command that makes this table, baseline included
    assert f"--out {out} --baseline 'Pre-LN, no warm-up'`." in paths["md"].read_text(encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "normpos.report", "table", "--root", str(experiment), "--out",
                           str(out), "--baseline", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("normpos: error: --baseline 'nope' is none of this "
                                                           "experiment's configurations: ")
    assert len(proc.stderr.splitlines()) == 1
    skipped = make_table(experiment, tmp_path / "plain", compare=False)
    assert "significance_csv" not in skipped and "(sig.)" not in skipped["md"].read_text(encoding="utf-8")
    assert " --no-significance`." in skipped["md"].read_text(encoding="utf-8")
