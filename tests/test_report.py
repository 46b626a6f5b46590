"""Reports from fabricated run directories (three configurations x seeds, one seed diverged): the table's
means, standard deviations, diverged counts and paper column in all three formats; the curves and the
speed-up figure (Pre-LN reaches Post-LN's epoch-15 valid loss and BLEU at epoch 9, as built in); errors."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from normpos.report.figures import make_figures
from normpos.report.table import make_table

SIGNATURE = "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0"
POST_WU = "post_ln_adam_lr-5e-4_wu-4000"
POST_NO_WU = "post_ln_adam_lr-5e-4_wu-1"
PRE = "pre_ln_adam_lr-5e-4_wu-1_step-once"


def post_ln_warmup(epoch, offset):
    # valid loss 4 + 6/e: 4.4 at epoch 15; BLEU 34 (1 - exp(-e/5)): 32.31 at epoch 15
    return 4 + 6 / epoch + offset, 34 * (1 - math.exp(-epoch / 5))


def pre_ln(epoch, offset):
    # reaches 4.4 first at epoch 9 (4.389; 4.4375 at 8) and 32.31 BLEU first at epoch 9 (32.78; 32.10 at 8)
    return 4 + 3.5 / epoch + offset, 34.5 * (1 - math.exp(-epoch / 3))


def post_ln_no_warmup(epoch, offset):
    return 7 + 2 / epoch + offset, 8 * (1 - math.exp(-epoch / 5))


def fabricate(root: Path, config, label, scheme, warmup, seed, curve, epochs, status="finished", score=None,
              paper=None, nan_after=None, budget_in=(), python="python"):
    """A run directory as the sweep writes it; ``budget_in`` names the files that record the budget
    (run.json, status.json; none: a run from before budgets were recorded)."""
    run = root / config / f"seed-{seed}"
    run.mkdir(parents=True)
    budget = {"max_update": 0, "max_epoch": 20}
    info = {"dataset": "iwslt14", "experiment": "sec4_preln_vs_postln", "config": config, "label": label,
            "seed": seed, "scheme": scheme, "optimizer": "adam", "lr": 5e-4, "warmup_updates": warmup,
            "paper": paper, "command": f"{python} -m normpos.fairseq_run train ... --seed {seed}",
            "commit": "abc1234", "machine": "test machine", "section": "sec. 4, Fig. 4",
            **({"budget": budget} if "run.json" in budget_in else {})}
    (run / "run.json").write_text(json.dumps(info))
    reason = "loss is nan" if status == "diverged" else ""
    (run / "status.json").write_text(json.dumps({"status": status, "reason": reason, "num_updates": 1000 * epochs,
                                                 "epochs": epochs, "wall_seconds": 1,
                                                 **({"budget": budget} if "status.json" in budget_in else {})}))
    offset = {1: -0.01, 2: 0.0, 3: 0.01}[seed]
    with open(run / "metrics.jsonl", "w") as f:
        for epoch in range(1, epochs + 1):
            loss, bleu = curve(epoch, offset)
            if nan_after is not None and epoch > nan_after:
                loss, bleu = float("nan"), 0.0
            f.write(json.dumps({"epoch": epoch, "num_updates": 1000 * epoch, "train_loss": loss + 0.2,
                                "valid_loss": loss, "valid_bleu": bleu, "lr": 5e-4}) + "\n")
    if score is not None:
        (run / "score.json").write_text(json.dumps({
            "scored": True, "test_tok_bleu": score[0], "sacrebleu": score[1], "sacrebleu_signature": SIGNATURE,
            "beam": 5, "lenpen": 1.2, "averaged": False, "command": "python -m normpos.fairseq_run generate ..."}))
    elif status != "finished":
        (run / "score.json").write_text(json.dumps({"scored": False, "run_status": status, "reason": "not decoded"}))
    return run


@pytest.fixture
def experiment(tmp_path):
    root = tmp_path / "runs" / "iwslt14" / "sec4_preln_vs_postln"
    paper = {"test_bleu": 34.0, "source": "Xiong et al. 2020, sec. 3.2 (IWSLT14)"}
    for seed, score in zip((1, 2, 3), ((34.1, 33.0), (34.3, 33.2), (34.5, 33.4))):
        fabricate(root, POST_WU, "Post-LN, warm-up 4000 (T_warmup)", "post_ln", 4000, seed, post_ln_warmup, 20,
                  score=score, paper=paper, budget_in=("run.json", "status.json"),
                  python="/home/someone/repo/.venv/bin/python3.11")
    for seed, score in zip((1, 2, 3), ((35.0, 34.0), (35.4, 34.6), None)):  # seed 3 finished, not scored yet
        fabricate(root, PRE, "Pre-LN, no warm-up", "pre_ln", 1, seed, pre_ln, 20, score=score, budget_in=("run.json",))
    fabricate(root, POST_NO_WU, "Post-LN, no warm-up", "post_ln", 1, 1, post_ln_no_warmup, 3, status="diverged",
              paper={"test_bleu": 8.45}, nan_after=2)
    fabricate(root, POST_NO_WU, "Post-LN, no warm-up", "post_ln", 1, 2, post_ln_no_warmup, 20, score=(8.0, 7.5),
              paper={"test_bleu": 8.45})
    return root


def test_table_has_the_means_stds_diverged_counts_and_paper_column(experiment, tmp_path):
    out = tmp_path / "results" / "iwslt14" / "sec4_preln_vs_postln"
    paths = make_table(experiment, out)
    assert {"md", "tex", "csv"} <= set(paths) and all(p.is_file() for p in paths.values())

    rows = {r["config"]: r for r in csv.DictReader(open(paths["csv"]))}
    assert list(rows) == [POST_NO_WU, POST_WU, PRE]  # Post-LN first, then by warm-up: the paper's order
    post = rows[POST_WU]
    assert (post["runs"], post["finished"], post["diverged"]) == ("3", "3", "0")
    assert float(post["tok_bleu_mean"]) == pytest.approx(34.3) and float(post["tok_bleu_std"]) == pytest.approx(0.2)
    assert float(post["sacrebleu_mean"]) == pytest.approx(33.2) and float(post["sacrebleu_std"]) == pytest.approx(0.2)
    assert float(post["best_valid_loss_mean"]) == pytest.approx(4.3)  # 4 + 6/20, seed offsets cancel
    assert float(post["epochs_mean"]) == 20 and float(post["paper_test_bleu"]) == 34.0
    # the budget: from status.json or run.json; runs written before budgets were recorded say so
    assert (post["budget"], float(post["num_updates_mean"])) == ("20 epochs", 20000)
    assert rows[PRE]["budget"] == "20 epochs" and rows[POST_NO_WU]["budget"] == "not recorded"
    assert float(rows[POST_NO_WU]["num_updates_mean"]) == 20000  # finished seeds only (the diverged one ran 3000)
    assert post["is_baseline"] == "True" and rows[PRE]["is_baseline"] == "False"
    pre = rows[PRE]
    assert float(pre["tok_bleu_mean"]) == pytest.approx(35.2)
    assert float(pre["tok_bleu_std"]) == pytest.approx(0.2828427, abs=1e-6)  # sample std of 35.0, 35.4
    assert (pre["finished"], pre["tok_bleu_n"], pre["paper_test_bleu"]) == ("3", "2", "")
    unstable = rows[POST_NO_WU]
    assert (unstable["runs"], unstable["finished"], unstable["diverged"]) == ("2", "1", "1")
    # one finished seed: its BLEU, and no standard deviation
    assert float(unstable["tok_bleu_mean"]) == 8.0 and unstable["tok_bleu_std"] == ""

    md = paths["md"].read_text()
    assert "| Post-LN, warm-up 4000 (T_warmup) |" in md
    assert "34.30 ± 0.20" in md and "33.20 ± 0.20" in md and "4.300 ± 0.010" in md
    assert "35.20 ± 0.28 (2/3)" in md  # the mean covers the 2 scored of the 3 finished seeds, and says so
    assert "compound-split" not in md.splitlines()[2]  # the column is for WMT14 runs only
    line = next(line for line in md.splitlines() if line.startswith("| Post-LN, no warm-up"))
    # no chrF++ in these old score.json files, no decoded test set to compare with the baseline
    assert [c.strip() for c in line.strip("|").split("|")] == ["Post-LN, no warm-up", "2", "1", "0", "8.00", "7.50",
                                                                "–", "–", "–", "7.100", "20",
                                                                "not recorded (20,000)", "8.45"]
    assert " baseline |" in next(line for line in md.splitlines() if line.startswith("| Post-LN, warm-up 4000"))
    assert "Post-LN, no warm-up, seed 2: not compared (seed 2 has no test.hyp.detok.txt" in md
    assert SIGNATURE in md and "seed 1: diverged (loss is nan)" in md
    assert "## Provenance" in md and "`abc1234`" in md and "test machine" in md and "--seed 3" in md
    # the command as it runs on any clone: not the interpreter path of the machine that made it
    assert "/home/someone" not in md and "`python -m normpos.fairseq_run train ... --seed 1`" in md
    assert "Xiong et al. 2020, sec. 3.2 (IWSLT14)" in md

    tex = paths["tex"].read_text()
    assert r"34.30 $\pm$ 0.20" in tex and r"(T\_warmup)" in tex and r"\begin{tabular}" in tex


def test_figures_are_pngs_and_the_speedup_is_epoch_9_against_15(experiment, tmp_path):
    out = tmp_path / "figures"
    made = make_figures(experiment, out)
    assert made["x"] == "epoch"
    for path in made["curves"] + made["speedup"]:
        assert path.stat().st_size > 5000
    pngs = [p for p in made["curves"] + made["speedup"] if p.suffix == ".png"]
    assert [p.name for p in pngs] == ["curves.png", "speedup.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    results = {r["metric"]: r for r in json.loads((out / "speedup.json").read_text())}
    assert set(results) == {"valid_loss", "valid_bleu"}
    for metric, target in (("valid_loss", 4.4), ("valid_bleu", 34 * (1 - math.exp(-3)))):
        r = results[metric]
        assert (r["pre_ln"], r["post_ln"]) == (PRE, POST_WU)
        assert r["post_ln_at"] == 15 and r["post_ln_point"] == "Post-LN (warm-up) at epoch 15"
        assert r["target"] == pytest.approx(target) and r["pre_ln_reaches_at"] == 9


def test_speedup_uses_the_last_epoch_when_post_ln_ran_fewer_than_15(tmp_path):
    root = tmp_path / "runs"
    fabricate(root, POST_WU, "Post-LN", "post_ln", 4000, 2, post_ln_warmup, 12, score=(30, 29))
    fabricate(root, PRE, "Pre-LN", "pre_ln", 1, 2, pre_ln, 12, score=(31, 30))
    made = make_figures(root, tmp_path / "out")
    loss = next(r for r in made["speedup_results"] if r["metric"] == "valid_loss")
    assert loss["post_ln_at"] == 12 and "its last epoch (12; it has none at 15)" in loss["post_ln_point"]
    assert loss["target"] == pytest.approx(4.5) and loss["pre_ln_reaches_at"] == 7  # 4 + 3.5/7 = 4.5


def test_updates_axis_when_runs_validate_within_an_epoch(tmp_path):
    root = tmp_path / "runs"
    run = fabricate(root, PRE, "Pre-LN", "pre_ln", 1, 1, pre_ln, 3)
    records = [{"epoch": 1, "num_updates": u, "valid_loss": 9 - u / 100} for u in (100, 200, 300)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    made = make_figures(root, tmp_path / "out")
    assert made["x"] == "updates" and made["speedup"] == [] and made["curves"][0].stat().st_size > 5000


def test_cli_errors_are_one_line(tmp_path):
    def report(*argv):
        return subprocess.run([sys.executable, "-m", "normpos.report", *map(str, argv)], capture_output=True, text=True)

    proc = report("table", "--root", tmp_path / "none", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr == f"normpos: error: {tmp_path / 'none'} is not a folder of runs (run the sweep first)\n"
    bad = tmp_path / "runs" / "x" / "seed-1"
    bad.mkdir(parents=True)
    (bad / "run.json").write_text("{not json")
    proc = report("figures", "--root", tmp_path / "runs", "--out", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.startswith(f"normpos: error: {bad / 'run.json'} is not valid JSON")
    assert len(proc.stderr.splitlines()) == 1


def test_cli_builds_table_and_figures(experiment, tmp_path):
    out = tmp_path / "out"
    for what in ("table", "figures"):
        argv = [what, "--root", str(experiment), "--out", str(out)]
        proc = subprocess.run([sys.executable, "-m", "normpos.report", *argv], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "speed-up (valid_loss): Post-LN (warm-up) at epoch 15 = 4.400" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["curves.pdf", "curves.png", "speedup.json", "speedup.pdf",
                                                     "speedup.png", "table.csv", "table.md", "table.tex"]
