"""Every registered normalization scheme, at depth 12-12, the way fairseq-train builds and trains it: finite
gradients on a real batch, a few updates of training, a saved checkpoint that fairseq-generate decodes with
incremental beam search, and that decoding scores every output token exactly as the model's full forward
pass over the finished hypothesis does (a scheme whose incremental state went wrong would differ). Each
scheme's own defining property is tested in its test_scheme_NAME.py."""

import math
import re

import pytest
import torch

from normpos.fairseq_build import build_task_and_model
from normpos_fairseq.schemes import scheme_names
from normpos.fairseq_batch import run_batch
from test_plugin_end_to_end import generate_argv, parse_generate

DEEP_TINY = [
    "--encoder-layers", "12", "--decoder-layers", "12", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]
CRITERION = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]


def first_batch(task, split="valid"):
    task.load_dataset(split)
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_tokens=800, seed=1).next_epoch_itr(shuffle=False)
    return next(iter(itr))


@pytest.mark.parametrize("scheme", scheme_names())
def test_gradients_are_finite_at_depth_12(tiny_bin, scheme, tmp_path):
    torch.set_num_threads(1)
    cfg, task, model = build_task_and_model(
        tiny_bin, "--arch", f"normpos_iwslt_de_en_{scheme}", *DEEP_TINY, *CRITERION, "--save-dir", str(tmp_path))
    criterion = task.build_criterion(cfg.criterion)
    model.train()
    loss, sample_size, _ = criterion(model, first_batch(task))
    (loss / sample_size).backward()
    assert math.isfinite(loss.item())
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters that get no gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    # the output projection always learns, whatever the scheme does to the layers
    assert model.decoder.embed_tokens.weight.grad.abs().sum() > 0


def train_argv(tiny_bin, scheme, save):
    return ["train", tiny_bin, "--arch", f"normpos_iwslt_de_en_{scheme}", *DEEP_TINY, *CRITERION,
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
            "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "2",
            "--max-tokens", "800", "--max-update", "3", "--save-dir", save, "--seed", "1", "--no-epoch-checkpoints",
            "--no-progress-bar", "--log-interval", "1", "--num-workers", "0"]


@pytest.fixture(scope="module")
def trained_and_decoded(tiny_bin, tmp_path_factory):
    """Every scheme trained by fairseq-train (3 updates at depth 12) and its last checkpoint decoded by
    fairseq-generate, the 42 command lines in one process (normpos.fairseq_batch): scheme -> (train exit code,
    train log, generate exit code, generate output, checkpoint)."""
    root = tmp_path_factory.mktemp("schemes-depth-12")
    commands, checkpoints = [], {}
    for scheme in scheme_names():
        save = root / scheme / "ckpt"
        checkpoints[scheme] = save / "checkpoint_last.pt"
        commands += [train_argv(tiny_bin, scheme, save), generate_argv(tiny_bin, checkpoints[scheme])]
    results = run_batch(commands, root / "commands")
    return {scheme: (*results[2 * i], *results[2 * i + 1], checkpoints[scheme])
            for i, scheme in enumerate(scheme_names())}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", scheme_names())
def test_trains_saves_and_decodes_at_depth_12(trained_and_decoded, scheme):
    train_code, log, generate_code, out, checkpoint = trained_and_decoded[scheme]
    assert train_code == 0, log[-3000:]
    losses = [float(x) for x in re.findall(r"train_inner:.* loss=([^,]+),", log)]
    assert len(losses) >= 3 and all(math.isfinite(x) for x in losses), log[-2000:]
    assert checkpoint.is_file()
    assert generate_code == 0, out[-3000:]
    decoded = parse_generate(out)  # fairseq-generate rebuilt the model from the checkpoint, beam 2
    forced = teacher_forced_scores(checkpoint, decoded["hyps"])
    for by_beam_search, by_forward in zip(decoded["positional"], forced):
        # fairseq prints positional scores with 4 decimals (base 2)
        assert by_beam_search == pytest.approx(by_forward, abs=6e-4)


def teacher_forced_scores(checkpoint, hyps) -> list:
    """log2 p(token | source, previous tokens) of each hypothesis and its end of sentence, from one full
    (non-incremental) forward pass of the checkpoint's model over the test source and that hypothesis."""
    from fairseq import checkpoint_utils

    (model,), _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    model.eval()
    task.load_dataset("test")
    sources, vocab = task.dataset("test").src, task.target_dictionary
    out = []
    with torch.no_grad():
        for i, hyp in enumerate(hyps):
            target = vocab.encode_line(hyp, add_if_not_exist=False, append_eos=True).long()
            previous = torch.cat([target.new_tensor([vocab.eos()]), target[:-1]])  # fairseq's shifted input
            src = sources[i].long().unsqueeze(0)
            logits = model(src, torch.tensor([src.size(1)]), previous.unsqueeze(0))
            lprobs = model.get_normalized_probs(logits, log_probs=True)[0]
            out.append((lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1) / math.log(2)).tolist())
    return out


def test_every_scheme_is_in_the_gradnorm_target_and_the_scheme_sweeps():
    # a new scheme file must also appear in `make gradnorm-schemes` and in both scheme experiments
    import yaml

    from conftest import REPO

    makefile = (REPO / "Makefile").read_text()
    listed = re.search(r"^ALL_SCHEMES = (.*)$", makefile, re.M).group(1).split()
    assert sorted(listed) == scheme_names()
    for experiment in ("schemes_warmup", "schemes_demo"):
        params = yaml.safe_load((REPO / f"configs/experiment/{experiment}.yaml").read_text())["hydra"]["sweeper"]["params"]
        assert sorted(s.strip() for s in params["model.scheme"].split(",")) == scheme_names(), experiment
    variants = yaml.safe_load((REPO / "configs/experiment/schemes_recommended.yaml").read_text())
    names = [v.strip() for v in variants["hydra"]["sweeper"]["params"]["variant"].split(",")]
    schemes = {yaml.safe_load((REPO / f"configs/variant/{v}.yaml").read_text())["model"]["scheme"] for v in names}
    assert sorted(schemes) == scheme_names()
