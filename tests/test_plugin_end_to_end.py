"""A tiny real pipeline on CPU, each variant: binarize, train a few updates, save, resume, generate,
average checkpoints, score. Real text (Multi30k from ../shared/data) when staged, else a synthetic copy task
so the test stands alone (the ``tiny_bin`` fixture in conftest.py). What must hold: the trained model's test
loss beats the same model untrained by a margin, and our scorer gives on the decoded files exactly what
fairseq-generate printed (tokenized BLEU) and what the sacrebleu command line computes (sacreBLEU)."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
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


def generate_argv(bin_dir, checkpoint) -> list:
    """fairseq-generate on the test split, beam 2 (the tool's name first, as normpos.fairseq_run takes it)."""
    return ["generate", bin_dir, "--path", checkpoint, "--gen-subset", "test", "--beam", "2",
            "--batch-size", "20", "--max-len-b", "20", "--num-workers", "0"]


def generate(bin_dir, checkpoint) -> dict:
    """fairseq-generate on the test split (beam 2): see :func:`parse_generate`."""
    return parse_generate(run_tool(*generate_argv(bin_dir, checkpoint)))


def parse_generate(out: str) -> dict:
    """Hypotheses and references (T- lines) in corpus order, the positional scores of each hypothesis
    (P- lines, base 2), and the BLEU line fairseq printed, from fairseq-generate's output."""
    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t\S+\t(.*)$", out, re.M)}
    refs = {int(m.group(1)): m.group(2) for m in re.finditer(r"^T-(\d+)\t(.*)$", out, re.M)}
    positional = {int(m.group(1)): [float(x) for x in m.group(2).split()]
                  for m in re.finditer(r"^P-(\d+)\t(.*)$", out, re.M)}
    assert len(hyps) == 40 and hyps.keys() == refs.keys() == positional.keys()
    order = sorted(hyps)
    said = re.search(r"^Generate test with beam=2: (BLEU4 = .*)$", out, re.M)
    return {"hyps": [hyps[i] for i in order], "refs": [refs[i] for i in order],
            "positional": [positional[i] for i in order], "fairseq_bleu": said.group(1) if said else None}


def loss_on_test_split(model, task, criterion) -> float:
    """Label-smoothed loss per target token on the test split, base 2 (fairseq-validate's number)."""
    task.load_dataset("test")
    batches = task.get_batch_iterator(dataset=task.dataset("test"), max_tokens=800, seed=1).next_epoch_itr(
        shuffle=False)
    model.eval()
    total = tokens = 0.0
    with torch.no_grad():
        for sample in batches:
            loss, sample_size, _ = criterion(model, sample)
            total, tokens = total + loss.item(), tokens + sample_size
    return total / tokens / math.log(2)


def trained_and_untrained_loss(checkpoint: Path) -> tuple:
    """Test loss of the checkpoint's model, and of the same architecture freshly initialized."""
    from fairseq import checkpoint_utils

    import normpos_fairseq  # noqa: F401  (registers the architectures fairseq unpickles)

    (model,), cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    criterion = task.build_criterion(cfg.criterion)
    trained = loss_on_test_split(model, task, criterion)
    torch.manual_seed(1)
    return trained, loss_on_test_split(task.build_model(cfg.model), task, criterion)


def scored_like_the_cli(decoded: dict, folder: Path) -> None:
    """Our scorer on the decoded files: tokenized BLEU as fairseq-generate printed it, sacreBLEU (detokenized,
    lowercased) as the sacrebleu command line computes it on the same files."""
    from normpos.scoring import bleu

    assert bleu.tokenized_bleu(decoded["hyps"], decoded["refs"]).text == decoded["fairseq_bleu"]
    hyp, ref = folder / "hyp.detok.txt", folder / "ref.detok.txt"
    hyp.write_text("".join(line + "\n" for line in bleu.detokenize(decoded["hyps"], "en")), encoding="utf-8")
    ref.write_text("".join(line + "\n" for line in bleu.detokenize(decoded["refs"], "en")), encoding="utf-8")
    ours = bleu.sacre_bleu(hyp.read_text(encoding="utf-8").splitlines(), ref.read_text(encoding="utf-8").splitlines(),
                           lowercase=True)
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-lc", "-w", "6", "-f", "json"],
                         capture_output=True, text=True, check=True)
    assert (round(ours.score, 6), ours.signature) == (json.loads(cli.stdout)["score"], json.loads(cli.stdout)["signature"])


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

    # 8 updates of a 2-layer model already lower the test loss well below the untrained model's (measured:
    # Post-LN 10.64 against 11.63 bits per token, Pre-LN 10.76 against 11.48)
    trained, untrained = trained_and_untrained_loss(save / "checkpoint_last.pt")
    assert trained < untrained - 0.5  # bits per token: perplexity at least 29% lower
    decoded = generate(bin_dir, save / "checkpoint_last.pt")
    scored_like_the_cli(decoded, tmp_path)

    # checkpoint averaging: the mean of the weights, loadable by fairseq-generate
    from normpos.average_checkpoints import average_checkpoints

    pair = sorted(save.glob("checkpoint_*_[0-9]*.pt"))[-2:]
    assert len(pair) == 2, list(save.iterdir())
    avg = average_checkpoints(pair, tmp_path / "avg.pt")
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in (*pair, avg)]
    key = "decoder.layers.1.fc2.weight"
    assert torch.allclose(states[2][key], (states[0][key] + states[1][key]) / 2, atol=1e-7)
    generate(bin_dir, avg)
