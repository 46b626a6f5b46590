"""``python -m normpos.converge`` (``make reproduce-multi30k PRESET=cpu``): plan, train to convergence, report.

    python -m normpos.converge --preset cpu                 # the whole preset on 2 CPU cores
    python -m normpos.converge --preset cpu --dry-run       # the plan and every command; nothing trained
    python -m normpos.converge --preset cpu -- train.max_epoch=5   # Hydra overrides for every run

It prints the plan (runs, the convergence rule, the projected time from the preset's recorded speed and
whether it fits the budget), then a line per epoch of each run and one per ended run with the time left
re-projected from what was measured, and writes ``results/<dataset>/reproduce-<preset>/`` (``report.py``).
An interrupted invocation resumes: finished runs are reused, a killed run resumes from its last checkpoint.
Exit status 1 when a run failed, 2 for a bad preset, override or missing data (one line ``normpos: error: ...``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from normpos.frontier.cli import fail

from . import plan as planning
from .plan import PlanError


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m normpos.converge", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="configs/converge/NAME.yaml (cpu, tiny)")
    parser.add_argument("--run-root", default="results/runs", help="where run folders go (RUN_ROOT)")
    parser.add_argument("--out", type=Path, help="results folder (default results/<dataset>/reproduce-<preset>)")
    parser.add_argument("--frontier", type=Path, default=Path("results/multi30k/frontier-cpu"),
                        help="the frontier map to cross-check with")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and every command; train nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. train.max_epoch=5")
    return parser.parse_args(argv)


def rule_words(cfg) -> str:
    t = cfg.train
    if t.converge_window < 1:
        return f"none (every run trains {t.max_epoch} epochs)"
    return (f"stop when the best valid loss improved < {t.converge_min_bits} bits over the last "
            f"{t.converge_window} epochs (normpos.experiment.convergence), at most {t.max_epoch} epochs")


def plan_lines(preset, cfg) -> list:
    from normpos.experiment.command import format_number

    b, s3, s4 = preset.budget, preset.sec3, preset.sec4
    n, e = planning.run_count(preset), cfg.train.max_epoch
    minutes = planning.projected_seconds(preset, e) / 60
    return [
        f"reproduce: preset {preset.name}, runs of configs/experiment/{preset.experiment}.yaml on {cfg.dataset.name}, "
        f"{n} runs, {preset.jobs} at once",
        f"  sec. 3.2: Post-LN, Adam, lr {', '.join(map(format_number, s3.lrs))} x warm-up "
        f"{', '.join(map(str, s3.warmups))} (1 = none), seed {s3.seed}; Pre-LN without warm-up at lr "
        f"{', '.join(map(format_number, s3.pre_ln_lrs)) or '-'}",
        f"  sec. 4: Pre-LN without warm-up ({s4.pre_ln_schedule}) at lr {format_number(s4.lr)}, seeds "
        f"{', '.join(map(str, s4.seeds))}, vs Post-LN with its best warm-up (chosen from sec. 3.2's seed {s3.seed})",
        f"  convergence: {rule_words(cfg)}",
        f"  time: <= {minutes:.0f} min = {n} runs x ({e} epochs x ({b.updates_per_epoch} updates / "
        f"{b.updates_per_s} updates/s + {b.valid_seconds:.0f} s validation) + {b.run_seconds:.0f} s start-up and "
        f"test scoring) / {preset.jobs} at once (recorded speed; re-projected as runs end); budget "
        f"{b.minutes:.0f} min: {'fits' if minutes <= b.minutes else 'DOES NOT FIT'}",
        "  finished runs are reused; a killed run resumes from its last checkpoint",
    ]


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from normpos.experiment.schema import ConfigError, validate
    from normpos.frontier.runner import compose_base, run_config

    try:
        preset = planning.load_preset(args.preset)
    except PlanError as err:
        return fail(str(err))
    logging.getLogger().setLevel(logging.WARNING)  # fairseq's import leaves the root logger at DEBUG
    overrides = [f"run.root={args.run_root}", *(["run.dry_run=true"] if args.dry_run else []), *args.overrides]
    try:
        base = compose_base(preset.experiment, overrides)
        cfg = validate(base)
        keys = planning.fixed_runs(preset)
        for key in keys:  # every run validates before anything trains
            run_config(base, key)
    except (HydraException, OmegaConfBaseException, ConfigError) as err:
        return fail(str(err).splitlines()[0])
    out = args.out or Path("results") / cfg.dataset.name / f"reproduce-{args.preset}"
    print("\n".join(plan_lines(preset, cfg)), flush=True)
    if args.dry_run:
        return dry_run(preset, base)
    return train(args, preset, base, cfg, out)


def dry_run(preset, base) -> int:
    from normpos.experiment import run_one
    from normpos.frontier.runner import run_config

    print("reproduce: dry run: every run's command (Post-LN's other sec. 4 seeds shown at the longest warm-up; "
          "the runs choose theirs)", flush=True)
    assumed = {k: None for k in planning.fixed_runs(preset)}  # no losses: best_warmup takes the longest
    for key in planning.wanted(preset, assumed):
        print(f"# {key.words()}", flush=True)
        run_one.run(run_config(base, key))
    return 0


def train(args, preset, base, cfg, out: Path) -> int:
    from normpos.experiment.run_one import machine
    from normpos.experiment.write_faults import RunRootWritable
    from normpos.frontier.cli import cpu_environment, settings
    from normpos.frontier.runner import outcomes_log, run_config
    from normpos.experiment import command
    from normpos.provenance import git_commit
    from normpos.report.runs import ReportError
    from normpos_fairseq.architectures.transformer_normpos import SHAPES

    # the plugin's first import (just above) sets fairseq's DEBUG root level again: matplotlib's import (by the
    # report) would print its DEBUG lines between the plan and the progress
    logging.getLogger().setLevel(logging.WARNING)
    from . import report
    from .runner import best_loss, run_all

    data_bin = Path(cfg.dataset.data_bin)
    if not (data_bin / f"dict.{cfg.dataset.target_lang}.txt").is_file():
        return fail(f"{data_bin} holds no prepared data: run `{cfg.dataset.prepare}` first")
    RunRootWritable.check(base)
    if cfg.train.cpu:
        cpu_environment(preset.jobs)
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.time()
    ended, trained, _cpu = run_all(preset, base, cfg.train.max_epoch, outcomes_log(Path(args.run_root)).with_suffix(".log"))
    losses = {k: best_loss(d) if st.get("status") == "finished" else None for k, (st, d) in ended.items()}
    w = planning.best_warmup(preset, losses)
    baseline_key = planning.RunKey("sec. 3.2", "post_ln", "warmup_inverse_sqrt", preset.sec4.lr, w, preset.sec3.seed)
    baseline = command.config_name(run_config(base, baseline_key))
    s = settings(cfg)
    s["layers"] = cfg.model.layers or SHAPES[cfg.model.shape]["layers"]
    make = f"make reproduce-multi30k PRESET={args.preset}" + (f" ARGS={shlex.quote(' '.join(args.overrides))}"
                                                               if args.overrides else "")
    info = {"preset": args.preset, "experiment": preset.experiment, "make_command": make, "commit": git_commit(),
            "machine": machine(), "started": started, "minutes": (time.time() - t0) / 60,
            "trained_now": trained, "reused": len(ended) - trained, "max_epoch": cfg.train.max_epoch,
            "projected_minutes": planning.projected_seconds(preset, cfg.train.max_epoch) / 60,
            "rule": rule_words(cfg), "window": cfg.train.converge_window, "settings": s}
    root = Path(args.run_root) / cfg.dataset.name / cfg.experiment
    try:
        planned = {Path(d).resolve() for _, d in ended.values()}
        made = report.write(root, out, baseline, info, args.frontier, planned)
    except (ReportError, KeyError, ValueError) as err:
        return fail(f"{out}: {err}")
    print(f"reproduce: wrote {made['readme']}, {out}/table.md, curves.png", flush=True)
    failed = [k for k, (st, _) in ended.items() if st.get("status") == "failed"]
    for k in failed:
        print(f"  failed: {k.words()}: {ended[k][0].get('reason')}", flush=True)
    return 1 if failed else 0
