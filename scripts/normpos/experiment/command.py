"""From a validated experiment config to its run directory and its exact ``fairseq-train`` command.

The run directory is deterministic (no timestamps, no ``:`` or ``=``):
``<run.root>/<dataset>/<experiment>/<configuration slug>_<identity hash>/seed-<n>/``, so re-running a sweep
finds its runs, and a configuration that differs in any value reaching fairseq (``identity.py``) gets its own.
"""

import json
import re
import shlex
import sys
from pathlib import Path
from typing import List

from . import identity
from .schema import ExperimentCfg

# our schedule names -> fairseq --lr-scheduler and the options each takes
SCHEDULER = {
    "warmup_inverse_sqrt": "normpos_warmup_inverse_sqrt",
    "step_once": "normpos_step_once",
    "constant_then_inverse_sqrt": "normpos_constant_then_inverse_sqrt",
    "linear_decay": "polynomial_decay",
    "constant": "fixed",
}


def format_number(x: float) -> str:
    """5e-4 -> '5e-4', 0.001 -> '1e-3', 1.5e-3 -> '1.5e-3', 4000 -> '4000': short and path-safe."""
    if float(x).is_integer() and abs(x) >= 1:
        return str(int(x))
    mantissa, exponent = f"{x:.6e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def config_slug(cfg: ExperimentCfg) -> str:
    """One table row: what distinguishes configurations within an experiment (not the seed)."""
    m, o, s = cfg.model, cfg.optim, cfg.schedule
    parts = [m.scheme, o.optimizer, f"lr-{format_number(o.lr)}", s.name.replace("_", "-")]
    if s.name == "warmup_inverse_sqrt":
        parts.append(f"wu-{s.warmup_updates}")
        if s.decay_anchor == "fixed":
            parts.append(f"anchor-{s.decay_anchor_updates}")
    if s.name == "linear_decay" and s.warmup_updates > 1:
        parts.append(f"wu-{s.warmup_updates}")
    if m.scheme_args:
        # e.g. ["--normformer-cross-attn"] -> args-normformer-cross-attn: runs that differ only here stay apart
        parts.append("args-" + re.sub(r"[^A-Za-z0-9.+-]+", "-", " ".join(map(str, m.scheme_args)).replace("--", "")))
    if m.layers:
        parts.append(f"L{m.layers}")
    if m.ffn_init != "xavier":
        parts.append(f"init-{m.ffn_init.replace('_', '-')}")
    if m.dropout != 0.1:
        parts.append(f"drop-{format_number(m.dropout)}")
    if m.ngram_window is not None:
        parts.append(f"ngram-{m.ngram_window}")
    return "_".join(parts)


def config_label(cfg: ExperimentCfg) -> str:
    if cfg.label:
        return cfg.label
    s = cfg.schedule
    scheme = {"post_ln": "Post-LN", "pre_ln": "Pre-LN"}.get(cfg.model.scheme, cfg.model.scheme)
    warmed = s.name in ("warmup_inverse_sqrt", "linear_decay") and s.warmup_updates > 1
    warm = f"warm-up {s.warmup_updates}" if warmed else "no warm-up"
    ngram = f", N-gram {cfg.model.ngram_window}" if cfg.model.ngram_window is not None else ""
    return f"{scheme}, {cfg.optim.optimizer} lr {format_number(cfg.optim.lr)}, {warm}, {s.name}{ngram}"


def config_name(cfg: ExperimentCfg) -> str:
    """The configuration's folder and table key: the readable slug plus the short hash of its identity."""
    digest = identity.identity_hash(train_argv(cfg, Path("RUN_DIR")))
    return f"{config_slug(cfg)}_{digest[:identity.HASH_CHARS]}"


def run_dir(cfg: ExperimentCfg) -> Path:
    return Path(cfg.run.root) / cfg.dataset.name / cfg.experiment / config_name(cfg) / f"seed-{cfg.seed}"


def _model_args(cfg: ExperimentCfg) -> List[str]:
    m = cfg.model
    argv = ["--arch", f"normpos_{m.shape}_{m.scheme}", "--ffn-init", m.ffn_init, "--dropout", str(m.dropout),
            "--attention-dropout", str(m.attention_dropout), "--activation-dropout", str(m.activation_dropout)]
    for side in ("encoder", "decoder"):
        for key, flag in (("layers", "layers"), ("embed_dim", "embed-dim"), ("ffn_embed_dim", "ffn-embed-dim"),
                          ("attention_heads", "attention-heads")):
            value = getattr(m, key)
            if value is not None:
                argv += [f"--{side}-{flag}", str(value)]
    if cfg.dataset.share_all_embeddings:
        argv.append("--share-all-embeddings")
    if m.ngram_window is not None:  # absent when null, so runs without it keep their identity
        argv += ["--decoder-ngram-window", str(m.ngram_window)]
    return argv + [str(a) for a in m.scheme_args]


