"""Optimizers of the paper (Adam 0.9/0.98, SGD, RAdam) and one-line errors for bad model options."""

import subprocess
import sys

import pytest
import torch

from fairseq_entry import build_model, build_scheduler
from normpos_fairseq.schemes import scheme_names


@pytest.mark.parametrize("argv, torch_cls, kwargs", [
    (("--optimizer", "adam", "--adam-betas", "(0.9, 0.98)"), torch.optim.AdamW, {"betas": (0.9, 0.98)}),
    (("--optimizer", "sgd"), torch.optim.SGD, {}),
    (("--optimizer", "normpos_radam", "--radam-betas", "(0.9, 0.98)"), torch.optim.RAdam, {"betas": (0.9, 0.98)}),
])
def test_optimizer_steps_like_torch(dict_dir, argv, torch_cls, kwargs):
    """Ten steps of the fairseq optimizer equal ten steps of the torch optimizer it stands for."""
    optimizer, scheduler = build_scheduler(dict_dir, "--lr", "1e-2", "--lr-scheduler", "fixed", *argv)
    ours = list(optimizer.params)[0]
    ref = torch.nn.Parameter(torch.zeros(1))
    if torch_cls is torch.optim.AdamW:
        kwargs = {**kwargs, "weight_decay": 0.0}
    ref_opt = torch_cls([ref], lr=1e-2, **kwargs)
    for step in range(10):
        for p in (ours, ref):
            p.grad = torch.tensor([1.0 + step]) * (p.detach() - 3.0)
        optimizer.step()
        ref_opt.step()
    assert ours.item() != 0.0
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_unknown_scheme_lists_the_valid_ones(dict_dir):
    from normpos_fairseq.schemes import get_scheme

    with pytest.raises(ValueError, match=r"unknown normalization scheme 'mid_ln'; valid: .*post_ln, pre_ln"):
        get_scheme("mid_ln")


def test_conflicting_scheme_and_arch_is_refused(dict_dir):
    with pytest.raises(ValueError, match="fixes --norm-scheme post_ln"):
        build_model(dict_dir, "--arch", "normpos_iwslt_de_en_post_ln", "--norm-scheme", "pre_ln")
    with pytest.raises(ValueError, match="contradicts --encoder/decoder-normalize-before"):
        build_model(dict_dir, "--arch", "normpos_iwslt_de_en_post_ln", "--encoder-normalize-before")


def train_error(*argv):
    """Run our fairseq-train wrapper; return (exit code, stderr lines)."""
    proc = subprocess.run(
        [sys.executable, "-m", "normpos.fairseq_run", "train", *argv],
        capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, [line for line in proc.stderr.strip().splitlines() if line.strip()]


TINY = ("-s", "de", "-t", "en", "--max-tokens", "100", "--optimizer", "adam")


@pytest.mark.parametrize("argv, message", [
    (("--arch", "normpos_no_such_arch", *TINY), "invalid choice: 'normpos_no_such_arch'"),
    (("--arch", "normpos_iwslt_de_en", "--norm-scheme", "mid_ln", *TINY), "invalid choice: 'mid_ln' (choose from " + ", ".join(map(repr, scheme_names())) + ")"),
    (("--arch", "normpos_iwslt_de_en", "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "0", *TINY),
     "normpos: error: --warmup-updates must be >= 1 (1 = no warm-up), got 0"),
    (("--arch", "normpos_iwslt_de_en", "--lr-scheduler", "normpos_step_once", "--lr", "0", *TINY),
     "normpos: error: --lr must be > 0 (got 0.0)"),
])
def test_cli_bad_options_give_one_line(dict_dir, argv, message):
    code, lines = train_error(str(dict_dir), *argv)
    assert code == 2 and message in lines[-1]
    assert not any(line.startswith("Traceback") for line in lines)


def test_cli_missing_data_dir(tmp_path):
    code, lines = train_error(str(tmp_path / "nowhere"), "--arch", "normpos_iwslt_de_en", *TINY)
    assert code == 2 and lines == [f"normpos: error: data folder {tmp_path / 'nowhere'} does not exist "
                                   "(prepare it first, e.g. make data-multi30k)"]
