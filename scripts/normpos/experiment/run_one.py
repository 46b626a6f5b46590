"""Run one configuration: train (or resume, or skip), watch for divergence, record the outcome, score.

Files in the run directory (all written atomically):
- ``run.json``: what this run is (config values, label, paper number, command, commit, machine);
- ``config.yaml``: the composed config; ``command.sh``: the exact command; ``train.log``: fairseq's log;
- ``metrics.jsonl``: one row per epoch (train/valid loss, valid BLEU, lr);
- ``status.json``: ``finished`` | ``diverged`` | ``failed``, with the reason;
- ``watch.json``: the divergence watcher's baseline (the run's first training loss), kept across resumes.

A run directory belongs to one training identity (``identity.py``: every value that reaches fairseq but the
budget and the seed); one process trains it at a time (``lock.py``: a second sweep skips it with a line).
A run whose status is final is skipped, unless it finished and the budget asked now (max_update/max_epoch)
goes beyond the one it had: then it continues from ``checkpoints/checkpoint_last.pt``, as does a run that
was killed (fairseq resumes by itself when the save dir has one). A diverged run is an outcome, not an
error: the sweep goes on. Each run's outcome goes to the sweep's log (``sweep_log.py``). In a Slurm job, training
stopped by Slurm is either no outcome (the job is requeued: its next start resumes) or a failure that names
Slurm's reason (scancel, a time limit): ``slurm_job.py``.
"""

import json
import os
import platform
import time
from pathlib import Path
from typing import List, Mapping, Optional

from omegaconf import OmegaConf

from normpos import numerics
from normpos.files import write_json, write_text
from normpos.provenance import git_commit

from . import command, devices, identity, launch, slurm_job, sweep_log
from .lock import Busy, run_lock
from .checkpoints import prune_checkpoints, repair_resume_point
from .watch import Watcher, load_metrics, save_metrics
from .schema import ExperimentCfg

FINAL = ("finished", "diverged")
REPO = Path(__file__).resolve().parents[3]


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_status(directory: Path) -> Optional[dict]:
    return read_json(directory / "status.json")


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
        "config": command.config_name(cfg), "slug": command.config_slug(cfg), "label": command.config_label(cfg),
        "seed": cfg.seed, "identity": identity.identity_hash(argv),
        "budget": identity.budget(cfg.train.max_update, cfg.train.max_epoch),
        "data_fingerprint": identity.data_fingerprint(cfg.dataset.data_bin),
        "scheme": cfg.model.scheme, "optimizer": cfg.optim.optimizer, "lr": cfg.optim.lr,
        "lr_scheduler": cfg.schedule.name, "warmup_updates": cfg.schedule.warmup_updates,
        "data_bin": cfg.dataset.data_bin, "ref_dir": cfg.dataset.ref_dir,
        "source_lang": cfg.dataset.source_lang, "target_lang": cfg.dataset.target_lang,
        "subword": cfg.dataset.subword, "beam": cfg.eval.beam, "lenpen": cfg.eval.lenpen, "max_len_b": cfg.eval.max_len_b,
        "avg_last_n": cfg.eval.avg_last_n, "compound_split": cfg.eval.compound_split,
        "paper": paper_numbers(cfg),
        "command": command.shell_line(argv), "commit": git_commit(), "machine": machine(),
        "numerics": numerics.describe(cfg.train.numerics, numerics.with_threads(os.environ, cfg.train.threads)),
        "slurm_job": slurm_job.label(),  # where Slurm's logs of the run are (.submitit/<label>/), None outside Slurm
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


