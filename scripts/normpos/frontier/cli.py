"""``python -m normpos.frontier`` (``make frontier``): plan, train and report the stability frontier map.

    python -m normpos.frontier --preset cpu                          # the whole map on CPU
    python -m normpos.frontier --preset cpu --schemes post_ln,pre_ln --depths 8
    python -m normpos.frontier --preset iwslt --dry-run              # every command, nothing trained
    python -m normpos.frontier --preset cpu --report-only            # tables, figures, README again
    python -m normpos.frontier --preset cpu -- train.max_update=200  # Hydra overrides for every run

It prints the plan (runs, the unigram bar, how many run at once), then one line per run with the runs and the
time left (projected from the measured seconds per run at each depth, known after the first run at each
depth), and writes ``results/<dataset>/frontier-<preset>/`` (``report.py``). Exit status 1 when a run
failed, 2 for a bad preset, override or missing data (one line ``normpos: error: ...``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

from normpos import numerics

from . import plan as planning
from .plan import Key, PlanError, Preset

REPO = Path(__file__).resolve().parents[3]


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m normpos.frontier", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="configs/frontier/NAME.yaml (cpu, iwslt, tiny)")
    parser.add_argument("--schemes", help="only these schemes (comma or space separated; SCHEMES=...)")
    parser.add_argument("--depths", help="only these depths (DEPTHS=...)")
    parser.add_argument("--lrs", help="only these learning rates (LRS=...)")
    parser.add_argument("--run-root", default="results/runs", help="where run folders go (RUN_ROOT)")
    parser.add_argument("--out", type=Path, help="results folder (default results/<dataset>/frontier-<preset>)")
    parser.add_argument("--theory", type=Path, default=Path("results/theory/schemes"),
                        help="make gradnorm-schemes' folder, for the comparison with Theorem 1")
    parser.add_argument("--jobs", type=int, help="runs at once (default: the preset's, else as make sweep packs)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and every command; train nothing")
    parser.add_argument("--report-only", action="store_true", help="rebuild the folder from its runs.csv and plan.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. train.max_update=200")
    return parser.parse_args(argv)


def fail(message: str, code: int = 2) -> int:
    print(f"normpos: error: {message}", file=sys.stderr, flush=True)
    return code


def make_words(args) -> str:
    """The make command this invocation is (what the README tells a reader to run)."""
    words = [f"make frontier PRESET={args.preset}"]
    for name, value in (("SCHEMES", args.schemes), ("DEPTHS", args.depths), ("LRS", args.lrs)):
        if value:
            words.append(f"{name}={','.join(planning.split_list(value))}")
    if args.overrides:
        words.append(f"ARGS={shlex.quote(' '.join(args.overrides))}")
    return " ".join(words)


def jobs_for(preset: Preset, cfg, asked: Optional[int], dry_run: bool = False) -> tuple:
    """(runs at once, why)."""
    from normpos.experiment import devices

    if asked:
        return asked, "--jobs"
    if cfg.train.cpu:
        return preset.jobs or 1, "the preset" if preset.jobs else "one at a time"
    visible = devices.visible_gpus()
    if not visible and dry_run:
        return 1, "no GPU here: the machine that runs it decides"
    if not visible:
        raise PlanError(f"the {preset.experiment} runs train on GPUs and none is visible "
                        "(ARGS='train.cpu=true' to run them on the CPU anyway)")
    if preset.jobs:
        return preset.jobs, "the preset"
    per_gpu, source = devices.jobs_per_gpu(os.environ.get("JOBS_PER_GPU"), devices.gpu_name())
    return per_gpu * len(visible), f"{per_gpu} per GPU x {len(visible)} GPU(s) ({source})"


def settings(cfg) -> dict:
    """The values every run of the map shares (the README's and the plan's description of the runs)."""
    from normpos_fairseq.architectures.transformer_normpos import SHAPES

    m, o, t = cfg.model, cfg.optim, cfg.train
    shape = SHAPES[m.shape]
    return {"dataset": cfg.dataset.name, "shape": m.shape, "embed_dim": m.embed_dim or shape["embed_dim"],
            "ffn_embed_dim": m.ffn_embed_dim or shape["ffn_embed_dim"],
            "heads": m.attention_heads or shape["attention_heads"], "dropout": m.dropout,
            "optimizer": o.optimizer, "betas": list(o.betas), "clip_norm": o.clip_norm, "max_tokens": t.max_tokens,
            "max_update": t.max_update, "label_smoothing": t.label_smoothing,
            "device": "CPU" if t.cpu else "GPU" + (", bf16" if t.bf16 else ", fp16" if t.fp16 else "")}


def plan_lines(preset: Preset, grid, rows, cfg, jobs, why, bar: Optional[dict]) -> List[str]:
    from normpos.experiment.command import format_number

    s = settings(cfg)
    first = len(grid) * len(preset.lrs)
    extra = len(grid) * min(2, len(preset.lrs)) * (len(preset.seeds) - 1)
    warm = sum(len(r.lrs) for r in rows)
    lines = [
        f"frontier: preset {preset.name}, runs of configs/experiment/{preset.experiment}.yaml: {s['dataset']}, "
        f"d {s['embed_dim']}, FFN {s['ffn_embed_dim']}, {s['heads']} heads, N = {s['max_update']} updates of "
        f"{s['max_tokens']} tokens, {s['optimizer']}, no warm-up, constant lr, {s['device']}",
        f"  {len(preset.schemes)} schemes x {len(preset.depths)} depths ({' '.join(map(str, preset.depths))}) x "
        f"{len(preset.lrs)} lrs ({', '.join(map(format_number, preset.lrs))}) = {first} runs of seed "
        f"{preset.seeds[0]} at most (a column stops after {preset.skip_after} lrs in a row that do not train)",
        f"  + about {extra} runs of seed(s) {', '.join(map(str, preset.seeds[1:])) or '-'} next to the frontiers"
        f" + at most {warm} warm-up runs ({', '.join(sorted({r.scheme for r in rows})) or 'none'} at "
        f"L{preset.warmup.depth}, W {', '.join(str(w) for w in sorted({r.warmup for r in rows}))})",
        f"  at most ~{first + extra + warm} runs, {jobs} at once ({why}); finished runs are reused (the results "
        "folder's runs.csv, then the run folders)",
        "  time: projected from the seconds per run at each depth of the record, else once the first run at "
        "each depth (runs of the map, started first) has ended",
    ]
    if bar:
        lines.append(f"  trains: valid nll at update N below {bar['bar_bits']:.3f} bits = the target unigram "
                     f"cross-entropy {bar['bits']:.3f} - {bar['margin_bits']} ({bar['data_bin']})")
    return lines


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from normpos.experiment.schema import ConfigError, validate

    try:
        preset = planning.load_preset(args.preset, planning.split_list(args.schemes),
                                      planning.split_list(args.depths), planning.split_list(args.lrs))
    except (PlanError, ValueError) as err:
        return fail(str(err))
    # importing fairseq (above, through the plugin) leaves the root logger at DEBUG: Hydra's, matplotlib's and
    # fairseq's data-loading lines would drown the plan and the progress (each run's own log keeps fairseq's)
    logging.getLogger().setLevel(logging.WARNING)
    overrides = [f"run.root={args.run_root}", *(["run.dry_run=true"] if args.dry_run else []), *args.overrides]
    from .runner import compose_base, run_config

    try:
        base = compose_base(preset.experiment, overrides)
        cfg = validate(base)
    except (HydraException, OmegaConfBaseException, ConfigError) as err:
        return fail(str(err).splitlines()[0])
    out = args.out or Path("results") / cfg.dataset.name / f"frontier-{args.preset}"
    if args.report_only:
        return report_only(out)
    grid, rows = planning.columns(preset)
    try:
        jobs, why = jobs_for(preset, cfg, args.jobs, args.dry_run)
        for col in grid + rows:  # every run of the plan validates before anything trains
            for i in range(len(col.lrs)):
                run_config(base, col.key(i, col.seeds[0]))
    except (PlanError, ConfigError) as err:
        return fail(str(err))
    if args.dry_run:
        return dry_run(preset, grid, rows, base, cfg, jobs, why)
    return train(args, preset, grid, rows, base, cfg, jobs, why, out)


def dry_run(preset, grid, rows, base, cfg, jobs, why) -> int:
    from normpos.experiment import run_one

    from .runner import run_config

    print("\n".join(plan_lines(preset, grid, rows, cfg, jobs, why, None)), flush=True)
    print(f"frontier: dry run: the commands of every seed-{preset.seeds[0]} run and warm-up run (the other seeds' "
          "cells are chosen from seed 1's outcomes)", flush=True)
    for col in grid + rows:
        for i in range(len(col.lrs)):
            run_one.run(run_config(base, col.key(i, col.seeds[0])))
    return 0


def train(args, preset, grid, rows, base, cfg, jobs, why, out: Path) -> int:
    from normpos.experiment.run_one import machine
    from normpos.experiment.write_faults import RunRootWritable
    from normpos.provenance import git_commit

    from . import record, report
    from .classify import NOT_RUN
    from .runner import outcomes_log, run_map
    from .unigram import DataMissing, unigram_cross_entropy

    data_bin = Path(cfg.dataset.data_bin)
    if not (data_bin / f"dict.{cfg.dataset.target_lang}.txt").is_file():
        return fail(f"{data_bin} holds no prepared data: run `{cfg.dataset.prepare}` first")
    RunRootWritable.check(base)
    try:
        bar = unigram_cross_entropy(str(data_bin), cfg.dataset.source_lang, cfg.dataset.target_lang)
    except DataMissing as err:
        return fail(str(err))
    bar.update(margin_bits=preset.margin_bits, bar_bits=bar["bits"] - preset.margin_bits)
    if cfg.train.cpu:
        cpu_environment(jobs)
    reuse = record.read(out, base, settings(cfg), bar)
    print("\n".join(plan_lines(preset, grid, rows, cfg, jobs, why, bar) + record.words(reuse, out)), flush=True)
    log = outcomes_log(Path(args.run_root))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.time()
    found, trained, cpu = run_map(preset, base, bar["bar_bits"], jobs, log.with_suffix(".log"), reuse.found)
    commit = git_commit()
    # the folder covers the record's map and this invocation's: SCHEMES=mine adds a scheme, drops none
    shown = record.merged_preset(preset, reuse.plan)
    cells, emitted = [], set()

    def measured_row(key: Key) -> dict:  # a reused record row keeps its commit; a run folder says its own
        return cell_row(key, *found[key], reuse.commits.get(key) or measured_at(found[key][1], commit))

    for col in sum(planning.columns(shown), []):
        seeds = col.seeds
        for i, lr in enumerate(col.lrs):
            for seed in seeds:
                key = col.key(i, seed)
                if key in found:
                    cells.append(measured_row(key))
                    emitted.add(key)
                elif seed == seeds[0]:
                    cells.append({**cell_row(key, None, None), "outcome": NOT_RUN})
    cells += [measured_row(key) for key in found if key not in emitted]
    w = shown.warmup
    info = {
        "preset": args.preset, "experiment": preset.experiment, "schemes": list(shown.schemes),
        "depths": list(shown.depths), "lrs": list(shown.lrs), "seeds": list(shown.seeds),
        "skip_after": preset.skip_after,
        "warmup": {"schemes": [s for s in w.schemes if s in shown.schemes], "depth": w.depth,
                   "updates": list(w.updates), "lrs": list(w.lrs or shown.lrs)},
        "settings": settings(cfg), "bar": bar, "jobs": jobs, "theory_folder": str(args.theory),
        "command": "python -m normpos.frontier " + shlex.join(sys.argv[1:]), "make_command": make_words(args),
        "commit": commit, "machine": machine(), "started": started,
        "session_seconds": round(time.time() - t0, 1), "trained_now": trained, "reused": len(found) - trained,
        "from_record": len(reuse.found),
        "cpu_seconds": round(cpu, 1), "cores": os.cpu_count(),
    }
    out.mkdir(parents=True, exist_ok=True)
    report.save_runs(out, cells)
    from normpos.files import write_json

    write_json(out / "plan.json", info)
    report.write(out)
    print(f"frontier: wrote {out}/README.md, table.md, fig1_frontier.png"
          + (", fig2_warmup.png" if (out / "fig2_warmup.png").exists() else ""), flush=True)
    failed = [c for c in cells if c["outcome"] == "failed"]
    for c in failed:
        print(f"  failed: {c['run']}: {c['reason']}", flush=True)
    return 1 if failed else 0


# glibc malloc: allocations below 32 MiB from the heap, which is never trimmed. The output layer's logits of a
# 1024-token batch (~28 MiB) are otherwise mmap-ed and unmapped at every step, and the kernel zeroes their pages
# again: 1.08 M minor page faults and 3.1 s of system time in 40 updates of the CPU preset's model, 0.15 M and
# 0.8 s with these (user time unchanged; measured side by side on the 2-core VM). The numbers trained are the same.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30), "MALLOC_TOP_PAD_": str(256 << 20)}


def cpu_environment(jobs: int) -> None:
    """What the CPU runs inherit (unless already set): one torch thread each, and the malloc settings."""
    if jobs > 1:
        # small models: torch threads of runs side by side only fight over the cores. Pinned numerics fix the
        # thread count for every host (normpos.numerics): 1 here, whatever the host's cores, so the map's
        # numbers do not depend on the machine
        os.environ.setdefault(numerics.ENV_THREADS, "1")
    for name, value in MALLOC.items():
        os.environ.setdefault(name, value)


def measured_at(directory, default: str) -> str:
    """The commit a run folder's run was trained at (its run.json): a run reused from its folder rather than from
    the record was measured by an earlier invocation, not this one."""
    from normpos.experiment.run_one import read_json

    info = read_json(Path(directory) / "run.json") if directory else None
    return (info or {}).get("commit") or default


def cell_row(key: Key, outcome, directory, commit: Optional[str] = None) -> dict:
    """A row of runs.csv; ``commit``: the invocation that measured it (a row reused from the record keeps its own)."""
    row = {"scheme": key.scheme, "depth": key.depth, "warmup": key.warmup, "lr": key.lr, "seed": key.seed}
    if outcome is not None:
        row.update(outcome=outcome.kind, valid_nll=outcome.nll, at_update=outcome.at_update, updates=outcome.updates,
                   wall_seconds=outcome.wall_seconds, reason=outcome.reason, run=str(directory), commit=commit)
    return row


def report_only(out: Path) -> int:
    from normpos.report.runs import ReportError

    from . import report

    if not (out / "runs.csv").is_file() or not (out / "plan.json").is_file():
        return fail(f"{out} has no runs.csv and plan.json: run the map first")
    try:
        report.write(out)
    except (ReportError, KeyError, ValueError) as err:
        return fail(f"{out}: {err}")
    print(f"frontier: rewrote {out}", flush=True)
    return 0
