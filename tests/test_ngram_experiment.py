"""model.ngram_window through the experiment configs and the sweep runner, and the decoding benchmark:
the window reaches fairseq-train's command only when set (so runs without it keep their identity), bad
windows are one-line config errors, a tiny ngram_demo sweep trains and scores each window, and
bench_decode decodes the full-attention run exactly as scoring did (same BLEU line from fairseq-generate)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from normpos.experiment import command
from normpos.experiment.schema import ConfigError, validate

TINY = ["model.layers=2", "model.embed_dim=32", "model.ffn_embed_dim=64", "model.attention_heads=2",
        "train.max_tokens=800", "train.num_workers=0", "train.log_interval=1", "train.cpu=true",
        "train.valid_bleu=false", "train.max_update=4", "train.extra_args=[]", "eval.max_len_b=20"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        return validate(compose("train", overrides=["experiment=ngram_demo", "variant=preln_constant", *overrides]))


def test_window_reaches_the_command_only_when_set():
    full, four = composed(), composed("model.ngram_window=4")
    argv_full, argv_four = command.train_argv(full, Path("R")), command.train_argv(four, Path("R"))
    assert "--decoder-ngram-window" not in argv_full
    i = argv_four.index("--decoder-ngram-window")
    assert argv_four[i + 1] == "4"
    # nothing else differs, and the window gets its own folder, slug and label
    assert argv_four[:i] + argv_four[i + 2:] == argv_full
    assert command.config_slug(four) == command.config_slug(full) + "_ngram-4"
    assert command.config_name(four) != command.config_name(full)
    assert command.config_label(four) == command.config_label(full) + ", N-gram 4"
    # a config without the key (every experiment before it existed) makes the same command as null: the
    # experiment ngram_demo builds on, with the same run as its full-attention one
    demo = validate(compose_demo())
    assert command.config_name(demo).split("_")[-1] == command.config_name(full).split("_")[-1]


def compose_demo():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        return compose("train", overrides=["experiment=demo_d256", "variant=preln_constant"])


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bad_window_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError, match=f"model.ngram_window must be >= 1 \\(null = full self-attention\\), got {value}"):
        composed(f"model.ngram_window={value}")


@pytest.mark.slow
def test_tiny_sweep_trains_each_window_and_bench_decode_matches_scoring(tiny_bin, tmp_path):
    from fairseq import checkpoint_utils

    import normpos_fairseq  # noqa: F401  (lets torch >= 2.6 unpickle fairseq checkpoints)

    sweep = subprocess.run(
        [sys.executable, "-m", "normpos.sweep", "-m", "experiment=ngram_demo", *TINY, "model.ngram_window=2,null",
         f"dataset.data_bin={tiny_bin}", f"dataset.ref_dir={tiny_bin.parent / 'ref'}", f"run.root={tmp_path}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    experiment = tmp_path / "multi30k" / "ngram_demo"
    runs = {}
    for run in sorted(p.parent for p in experiment.rglob("run.json")):
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
        assert json.loads((run / "score.json").read_text())["fairseq_generate_said"]
        # the checkpoint keeps its window, so fairseq-generate (scoring) rebuilds the model with it
        state = checkpoint_utils.load_checkpoint_to_cpu(str(run / "checkpoints" / "checkpoint_best.pt"))
        window = state["cfg"].model.decoder_ngram_window
        runs[window] = run
    assert sorted(runs, key=str) == [2, None]

    out = tmp_path / "bench" / "bench_decode.json"
    bench = subprocess.run(
        [sys.executable, "-m", "normpos.bench_decode", "--runs", str(experiment), "--windows", "1", "full",
         "--rounds", "1", "--out", str(out)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["run"] == str(runs[None])  # the one full-attention run
    # the record names the children's numerics (pinned: the 2 threads the runs trained and scored with, ngram_demo's
    # train.threads), not this caller's OMP_NUM_THREADS=1 or the suite's NORMPOS_NUMERICS_THREADS=1 (conftest.py)
    assert result["numerics"]["mode"] == "pinned" and result["numerics"]["settings"]["OMP_NUM_THREADS"] == "2"
    assert "pinned numerics" in result["machine"] and "OMP_NUM_THREADS=2" in result["machine"]
    full, one = result["median"]["full"], result["median"]["1"]
    assert full["sentences_ratio"] == 1.0 and full["tokens_ratio"] == 1.0
    assert {r["sentences"] for rs in result["per_round"].values() for r in rs} == {40}  # the tiny test split
    # full attention decodes as scoring did: fairseq-generate printed the same BLEU line for the same model
    said = json.loads((runs[None] / "score.json").read_text())["fairseq_generate_said"]
    assert full["bleu"] and said.startswith(full["bleu"] + ",")
    assert one["tokens_per_s"] > 0
    assert out.with_suffix(".md").read_text().count("\n") == 4  # header, rule, two windows


def test_bench_decode_refuses_what_it_cannot_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "normpos.bench_decode", "--runs", str(tmp_path / "none")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"normpos: error: run folder {tmp_path / 'none'} does not exist (train it first, e.g. make sweep EXPERIMENT=ngram_demo)"]
    proc = subprocess.run([sys.executable, "-m", "normpos.bench_decode", "--run", str(tmp_path), "--windows", "0"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "a window is an integer >= 1 or 'full', got '0'" in proc.stderr