def train(cfg: ExperimentCfg, directory: Path, argv: List[str], env: dict, runs_after: int = 0,
          parallel: int = 1) -> dict:
    """Run fairseq-train, stream its log, stop it on divergence; return the status record."""
    metrics = load_metrics(directory / "metrics.jsonl")  # a resumed run keeps its earlier epochs
    watcher = Watcher(cfg.run.divergence_factor, metrics, state=directory / "watch.json",
                      max_update=cfg.train.max_update, max_epoch=cfg.train.max_epoch,
                      converge_window=cfg.train.converge_window, converge_min_bits=cfg.train.converge_min_bits)
    # a converged run stops once fairseq has saved that epoch's checkpoints (best and last: what scoring and a
    # later, larger budget read); with --no-save there is nothing to wait for
    saves = "--no-save" not in argv
    start = time.time()
    with open(directory / "train.log", "a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {command.shell_line(argv)}\n")
        training = launch.Training(argv, env, processes=command.local_processes(cfg), log_dir=directory)
        tail: List[str] = []
        try:
            for line in training.lines:
                log.write(line)
                log.flush()  # the log is what a user tails while the run goes
                tail = (tail + [line.rstrip()])[-20:]
                if watcher.feed(line):
                    save_metrics(directory / "metrics.jsonl", metrics)
                    last = metrics[max(metrics)]
                    # a validation may come inside an epoch (--validate-interval-updates): name the update first
                    print(f"[{directory}] update {last['num_updates']} (epoch {last['epoch']}): valid loss "
                          f"{last['valid_loss']}"
                          + (f", valid BLEU {last['valid_bleu']}" if last.get("valid_bleu") is not None else "")
                          + sweep_eta(watcher.eta_seconds, time.time() - start, runs_after, parallel),
                          flush=True)
                if watcher.diverged:
                    training.stop()
                    break
                if watcher.converged and (not saves or "Saved checkpoint" in line):
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
    if watcher.converged:  # stopped by us after the rule held: a finished run (its reason says why it ended)
        return {**base, "status": "finished", "reason": watcher.converged}
    if code != 0 and watcher.saw_marker:
        return {**base, "status": "diverged", "reason": f"fairseq stopped: {watcher.saw_marker}"}
    if code != 0:
        slurm = slurm_job.stopped()  # stopped from outside by Slurm: requeued (no outcome yet) or ended
        if slurm and slurm[0] == "requeued":
            # no status, no outcome line, no result for submitit: the requeued start resumes the run
            raise SystemExit(f"[{directory}] {slurm[1]} at update {updates}; its next start resumes the run")
        if slurm:
            return {**base, "status": "failed", "reason": f"{slurm[1]} (stopped at update {updates}, exit code {code})"}
        ranks = " (ranks > 0 log to train.rank<R>.log)" if command.local_processes(cfg) > 1 else ""
        # fairseq's OSError (e.g. "[Errno 28] No space left on device") may sit above the last lines
        detail = ([watcher.os_error] if watcher.os_error else []) + tail[-3:]
        return {**base, "status": "failed", "reason": f"exit code {code}{ranks}: " + " / ".join(detail)}
    return {**base, "status": "finished", "reason": ""}


def sweep_eta(run_left: Optional[float], run_elapsed: float, runs_after: int, parallel: int) -> str:
    """'; ~N min left in this run, ~M in the sweep': the sweep's part assumes the runs still to come take as
    long as this one and run ``parallel`` at a time (finished runs that are skipped make it pessimistic)."""
    if run_left is None:
        return ""
    words = f"; ~{run_left / 60:.1f} min left in this run"
    if runs_after > 0:
        rest = run_left + runs_after * (run_elapsed + run_left) / max(1, parallel)
        # runs_after counts the sweep's later-numbered runs, some of which may already run beside this one
        words += f", ~{rest / 60:.0f} min in the sweep ({runs_after} later run{'s' if runs_after != 1 else ''} of it)"
    return words


def child_env(cfg: ExperimentCfg, job_num: int, base: Optional[Mapping[str, str]] = None) -> dict:
    """fairseq-train's environment: ``base`` (default: ours) with the config's CPU numerics and GPU."""
    # unbuffered: the log is read line by line while training runs (progress, divergence)
    env = numerics.environment(numerics.with_threads({**(os.environ if base is None else base), "PYTHONUNBUFFERED": "1"},
                                                     cfg.train.threads), cfg.train.numerics)
    gpu = devices.gpu_for_job(cfg, job_num)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def command_script(cfg: ExperimentCfg, argv: List[str]) -> str:
    """command.sh: the exact command; for data parallelism on CPU, one process per rank, as launch starts them."""
    processes = command.local_processes(cfg)
    if processes == 1:
        return "#!/usr/bin/env bash\n" + command.shell_line(argv) + "\n"
    lines = ["#!/usr/bin/env bash", f"# {processes} CPU ranks (train.gpus={processes}, train.cpu=true), "
             "rendezvous on 127.0.0.1:$PORT", "PORT=${PORT:-29500}"]
    for rank in range(processes):
        line = command.shell_line(launch.rank_argv(argv, rank, 0)).replace("tcp://127.0.0.1:0", "tcp://127.0.0.1:$PORT")
        lines.append(line + " &")
    return "\n".join(lines + ["wait", ""])


class Refused(Exception):
    """This run must not be trained as asked; the message says why and what to do."""


