"""Checkpoints load with torch's weights_only protection on (normpos_fairseq.checkpoint_compat).

A checkpoint of every scheme, saved by fairseq's own checkpoint_utils.save_checkpoint from a real Trainer,
resumes (fairseq's Trainer.load_checkpoint restores weights and optimizer), decodes (fairseq's
load_model_ensemble and SequenceGenerator give what the in-memory model gives) and averages (the
element-wise mean); the state fairseq broadcasts when several GPUs resume crosses a real gloo process group;
the command lines (train, resume, generate) and averaging work with no switch set; and a pickle that would
run code is refused by our loader, by fairseq-generate through our wrapper and by the averaging command, in
one line, before it runs. With NORMPOS_TRUST_CHECKPOINTS=1 a trusted legacy file with other pickled types
still loads.
"""

import hashlib
import os
import pathlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator
from fairseq.trainer import Trainer

from normpos.average_checkpoints import average_checkpoints
from normpos.average_checkpoints import main as average_main
from normpos.bench_models import make_trainer
from normpos_fairseq.checkpoint_compat import TORCH_SWITCH, TRUST_ENV, CheckpointRefused, load_checkpoint
from normpos_fairseq.schemes import scheme_names
from test_plugin_end_to_end import TINY_MODEL

TRAIN = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3",
         "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "2",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
         "--max-tokens", "800", "--seed", "1", "--num-workers", "0", "--no-epoch-checkpoints"]
TORCH_SWITCH_WARNING = "Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected"


@pytest.fixture(autouse=True)
def no_switch(monkeypatch):
    """Every test starts with neither our opt-in nor torch's switch set, in-process and in the tools it runs."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.delenv(TORCH_SWITCH, raising=False)
    torch.set_num_threads(1)


def trainer_for(data, scheme, save_dir):
    trainer, task, cfg = make_trainer(
        data, ["--arch", f"normpos_iwslt_de_en_{scheme}", *TINY_MODEL], [*TRAIN, "--cpu", "--save-dir", str(save_dir)])
    # what fairseq_cli.train.main does next: load checkpoint_last.pt if any (none here) and make the iterator
    _, epoch_itr = checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)
    return trainer, task, cfg, epoch_itr


def train_and_save(trainer, cfg, epoch_itr, batches, updates) -> Path:
    """``updates`` updates, then fairseq-train's own save (checkpoint_utils.save_checkpoint)."""
    for _ in range(updates):
        trainer.train_step([next(batches)])
    checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, None)
    return Path(cfg.checkpoint.save_dir) / "checkpoint_last.pt"


def decode(models, task, sample):
    """fairseq's beam search (beam 2) on a batch: the hypothesis tokens and their positional scores."""
    generator = SequenceGenerator(models, task.target_dictionary, beam_size=2, max_len_b=12)
    hyps = task.inference_step(generator, models, sample)
    return [(h[0]["tokens"].tolist(), h[0]["positional_scores"]) for h in hyps]


@pytest.mark.parametrize("scheme", scheme_names())
def test_every_scheme_resumes_decodes_and_averages_with_weights_only(tiny_bin, tmp_path, scheme):
    trainer, task, cfg, epoch_itr = trainer_for(tiny_bin, scheme, tmp_path / "run")
    batches = iter(epoch_itr.next_epoch_itr(shuffle=False))
    first = train_and_save(trainer, cfg, epoch_itr, batches, 2)
    torch.load(first, weights_only=True)  # torch's own restricted unpickler takes it as is
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    adam = trainer.optimizer.state_dict()["state"][0]  # fairseq's Adam: step, exp_avg, exp_avg_sq
    saved_adam = {k: adam[k].clone() for k in ("exp_avg", "exp_avg_sq")}
    assert saved_adam["exp_avg_sq"].abs().sum() > 0 and adam["step"] == 2

    # resume: Trainer.load_checkpoint (fairseq-train's) into a fresh Trainer restores the weights and Adam
    torch.manual_seed(2)
    fresh = Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))
    assert any(not torch.equal(saved[k], v) for k, v in fresh.model.state_dict().items())
    fresh.load_checkpoint(str(first))
    assert fresh.get_num_updates() == 2
    restored = fresh.model.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    fresh_adam = fresh.optimizer.state_dict()["state"][0]
    assert fresh_adam["step"] == 2 and all(torch.equal(saved_adam[k], fresh_adam[k]) for k in saved_adam)

    # decode: fairseq-generate's loader and beam search give what the in-memory model gives
    task.load_dataset("test")
    sample = next(iter(task.get_batch_iterator(task.dataset("test"), max_sentences=4).next_epoch_itr(shuffle=False)))
    models, _ = checkpoint_utils.load_model_ensemble([str(first)], task=task)
    trainer.model.eval()
    expected = decode([trainer.model], task, sample)
    got = decode([m.eval() for m in models], task, sample)
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        torch.testing.assert_close(a, b)

    # average: one more update, save, and the mean of the two checkpoints is the mean of the two weights
    trainer.model.train()
    (tmp_path / "two").mkdir()
    earlier = tmp_path / "two" / "checkpoint_2.pt"
    earlier.write_bytes(first.read_bytes())
    later = train_and_save(trainer, cfg, epoch_itr, batches, 1)
    now = trainer.model.state_dict()
    averaged = load_checkpoint(average_checkpoints([earlier, later], tmp_path / "avg.pt"))["model"]
    assert any(not torch.equal(saved[k], now[k]) for k in saved)
    for key in saved:
        torch.testing.assert_close(averaged[key], (saved[key] + now[key]) / 2)


