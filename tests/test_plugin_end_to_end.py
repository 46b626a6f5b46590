"""A tiny real pipeline on CPU, each variant: binarize, train a few updates, save, resume, generate,
average checkpoints, score with sacreBLEU. Real text (Multi30k from ../shared/data) when staged, else a
synthetic copy task so the test stands alone (the ``tiny_bin`` fixture in conftest.py)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch


pytestmark = pytest.mark.slow

TINY_MODEL = [
    "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]


def run_tool(tool, *argv):
    proc = subprocess.run(
        [sys.executable, "-m", "normpos.fairseq_run", tool, *map(str, argv)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def train(bin_dir, save_dir, arch, max_update):
    return run_tool(
        "train", bin_dir, "--arch", arch, *TINY_MODEL, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
        "--lr", "1e-3", "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "2",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--max-tokens", "800", "--max-update", max_update, "--save-dir", save_dir, "--seed", "1",
        "--save-interval-updates", "2", "--keep-interval-updates", "4", "--no-epoch-checkpoints",
        "--no-progress-bar", "--log-interval", "1", "--num-workers", "0",
    )


def num_updates(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return state["optimizer_history"][-1]["num_updates"]


def generate(bin_dir, checkpoint):
    out = run_tool("generate", bin_dir, "--path", checkpoint, "--gen-subset", "test", "--beam", "2",
                   "--batch-size", "20", "--max-len-b", "20")
    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t\S+\t(.*)$", out, re.M)}
    refs = {int(m.group(1)): m.group(2) for m in re.finditer(r"^T-(\d+)\t(.*)$", out, re.M)}
    assert len(hyps) == 40 and hyps.keys() == refs.keys()
    order = sorted(hyps)
    return sacrebleu.corpus_bleu([hyps[i] for i in order], [[refs[i] for i in order]])


@pytest.mark.parametrize("arch", ["normpos_iwslt_de_en_post_ln", "normpos_iwslt_de_en_pre_ln"])
def test_train_resume_generate_average_score(tiny_bin, tmp_path, arch):
    bin_dir = tiny_bin
    save = tmp_path / "ckpt"
    train(bin_dir, save, arch, 4)
    assert num_updates(save / "checkpoint_last.pt") == 4
    # resume: a second run with a larger budget continues from checkpoint_last.pt (torch >= 2.6 loads it)
    log = train(bin_dir, save, arch, 8)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 4 updates\)", log), log[-2000:]
    assert num_updates(save / "checkpoint_last.pt") == 8

    bleu = generate(bin_dir, save / "checkpoint_last.pt")
    assert 0.0 <= bleu.score <= 100.0 and len(bleu.counts) == 4

    # checkpoint averaging: the mean of the weights, loadable by fairseq-generate
    from normpos.average_checkpoints import average_checkpoints

    pair = sorted(save.glob("checkpoint_*_[0-9]*.pt"))[-2:]
    assert len(pair) == 2, list(save.iterdir())
    avg = average_checkpoints(pair, tmp_path / "avg.pt")
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in (*pair, avg)]
    key = "decoder.layers.1.fc2.weight"
    assert torch.allclose(states[2][key], (states[0][key] + states[1][key]) / 2, atol=1e-7)
    generate(bin_dir, avg)