def decide(cfg: ExperimentCfg, directory: Path) -> Optional[str]:
    """None to train (new, killed, or finished with a smaller budget than asked), else why it is skipped.
    Raises :class:`Refused` for an existing run that must not be reused or continued."""
    info = read_json(directory / "run.json")
    status = read_status(directory)
    data = identity.data_fingerprint(cfg.dataset.data_bin)
    if info and data and info.get("data_fingerprint") not in (None, data):
        raise Refused(f"was trained on other data ({cfg.dataset.data_bin}'s dictionaries changed since): "
                      f"move {directory} away, or give the new data its own run.root")
    if not status or status.get("status") not in FINAL:
        return None
    asked = identity.budget(cfg.train.max_update, cfg.train.max_epoch)
    had = status.get("budget") or (info or {}).get("budget") or asked
    how, words = identity.compare_budget(asked, had)
    if status["status"] == "finished" and how == "more":
        if not (directory / "checkpoints" / "checkpoint_last.pt").exists():
            raise Refused(f"finished with {identity.budget_words(had)}; continuing it ({words}) needs "
                          "checkpoints/checkpoint_last.pt, which was pruned (run.keep_last=false): "
                          f"move {directory} away to train it anew")
        print(f"[{directory}] finished with {identity.budget_words(had)}; continuing ({words})", flush=True)
        return None
    trained = f" ({identity.budget_words(had)}; asked {identity.budget_words(asked)})" if how == "less" else ""
    return f"{status['status']} already{trained}"


def run(cfg: ExperimentCfg, job_num: int = 0) -> dict:
    """Train and score one configuration; return its status. Never raises for a diverged, failed, busy or
    refused run: each is printed in one line and recorded in the sweep's log, and the sweep goes on."""
    directory = command.run_dir(cfg)
    argv = command.train_argv(cfg, directory)
    if cfg.run.dry_run:
        print(command.shell_line(argv), flush=True)
        return {"status": "dry-run"}
    plan = sweep_log.position()
    if plan:
        print(f"[run {job_num + 1}/{plan[0]}] {directory}", flush=True)
    try:
        with run_lock(directory):
            status = run_locked(cfg, directory, argv, job_num, plan)
    except Busy as busy:
        print(f"[{directory}] {busy}; skipped", flush=True)
        sweep_log.record(directory, "skipped", str(busy))
        return {"status": "skipped", "reason": str(busy)}
    except Refused as refused:
        print(f"normpos: error: [{directory}] {refused}", flush=True)
        sweep_log.record(directory, "failed", str(refused))
        return {"status": "failed", "reason": str(refused)}
    sweep_log.record(directory, status.get("outcome", status["status"]), status.get("reason", ""))
    return status


def run_locked(cfg: ExperimentCfg, directory: Path, argv: List[str], job_num: int, plan) -> dict:
    skip = decide(cfg, directory)
    if skip:
        print(f"[{directory}] {skip}; skipped", flush=True)
        status = {**read_status(directory), "outcome": "skipped"}
    else:
        write_json(directory / "run.json", describe(cfg, argv), sort_keys=True)
        write_text(directory / "config.yaml", OmegaConf.to_yaml(cfg))
        write_text(directory / "command.sh", command_script(cfg, argv))
        recovered = repair_resume_point(directory)  # a damaged checkpoint_last.pt: the newest good one, or none
        resumed = (directory / "checkpoints" / "checkpoint_last.pt").exists()
        print(f"[{directory}] {'resuming' if resumed else 'training'}", flush=True)
        runs_after, parallel = (plan[0] - job_num - 1, plan[1]) if plan else (0, 1)
        status = train(cfg, directory, argv, child_env(cfg, job_num), runs_after, parallel)
        status["budget"] = identity.budget(cfg.train.max_update, cfg.train.max_epoch)
        if recovered:
            status["recovered"] = recovered
        write_json(directory / "status.json", status, sort_keys=True)
        print(f"[{directory}] {status['status']} {status['reason']}".rstrip(), flush=True)
    if cfg.eval.score and status["status"] == "finished":
        from normpos.scoring.score_run import score_run  # the scorer reads run.json; imported only when used

        outcome, _ = score_run(directory)
        print(f"[{directory}] test set {outcome}", flush=True)
    if status["status"] in FINAL:
        prune_checkpoints(directory / "checkpoints", keep=status["status"] == "finished",
                          keep_last=cfg.run.keep_last)
    return status