def weight_digests(state_dict) -> dict:
    return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in state_dict.items()}


def broadcast_from_rank0(rank, path, init_method, results):
    """One rank of fairseq's multi-GPU resume: rank 0 loads, fairseq.distributed.utils.broadcast_object sends
    (torch.save there, torch.load on the other rank, i.e. weights_only by default)."""
    import torch.distributed as dist
    from fairseq.distributed import utils as distributed_utils

    import normpos_fairseq  # noqa: F401  (fairseq-train imports it through --user-dir before loading)

    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path) if rank == 0 else None
        got = distributed_utils.broadcast_object(
            state, src_rank=0, group=distributed_utils.get_global_group(), dist_device=torch.device("cpu"))
        if rank == 1:  # digests back to the test: small enough for the queue's pipe while spawn waits on us
            results.put((weight_digests(got["model"]), got["cfg"].model.encoder_layers, type(got["cfg"]).__name__))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_multi_gpu_resume_broadcast_loads_with_weights_only(tiny_bin, tmp_path):
    import torch.multiprocessing as mp

    trainer, task, cfg, epoch_itr = trainer_for(tiny_bin, "pre_ln", tmp_path / "run")
    path = train_and_save(trainer, cfg, epoch_itr, iter(epoch_itr.next_epoch_itr(shuffle=False)), 1)
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(broadcast_from_rank0, args=(str(path), f"file://{tmp_path / 'rendezvous'}", results), nprocs=2)
    weights, encoder_layers, cfg_type = results.get()
    assert weights == weight_digests(trainer.model.state_dict())
    assert (encoder_layers, cfg_type) == (2, "DictConfig")


def clean_env(**extra) -> dict:
    """This process's environment without either switch (plus ``extra``), for the tools a test runs."""
    env = {k: v for k, v in os.environ.items() if k not in (TRUST_ENV, TORCH_SWITCH)}
    return {**env, **extra}


def run_cli(module, *argv, env_extra=None):
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True,
                          timeout=300, env=clean_env(**(env_extra or {})))


