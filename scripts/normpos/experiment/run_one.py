"""Run one configuration: train (or resume, or skip), watch for divergence, record the outcome, score.

Files in the run directory (all written atomically):
- ``run.json``: what this run is (config values, label, paper number, command, commit, machine);
- ``config.yaml``: the composed config; ``command.sh``: the exact command; ``train.log``: fairseq's log;
- ``metrics.jsonl``: one row per epoch (train/valid loss, valid BLEU, lr);
- ``status.json``: ``finished`` | ``diverged`` | ``failed``, with the reason.

A run whose status is final is skipped; one that was killed resumes from ``checkpoints/checkpoint_last.pt``
(fairseq does that by itself when the save dir has one). A diverged run is an outcome, not an error: the
sweep goes on.
"""

import json
import os
import platform
import time
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from normpos.files import write_json, write_text
from normpos.provenance import git_commit

from . import command, devices, launch
from .checkpoints import prune_checkpoints, repair_resume_point
from .watch import Watcher, load_metrics, save_metrics
from .schema import ExperimentCfg

FINAL = ("finished", "diverged")
REPO = Path(__file__).resolve().parents[3]


def read_status(directory: Path) -> Optional[dict]:
    try:
        return json.loads((directory / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}, torch {torch.__version__}"
        return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    except ImportError:
        return platform.platform()


def describe(cfg: ExperimentCfg, argv: List[str]) -> dict:
    """run.json: everything the reports and the scorer need to know about the run."""
    return {
        "dataset": cfg.dataset.name, "experiment": cfg.experiment, "section": cfg.section,
        "config": command.config_slug(cfg), "label": command.config_label(cfg), "seed": cfg.seed,
        "scheme": cfg.model.scheme, "optimizer": cfg.optim.optimizer, "lr": cfg.optim.lr,
        "lr_scheduler": cfg.schedule.name, "warmup_updates": cfg.schedule.warmup_updates,
        "data_bin": cfg.dataset.data_bin, "ref_dir": cfg.dataset.ref_dir,
        "source_lang": cfg.dataset.source_lang, "target_lang": cfg.dataset.target_lang,
        "subword": cfg.dataset.subword, "beam": cfg.eval.beam, "lenpen": cfg.eval.lenpen, "max_len_b": cfg.eval.max_len_b,
        "avg_last_n": cfg.eval.avg_last_n, "compound_split": cfg.eval.compound_split,
        "paper": paper_numbers(cfg),
        "command": command.shell_line(argv), "commit": git_commit(), "machine": machine(),
    }


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def paper_numbers(cfg: ExperimentCfg) -> Optional[dict]:
    """The paper's number(s) for this configuration: the first ``paper`` entry whose ``when`` matches."""
    entries = OmegaConf.to_container(cfg.paper) if OmegaConf.is_config(cfg.paper) else cfg.paper
    for entry in entries or []:
        when = entry.get("when") or {}
        if all(_same(OmegaConf.select(cfg, key), value) for key, value in when.items()):
            return {k: v for k, v in entry.items() if k != "when"}
    return None


def train(cfg: ExperimentCfg, directory: Path, argv: List[str], env: dict) -> dict:
    """Run fairseq-train, stream its log, stop it on divergence; return the status record."""
    metrics = load_metrics(directory / "metrics.jsonl")  # a resumed run keeps its earlier epochs
    watcher = Watcher(cfg.run.divergence_factor, metrics)
    start = time.time()
    with open(directory / "train.log", "a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {command.shell_line(argv)}\n")
        training = launch.Training(argv, env)
        tail: List[str] = []
        try:
            for line in training.lines:
                log.write(line)
                log.flush()  # the log is what a user tails while the run goes
                tail = (tail + [line.rstrip()])[-20:]
                if watcher.feed(line):
                    save_metrics(directory / "metrics.jsonl", metrics)
                    last = metrics[max(metrics)]
                    print(f"[{directory}] epoch {last['epoch']}: valid loss {last['valid_loss']}"
                          + (f", valid BLEU {last['valid_bleu']}" if last.get("valid_bleu") is not None else ""),
                          flush=True)
                if watcher.diverged:
                    training.stop()
                    break
        except BaseException:
            training.stop()  # our side failed (e.g. train.log on a full disk): fairseq must not block on its pipe
            raise
        finally:
            code = training.wait()
    updates = max((m["num_updates"] for m in metrics.values()), default=0)
    base = {"num_updates": updates, "epochs": max((m["epoch"] for m in metrics.values()), default=0), "wall_seconds": round(time.time() - start, 1)}
    if watcher.diverged:
        return {**base, "status": "diverged", "reason": watcher.diverged}
    if code != 0 and watcher.saw_marker:
        return {**base, "status": "diverged", "reason": f"fairseq stopped: {watcher.saw_marker}"}
    if code != 0:
        # fairseq's OSError (e.g. "[Errno 28] No space left on device") may sit above the last lines
        detail = ([watcher.os_error] if watcher.os_error else []) + tail[-3:]
        return {**base, "status": "failed", "reason": f"exit code {code}: " + " / ".join(detail)}
    return {**base, "status": "finished", "reason": ""}


def child_env(cfg: ExperimentCfg, job_num: int) -> dict:
    # unbuffered: the log is read line by line while training runs (progress, divergence)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    gpu = devices.gpu_for_job(cfg.run.gpu_ids, job_num)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def run(cfg: ExperimentCfg, job_num: int = 0) -> dict:
    """Train and score one configuration; return its status. Never raises for a diverged or failed run."""
    directory = command.run_dir(cfg)
    argv = command.train_argv(cfg, directory)
    if cfg.run.dry_run:
        print(command.shell_line(argv), flush=True)
        return {"status": "dry-run"}
    status = read_status(directory)
    if status and status["status"] in FINAL:
        print(f"[{directory}] {status['status']} already; skipped", flush=True)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "run.json", describe(cfg, argv), sort_keys=True)
        write_text(directory / "config.yaml", OmegaConf.to_yaml(cfg))
        write_text(directory / "command.sh", "#!/usr/bin/env bash\n" + command.shell_line(argv) + "\n")
        recovered = repair_resume_point(directory)  # a damaged checkpoint_last.pt: the newest good one, or none
        resumed = (directory / "checkpoints" / "checkpoint_last.pt").exists()
        print(f"[{directory}] {'resuming' if resumed else 'training'}", flush=True)
        status = train(cfg, directory, argv, child_env(cfg, job_num))
        if recovered:
            status["recovered"] = recovered
        write_json(directory / "status.json", status, sort_keys=True)
        print(f"[{directory}] {status['status']} {status['reason']}".rstrip(), flush=True)
    if cfg.eval.score and status["status"] == "finished":
        from normpos.scoring.score_run import score_run  # the scorer reads run.json; imported only when used

        outcome, _ = score_run(directory)
        print(f"[{directory}] test set {outcome}", flush=True)
    if status["status"] in FINAL:
        prune_checkpoints(directory / "checkpoints", keep=status["status"] == "finished")
    return status
