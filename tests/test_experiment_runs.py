"""Runs through the sweep app on a tiny corpus: a killed sweep resumes without duplicated rows, and a
diverging run is recorded as an outcome while the sweep goes on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["model.layers=2", "model.embed_dim=32", "model.ffn_embed_dim=64", "model.attention_heads=2",
        "train.max_tokens=800", "train.num_workers=0", "train.log_interval=1", "train.cpu=true",
        "train.valid_bleu=false", "eval.score=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only fight over 2 cores


def sweep_argv(tiny_bin: Path, root: Path, *overrides: str):
    return [sys.executable, "-m", "normpos.sweep", "-m", "experiment=demo", *TINY,
            f"dataset.data_bin={tiny_bin}", f"dataset.ref_dir={tiny_bin.parent / 'ref'}", f"run.root={root}",
            *overrides]


def run_dirs(root: Path):
    return sorted(p.parent for p in root.rglob("run.json"))


def metrics(directory: Path):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_killed_sweep_resumes_and_keeps_each_row_once(tiny_bin, tmp_path):
    overrides = ["hydra.sweeper.params.variant=preln_constant", "train.max_update=40",
                 "train.extra_args=[--validate-interval-updates,5,--save-interval-updates,5]"]
    proc = subprocess.Popen(sweep_argv(tiny_bin, tmp_path, *overrides), cwd=REPO, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # wait for a checkpoint and some metrics, then kill everything
            dirs = run_dirs(tmp_path)
            if dirs and (dirs[0] / "checkpoints" / "checkpoint_last.pt").exists() and \
                    (dirs[0] / "metrics.jsonl").exists() and len(metrics(dirs[0])) >= 2:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the run made no checkpoint in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (directory,) = run_dirs(tmp_path)
    assert not (directory / "status.json").exists()  # killed: no final status
    before = metrics(directory)

    done = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    assert json.loads((directory / "status.json").read_text())["status"] == "finished"
    log = (directory / "train.log").read_text()
    assert "Loaded checkpoint" in log
    rows = metrics(directory)
    updates = [r["num_updates"] for r in rows]
    assert updates == sorted(set(updates)) and updates[-1] == 40  # each validation once, in order
    assert {r["num_updates"] for r in before} <= set(updates)

    again = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides), cwd=REPO, env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert "finished already; skipped" in again.stdout
    assert metrics(directory) == rows


def test_diverged_run_is_an_outcome_and_the_sweep_goes_on(tiny_bin, tmp_path):
    overrides = ["variant=postln_constant", "optim.lr=50,1e-3",
                 "train.max_update=20"]
    proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # configuration folders: readable slug + short identity hash
    statuses = {d.parent.name.rsplit("_", 1)[0]: json.loads((d / "status.json").read_text()) for d in run_dirs(tmp_path)}
    assert set(statuses) == {"post_ln_adam_lr-50_constant_L2", "post_ln_adam_lr-1e-3_constant_L2"}
    assert statuses["post_ln_adam_lr-50_constant_L2"]["status"] == "diverged"
    assert statuses["post_ln_adam_lr-50_constant_L2"]["reason"]
    assert statuses["post_ln_adam_lr-1e-3_constant_L2"]["status"] == "finished"
    assert "sweep: 2 runs: 1 finished, 1 diverged" in proc.stdout  # a diverged run is no failure: exit 0


def test_tiny_sweep_to_scores_table_and_figures(tiny_bin, tmp_path):
    """2 x 2 configurations through training, scoring, the table and the figures."""
    overrides = ["variant=postln_warmup,preln_constant", "optim.lr=1e-3,5e-4", "train.max_update=12",
                 "schedule.warmup_updates=4", "eval.beam=2", "eval.score=true",
                 "train.extra_args=[--validate-interval-updates,4]"]
    proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 4
    for d in dirs:
        score = json.loads((d / "score.json").read_text())
        assert (round(score["sacrebleu"], 4), score["sacrebleu_signature"]) == tuple(json.loads(subprocess.run(  # = CLI
            [sys.executable, "-m", "sacrebleu", str(tiny_bin.parent / "ref" / "test.en"), "-i", str(d / "test.hyp.detok.txt"),
             "-w", "4", "-f", "json", *["-lc"] * score["lowercase"]], capture_output=True, text=True, check=True).stdout)[k]
            for k in ("score", "signature"))
        # pruned: scoring's checkpoint, and the last one (a larger budget continues from it); no interval ones
        assert sorted(p.name for p in (d / "checkpoints").glob("*.pt")) == ["checkpoint_best.pt", "checkpoint_last.pt"]
    root, out = tmp_path / "multi30k" / "demo", tmp_path / "report"
    for what in ("table", "figures"):
        made = subprocess.run([sys.executable, "-m", "normpos.report", what, "--root", str(root), "--out", str(out)],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr[-2000:]
    rows = (out / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    assert (out / "curves.png").stat().st_size > 10_000
