"""Part (c): the Multi30k grid at the IWSLT size, packed on one GPU, then its table and figures.

Two sweeps of ``configs/experiment/gpu_proof.yaml`` through the sweep's command line (``normpos.sweep``):
the 6 Post-LN runs (its sweep) with Hydra's joblib launcher, and the Pre-LN run (``variant=preln_step_once
optim.lr=5e-4 schedule.warmup_updates=1``) beside it or before it, as ``plan.layout`` says. Every
run gets the same ``train.max_update`` and the stop-time guard from ``plan.size_grid``; the sweep scores each
finished run on the test set (``normpos.scoring``: beam 5, lenpen 1.2, ``checkpoint_best.pt``). At the
grid's deadline whatever still runs is stopped (its run says so: no ``status.json``, or ``failed``), and the
report is drawn from what finished (``python -m normpos.report table`` / ``figures``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List

from normpos.gpu_proof.children import Child, python_module, run_until
from normpos.gpu_proof.plan import REPORT_SECONDS, threads

EXPERIMENT = "gpu_proof"
PRE_LN = ["variant=preln_step_once", "optim.lr=5e-4", "schedule.warmup_updates=1"]
PRECISION_OVERRIDES = {"fp32": [], "fp16": ["train.fp16=true"], "bf16": ["train.bf16=true"]}


def fixed_extra_args() -> List[str]:
    """The experiment's own ``train.extra_args`` (checkpoint savings), to which the stop-time guard is added."""
    from omegaconf import OmegaConf  # installed from the wheels by then

    config = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "experiment" / f"{EXPERIMENT}.yaml")
    return [str(a) for a in config.train.extra_args]


def overrides(run_root: Path, precision: str, device: str, workers: int, max_tokens: int, user: dict) -> dict:
    """key -> value of the Hydra overrides every job of the grid shares; the user's (--override) win."""
    # train.numerics native: the grid sets each run's CPU threads for packing (the pin would fix them at 2),
    # and a GPU's kernels are not pinned anyway (normpos.numerics)
    found = {"experiment": EXPERIMENT, "run.root": str(run_root), "train.num_workers": str(workers),
             "train.max_tokens": str(max_tokens), "train.numerics": "native"}
    for item in PRECISION_OVERRIDES[precision]:
        key, value = item.split("=", 1)
        found[key] = value
    if device == "cpu":
        found["train.cpu"] = "true"
    return {**found, **user}


def as_args(values: dict) -> List[str]:
    return [f"{key}={value}" for key, value in values.items()]


def sweep_argv(shared: dict, sizing: dict, extra: List[str], jobs: int, pre_ln: bool) -> List[str]:
    values = {**shared, "train.max_update": str(sizing["max_update"])}
    if "train.extra_args" not in shared:
        guard = ["--stop-time-hours", str(sizing["stop_time_hours"])]
        values["train.extra_args"] = "[" + ",".join([*extra, *guard]) + "]"
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    return python_module("normpos.sweep", "-m", *as_args(values), *launcher, *(PRE_LN if pre_ln else []))


def run_sweeps(shared: dict, sizing: dict, folder: Path, deadline: float, cpus: int) -> dict:
    """Both sweeps, packed as ``sizing`` says, stopped at ``deadline`` (monotonic) if still running."""
    k = sizing["concurrent"]
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(threads(k, cpus))}
    extra = fixed_extra_args()
    post = sweep_argv(shared, sizing, extra, sizing["post_ln_jobs"], pre_ln=False)
    pre = sweep_argv(shared, sizing, extra, 1, pre_ln=True)
    started = time.monotonic()
    print(f"[grid] {k} run(s) at a time ({sizing['post_ln_jobs']} Post-LN, the Pre-LN run "
          f"{'beside them' if sizing['pre_ln_beside'] else 'before them'}), {sizing['max_update']} updates each, "
          f"until {deadline - started:.0f} s from now", flush=True)
    logs = {"post": (folder / "sweep-post-ln.log", "[grid post-ln] "), "pre": (folder / "sweep-pre-ln.log", "[grid pre-ln] ")}
    if sizing["pre_ln_beside"]:
        children = [Child(post, logs["post"][0], prefix=logs["post"][1], env=env),
                    Child(pre, logs["pre"][0], prefix=logs["pre"][1], env=env)]
        for child in children:
            if not child.wait(deadline):
                child.stop()
    else:
        children = [run_until(pre, *logs["pre"], deadline=deadline, env=env)]
        children.append(run_until(post, *logs["post"], deadline=deadline, env=env))
    stopped = [c for c in children if c.returncode is None or c.returncode < 0]
    return {"commands": [c.argv[1:] for c in children], "seconds": round(time.monotonic() - started, 1),
            "exit_codes": [c.returncode for c in children], "omp_num_threads": env["OMP_NUM_THREADS"],
            "stopped_at_deadline": bool(stopped)}


def experiment_root(run_root: Path) -> Path:
    """``<run.root>/<dataset>/gpu_proof``: the folder of the grid's run directories."""
    found = sorted(run_root.glob(f"*/{EXPERIMENT}"))
    return found[0] if found else run_root / "multi30k" / EXPERIMENT


def report(run_root: Path, out: Path, folder: Path, deadline: float) -> dict:
    """normpos.report's table and figures of the grid, into ``out``."""
    made = {}
    root = experiment_root(run_root)
    for what in ("table", "figures"):
        child = run_until(python_module("normpos.report", what, "--root", str(root), "--out", str(out)),
                          folder / f"report-{what}.log", f"[report {what}] ",
                          deadline=max(deadline, time.monotonic() + REPORT_SECONDS / 2))
        made[what] = "made" if child.returncode == 0 else f"failed: {child.tail(1)}"
    return made


def summarize_runs(run_root: Path) -> List[dict]:
    """One row per run directory: configuration, outcome, updates, best valid loss, test BLEU."""
    rows = []
    for info_path in sorted(experiment_root(run_root).rglob("run.json")):
        folder = info_path.parent
        info = json.loads(info_path.read_text(encoding="utf-8"))
        status = _json(folder / "status.json") or {"status": "killed (no status.json)"}
        score = _json(folder / "score.json") or {}
        losses = [r.get("valid_loss") for r in _jsonl(folder / "metrics.jsonl") if r.get("valid_loss") is not None]
        rows.append({"config": info["config"], "label": info.get("label"), "status": status.get("status"),
                     "reason": status.get("reason", ""), "num_updates": status.get("num_updates"),
                     "epochs": status.get("epochs"), "wall_seconds": status.get("wall_seconds"),
                     "best_valid_loss": min(losses) if losses else None,
                     "test_tok_bleu": score.get("test_tok_bleu"), "sacrebleu": score.get("sacrebleu")})
    return rows


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _jsonl(path: Path) -> list:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