def cli_train(bin_dir, save_dir, max_update):
    """The runner's kind of command: valid BLEU on (the default, train.valid_bleu), which keeps numpy arrays of
    n-gram counts in the checkpoint's metrics; here greedy and short, to be quick."""
    proc = run_cli("normpos.fairseq_run", "train", bin_dir, "--arch", "normpos_iwslt_de_en_admin", *TINY_MODEL,
                   *TRAIN, "--max-update", max_update, "--save-dir", save_dir, "--save-interval-updates", "1",
                   "--keep-interval-updates", "4", "--no-progress-bar", "--log-interval", "1",
                   "--eval-bleu", "--eval-bleu-args", '{"beam": 1, "max_len_b": 10}', "--eval-tokenized-bleu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def cli_generate(bin_dir, checkpoint, env_extra=None):
    return run_cli("normpos.fairseq_run", "generate", bin_dir, "--path", checkpoint, "--gen-subset", "test",
                   "--beam", "2", "--batch-size", "20", "--max-len-b", "12", env_extra=env_extra)


@pytest.mark.slow
def test_command_lines_train_resume_generate_average_without_any_switch(tiny_bin, tmp_path):
    save = tmp_path / "ckpt"
    log = cli_train(tiny_bin, save, 2)
    assert (save / "admin_profile.json").is_file()  # the Admin scheme's ω, kept beside the checkpoints
    log += cli_train(tiny_bin, save, 4)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 2 updates\)", log), log[-2000:]
    last = load_checkpoint(save / "checkpoint_last.pt")
    assert last["optimizer_history"][-1]["num_updates"] == 4
    counts = [meter for _, name, _, meter in last["extra_state"]["metrics"]["valid"] if name == "_bleu_counts"]
    assert isinstance(counts[0]["sum"], np.ndarray)  # the numpy types of the allowlist, in use

    pair = [save / "checkpoint_1_3.pt", save / "checkpoint_1_4.pt"]  # what scoring averages (its CLI: below)
    avg = average_checkpoints(pair, tmp_path / "avg.pt")
    states = [load_checkpoint(p)["model"] for p in (*pair, avg)]
    for key in states[0]:
        torch.testing.assert_close(states[2][key], (states[0][key] + states[1][key]) / 2)

    proc = cli_generate(tiny_bin, avg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(re.findall(r"^H-\d+\t", proc.stdout, re.M)) == 40
    # torch warns at every load that its switch turned the protection off: no load here did
    assert TORCH_SWITCH_WARNING not in log + proc.stderr


class OpensAFile:
    """What a malicious checkpoint would carry: unpickling it calls open(marker, "w")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained_state(tiny_bin, tmp_path_factory):
    """A real checkpoint's state (post_ln, one update), loaded with protection on."""
    folder = tmp_path_factory.mktemp("state")
    trainer, task, cfg, epoch_itr = trainer_for(tiny_bin, "post_ln", folder)
    path = train_and_save(trainer, cfg, epoch_itr, iter(epoch_itr.next_epoch_itr(shuffle=False)), 1)
    return load_checkpoint(path)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_checkpoint_that_would_run_code_is_refused_everywhere(tiny_bin, tmp_path, trained_state, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({**trained_state, "extra_state": {**trained_state["extra_state"], "x": OpensAFile(marker)}}, evil)
    refused = rf"checkpoint {re.escape(str(evil))} refused: it asks to load \S*open, which is not a type fairseq " \
              rf"checkpoints hold; if you trust whoever made the file, rerun with {TRUST_ENV}=1"

    with pytest.raises(CheckpointRefused) as err:
        load_checkpoint(evil)
    assert re.match(refused, str(err.value)) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)  # so every handler of bad input reports it

    line = one_line_error(cli_generate(tiny_bin, evil))  # fairseq's own torch.load, through our wrapper
    assert re.match("normpos: error: " + refused, line), line

    good = tmp_path / "good.pt"
    torch.save(trained_state, good)
    with pytest.raises(SystemExit) as exit_code:  # the averaging command's entry point, here in-process
        average_main(["--out", str(tmp_path / "avg.pt"), str(good), str(evil)])
    assert exit_code.value.code == 2
    assert re.fullmatch("normpos: error: " + refused + r".*\n", capsys.readouterr().err)
    assert not (tmp_path / "avg.pt").exists()
    assert not marker.exists()


def test_a_planted_checkpoint_last_is_set_aside_by_the_runner_unrun(tmp_path, trained_state):
    from normpos.experiment.checkpoints import repair_resume_point

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    good = folder / "checkpoint_1_1.pt"
    torch.save(trained_state, good)
    torch.save({**trained_state, "x": OpensAFile(marker)}, folder / "checkpoint_last.pt")
    planted = (folder / "checkpoint_last.pt").read_bytes()

    note = repair_resume_point(tmp_path / "run")  # what the runner does before it retries a run
    assert re.search(r"checkpoint_last\.pt did not load \(CheckpointRefused: refused: it asks to load \S*open\b", note)
    assert "resumed from checkpoint_1_1.pt" in note
    assert (folder / "checkpoint_last.pt").read_bytes() == good.read_bytes()
    assert (folder / "checkpoint_last.pt.damaged").read_bytes() == planted  # kept aside, never loaded
    assert not marker.exists()


@pytest.mark.slow
def test_trusted_legacy_checkpoint_loads_only_with_the_opt_in(tiny_bin, tmp_path, trained_state, monkeypatch):
    # e.g. written by a tool that pickled a path object into the checkpoint: harmless, but not a fairseq type
    legacy = tmp_path / "legacy.pt"
    torch.save({**trained_state, "saved_from": pathlib.PurePosixPath("/home/someone/run")}, legacy)
    with pytest.raises(CheckpointRefused, match=r"it asks to load pathlib\.PurePosixPath"):
        load_checkpoint(legacy)

    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_checkpoint(legacy)["saved_from"] == pathlib.PurePosixPath("/home/someone/run")
    proc = cli_generate(tiny_bin, legacy, env_extra={TRUST_ENV: "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(re.findall(r"^H-\d+\t", proc.stdout, re.M)) == 40
    assert f"{TRUST_ENV} is set" in proc.stderr and TORCH_SWITCH_WARNING in proc.stderr  # said, and in force


def test_importing_the_plugin_leaves_torch_switch_alone():
    # a fresh process: fairseq-train imports the plugin through --user-dir, before it loads anything
    code = ("import argparse, os, torch, normpos_fairseq; print(os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'), "
            "argparse.Namespace in torch.serialization.get_safe_globals())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "True"]  # the switch untouched, the allowlist registered instead


def test_damaged_or_missing_checkpoint_is_one_clear_error(tmp_path, trained_state):
    whole = tmp_path / "whole.pt"
    torch.save(trained_state, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a copy killed half-way
    with pytest.raises(ValueError, match=rf"^checkpoint {re.escape(str(cut))} is damaged or not a torch checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