def _optim_args(cfg: ExperimentCfg) -> List[str]:
    o = cfg.optim
    betas = f"({o.betas[0]}, {o.betas[1]})"
    argv = {"adam": ["--optimizer", "adam", "--adam-betas", betas],
            "sgd": ["--optimizer", "sgd", "--momentum", str(o.momentum)],
            "radam": ["--optimizer", "normpos_radam", "--radam-betas", betas]}[o.optimizer]
    return argv + ["--lr", str(o.lr), "--weight-decay", str(o.weight_decay), "--clip-norm", str(o.clip_norm)]


def _schedule_args(cfg: ExperimentCfg) -> List[str]:
    s = cfg.schedule
    argv = ["--lr-scheduler", SCHEDULER[s.name]]
    if s.name == "warmup_inverse_sqrt":
        argv += ["--warmup-updates", str(s.warmup_updates), "--decay-anchor", s.decay_anchor,
                 "--decay-anchor-updates", str(max(s.decay_anchor_updates, s.warmup_updates))]
    elif s.name == "step_once":
        argv += ["--anneal-epoch", str(s.anneal_epoch), "--lr-shrink", str(s.lr_shrink)]
    elif s.name == "constant_then_inverse_sqrt":
        argv += ["--decay-epoch", str(s.decay_epoch), "--lr-shrink", str(s.lr_shrink)]
    elif s.name == "linear_decay":
        # fairseq's polynomial_decay: linear warm-up over W updates (0 = none; our W = 1 means none), then
        # linear decay to 0 at total_updates (RAdam, sec. 4: no warm-up; NormFormer: warm-up)
        warmup = s.warmup_updates if s.warmup_updates > 1 else 0
        argv += ["--power", "1", "--warmup-updates", str(warmup), "--total-num-update", str(s.total_updates),
                 "--end-learning-rate", "0"]
    return argv


def _train_args(cfg: ExperimentCfg, save_dir: Path) -> List[str]:
    t, e = cfg.train, cfg.eval
    argv = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", str(t.label_smoothing),
            "--max-tokens", str(t.max_tokens), "--update-freq", str(t.update_freq), "--seed", str(cfg.seed),
            "--save-dir", str(save_dir), "--no-progress-bar", "--log-format", "json",
            "--log-interval", str(t.log_interval), "--num-workers", str(t.num_workers)]
    if t.max_epoch:
        argv += ["--max-epoch", str(t.max_epoch)]
    if t.max_update:
        argv += ["--max-update", str(t.max_update)]
    # keep only what scoring and resuming need: best, last, and the last N epochs when averaging
    argv += ["--keep-last-epochs", str(e.avg_last_n)] if e.avg_last_n else ["--no-epoch-checkpoints"]
    if t.valid_bleu:
        argv += ["--eval-bleu", "--eval-bleu-args", json.dumps({"beam": e.beam, "lenpen": e.lenpen}),
                 "--eval-bleu-remove-bpe", "sentencepiece" if cfg.dataset.subword == "sentencepiece" else "subword_nmt",
                 "--eval-tokenized-bleu", "--eval-bleu-detok", "space"]
    if t.fp16:
        argv.append("--fp16")
    if t.bf16:
        argv.append("--bf16")
    if t.cpu:
        argv.append("--cpu")
    if t.gpus > 1:
        argv += ["--distributed-world-size", str(t.gpus)]
        if t.cpu:
            # fairseq's spawn starts one rank per CUDA device (none on CPU): launch.py starts each rank itself
            # and adds --distributed-rank and the rendezvous address. gloo is torch's CPU backend; legacy_ddp
            # because fairseq's c10d DDP passes device_ids, which torch refuses for CPU modules.
            argv += ["--distributed-no-spawn", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
    if t.tensorboard:
        # beside checkpoints/ in the run's own folder, so that `tensorboard --logdir results/runs` shows every
        # run of every sweep side by side, named by its path (not part of the run's identity: identity.py)
        argv += ["--tensorboard-logdir", str(save_dir.parent / "tensorboard")]
    return argv + list(t.extra_args)


def local_processes(cfg: ExperimentCfg) -> int:
    """How many processes the runner starts for one run: one per rank for data parallelism on CPU, else one
    (on GPUs fairseq spawns the ranks itself)."""
    return cfg.train.gpus if cfg.train.cpu else 1


def train_argv(cfg: ExperimentCfg, directory: Path) -> List[str]:
    """The full command (a list) that trains this configuration into ``directory``."""
    d = cfg.dataset
    return [sys.executable, "-m", "normpos.fairseq_run", "train", d.data_bin,
            "-s", d.source_lang, "-t", d.target_lang,
            *_model_args(cfg), *_optim_args(cfg), *_schedule_args(cfg),
            *_train_args(cfg, directory / "checkpoints")]


def shell_line(argv: List[str]) -> str:
    return shlex.join(argv)
