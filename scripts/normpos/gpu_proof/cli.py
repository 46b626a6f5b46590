"""Command line of the proof (``make gpu-proof``): parts 0 to d in order, each under its deadline.

    python -m normpos.gpu_proof [--budget 540] [--source RAW_MULTI30K] [--precisions fp32 fp16 bf16]
        [--packings 1 2 4 8] [--tiny] [--override KEY=VALUE ...] [--data BIN_DIR] [--work DIR] [--results DIR]

A part that fails or runs out of time is recorded as such and the proof goes on with what it has (no
benchmark: fp32; no packing measured: no grid); the results folder is written in every case. Exit status:
0 when every part ran and at least one grid run was scored, 1 otherwise, 2 when nothing could start
(wheels, data, a budget too small), with one line ``normpos: error: ...``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from normpos.gpu_proof import ProofError
from normpos.gpu_proof.children import REPO, stop_all
from normpos.gpu_proof.plan import (PACKING_TOLERANCE, REPORT_SECONDS, Plan, best_jobs_per_gpu, choose_packing,
                                    data_workers)

PRECISIONS = ("fp32", "fp16", "bf16")
# --tiny: the tests' model (2 layers, d 32), for the benchmark (fairseq options) and the grid (Hydra)
TINY_FAIRSEQ = ("--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 32 --decoder-embed-dim 32 "
                "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
                "--decoder-attention-heads 2")
TINY_HYDRA = {"model.layers": "2", "model.embed_dim": "32", "model.ffn_embed_dim": "64", "model.attention_heads": "2"}


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m normpos.gpu_proof", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=540.0, help="seconds for everything (default 540)")
    p.add_argument("--source", help="raw Multi30k, to prepare data/multi30k/bpe8000 when it is absent")
    p.add_argument("--data", type=Path, help="a binarized de-en folder to use instead (its ref/ beside it)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS,
                   help="benchmarked precisions (default: all three on a GPU, fp32 on CPU)")
    p.add_argument("--packings", nargs="+", type=int, default=[1, 2, 4, 8], help="concurrent runs to measure")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (App. A.1: 4096)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer d-32 model instead of the IWSLT one (CPU tests)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override of the grid (the packing runs use the grid's command too); repeatable")
    p.add_argument("--log-interval", type=int, default=5, help="updates per fairseq log record in the packing trials")
    p.add_argument("--packing-window", type=float,
                   help="seconds all runs of a trial must train side by side (default: 30%% of the trial's time)")
    p.add_argument("--max-update", type=int, help="at most this many updates per grid run (default: as sized)")
    p.add_argument("--bench-updates", type=int, help="updates per benchmark round (default 20)")
    p.add_argument("--work", type=Path, help="scratch folder (default .gpu/<device>; replaced)")
    p.add_argument("--results", type=Path, help="results folder (default results/multi30k/<device>)")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl", help="wheels to install when fairseq is missing")
    p.add_argument("--site", type=Path, default=Path("/tmp/site"), help="where to install them")
    args = p.parse_args(argv)
    bad = [o for o in args.override if "=" not in o]
    if bad or any(k < 1 for k in args.packings):
        p.error(f"--override takes KEY=VALUE (got {bad[0]})" if bad else "--packings must be >= 1")
    return args


def user_overrides(args) -> dict:
    values = dict(TINY_HYDRA) if args.tiny else {}
    if args.data is not None:
        values.update({"dataset.data_bin": str(args.data.resolve()), "dataset.ref_dir": str(args.data.resolve().parent / "ref")})
    values.update(dict(o.split("=", 1) for o in args.override))
    return values


class Proof:
    """The record of one proof (``proof.json``), and the timing of its parts."""

    def __init__(self, argv, budget: float, plan: Plan, machine_info: dict):
        self.plan = plan
        self.record = {"command": shlex.join(["python", "-m", "normpos.gpu_proof", *argv]),
                       "budget": budget, "machine": machine_info, "parts": {}}
        self.ok = True

    def part(self, name: str, label: str):
        return _Part(self, name, label)


class _Part:
    def __init__(self, proof: Proof, name: str, label: str):
        self.proof, self.name, self.label = proof, name, label

    def __enter__(self):
        self.started = time.monotonic()
        planned = self.proof.plan.parts.get(self.name)
        print(f"\n== {self.label}" + (f" ({planned:.0f} s planned)" if planned else "") + " ==", flush=True)
        self.proof.record["parts"][self.name] = {"planned_s": planned, "outcome": "running"}
        return self

    def __exit__(self, kind, error, tb):
        used = time.monotonic() - self.started
        entry = self.proof.record["parts"][self.name]
        entry["used_s"] = round(used, 1)
        if error is None:
            entry["outcome"] = entry["outcome"] if entry["outcome"] != "running" else "done"
        elif isinstance(error, ProofError):
            entry["outcome"] = f"failed: {error}"
            self.proof.ok = False
            print(f"normpos: error: {error}", file=sys.stderr, flush=True)
        else:  # interrupted (Ctrl-C, SIGTERM) or a bug: recorded, then passed on
            entry["outcome"] = f"interrupted: {type(error).__name__} {error}".rstrip()
            self.proof.ok = False
            return False
        print(f"== {self.label}: {entry['outcome']} in {used:.0f} s ==", flush=True)
        return True

    def outcome(self, text: str) -> None:
        self.proof.record["parts"][self.name]["outcome"] = text
        if not text.startswith("done"):
            self.proof.ok = False


def exit_on_signal(number, frame):
    """SIGTERM (a device tool's timeout, ``kill``) and SIGHUP end the proof like Ctrl-C: children stopped,
    the results folder written with what there is."""
    raise KeyboardInterrupt(f"signal {number}")


def main(argv=None) -> int:
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, exit_on_signal)
    try:
        return run(argv)
    except KeyboardInterrupt as why:
        print(f"normpos: error: interrupted ({why or 'Ctrl-C'})", file=sys.stderr)
        return 130
    finally:
        stop_all()


def run(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    plan = Plan(budget=args.budget, start=time.monotonic())
    user = user_overrides(args)
    try:
        from normpos.gpu_proof import wheels

        installed = wheels.ensure_importable(args.wheels, args.site)
        from normpos.gpu_proof import data, machine

        info = machine.describe()
        device = "cuda" if info["gpu"] else "cpu"
        if info["gpu_count"] > 1:  # the proof measures one GPU: every child sees only the first
            first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
            os.environ["CUDA_VISIBLE_DEVICES"] = first
            print(f"{info['gpu_count']} GPUs visible: the proof uses one (CUDA_VISIBLE_DEVICES={first})", flush=True)
        if device == "cpu" and not args.tiny:
            raise ProofError("no CUDA GPU here: the IWSLT-size proof is for a GPU; on CPU run the tests' size with "
                             "--tiny (make gpu-proof GPU_PROOF_ARGS=--tiny)")
        slug = machine.slug(info["gpu"] or f"cpu-{info['cpu']}")
        work = (args.work or REPO / ".gpu" / slug).resolve()
        results = (args.results or REPO / "results" / "multi30k" / slug).resolve()
        from normpos.gpu_proof.package import prepare_folders

        prepare_folders(work, results)  # a proof measures a fresh start
        print(f"normpos gpu-proof on {info['gpu'] or info['cpu'] + ' CPU'} ({device}), budget {args.budget:.0f} s; "
              f"scratch {work}, results {results}" + (f" (and a copy in $OUT={os.environ['OUT']})" if os.environ.get("OUT") else ""),
              flush=True)
        if installed:
            print(f"installed {len(installed)} wheels into {args.site}", flush=True)
        data_bin = data.ensure_data(args.data, args.source, work / "data.log", plan.end)
        plan.split()
    except ProofError as err:
        print(f"normpos: error: {err}", file=sys.stderr, flush=True)
        return 2
    precisions = args.precisions or (list(PRECISIONS) if device == "cuda" else ["fp32"])
    print(f"setup took {time.monotonic() - plan.start:.0f} s; the rest:\n" + plan.describe(precisions, args.packings), flush=True)
    proof = Proof(argv, args.budget, plan, info)
    proof.record["data_bin"] = str(data_bin)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    run_root = work / "runs"
    precision, trials = "fp32", None
    from normpos.gpu_proof import bench, grid, packing

    # the grid's command per precision, from the sweep's dry run (it imports fairseq), made while (a) runs
    user_workers = int(user["train.num_workers"]) if "train.num_workers" in user else None

    def dry_run(p: str):
        return packing.start_dry_run(grid.as_args(grid.overrides(run_root, p, device, user_workers or 1, args.max_tokens, user)),
                                     work / "packing" / f"dry-run-{p}.log")

    dry_runs = {p: dry_run(p) for p in precisions}
    try:
        with proof.part("bench", "a. benchmark") as part:
            result = bench.run(precisions, data_bin, args.max_tokens, TINY_FAIRSEQ if args.tiny else "", device,
                               work / "bench", plan.deadline("bench", part.started), updates=args.bench_updates)
            proof.record["bench"] = result
            precision = result["training_precision"]
            if any("error" in r for r in result["precisions"].values()):
                part.outcome("done, with failures: " + "; ".join(f"{p}: {r['error']}" for p, r in result["precisions"].items() if "error" in r))
        with proof.part("packing", "b. packing") as part:
            deadline = plan.deadline("packing", part.started)
            if precision not in dry_runs:  # fp32 as the fallback when no asked precision could be benchmarked
                dry_runs[precision] = dry_run(precision)
            command = packing.grid_command(dry_runs[precision], deadline)
            trials = packing.measure(command, args.packings, work / "packing", deadline, args.log_interval, cpus,
                                     user_workers, window=args.packing_window)
            proof.record["packing"] = {"precision": precision, "command": shlex.join(command), "trials": trials}
            best = best_jobs_per_gpu(trials)
            if best is not None:  # what `make sweep` packs on this GPU model (normpos.experiment.devices)
                proof.record["packing"].update({"gpu": info["gpu"], "best_jobs_per_gpu": best, "best_jobs_per_gpu_rule":
                                                f"fewest runs at a time within {PACKING_TOLERANCE:.0%} of the "
                                                "highest aggregate updates/s"})
            if not any(t["status"] == "measured" for t in trials):
                part.outcome("failed: no trial was measured")
        with proof.part("grid", "c. grid") as part:
            if trials is None:
                raise ProofError("the packing part did not run, so the grid cannot be sized")
            deadline = plan.deadline("grid", part.started)
            sizing = choose_packing(trials, deadline - time.monotonic(), cap=args.max_update)
            proof.record["packing"]["chosen"] = sizing
            if not sizing["fits"]:
                print(f"[grid] warning: the grid does not fit in its time: {sizing['rule']}; it runs "
                      f"{sizing['max_update']} update(s) each and is stopped at the deadline", flush=True)
            workers = int(user["train.num_workers"]) if "train.num_workers" in user else data_workers(sizing["concurrent"], cpus)
            shared = grid.overrides(run_root, precision, device, workers, args.max_tokens, user)
            sweeps = grid.run_sweeps(shared, sizing, work / "grid", deadline - REPORT_SECONDS, cpus)
            made = grid.report(run_root, work / "report", work / "grid", deadline)
            runs = grid.summarize_runs(run_root)
            proof.record["grid"] = {"precision": precision, "overrides": shared, "sizing": sizing, "sweeps": sweeps,
                                    "report": made, "runs": runs}
            scored = [r for r in runs if r["test_tok_bleu"] is not None]
            complete = len(runs) == 7 and all(r["status"] in ("finished", "diverged") for r in runs)
            part.outcome(f"{'done' if complete and scored else 'incomplete'}: {len(runs)} runs, "
                         f"{sum(r['status'] == 'finished' for r in runs)} finished, {len(scored)} scored, "
                         f"report {'made' if all(v == 'made' for v in made.values()) else made}")
            if not scored:
                proof.ok = False
    finally:
        stop_all()  # the other precisions' dry runs, and whatever an error or a signal left running
        with proof.part("results", "d. results") as part:
            from normpos.gpu_proof import package, readme

            proof.record["seconds"] = round(time.monotonic() - plan.start, 1)
            part.outcome("done (this folder)")
            noted = [n for n, p in proof.record["parts"].items() if p["outcome"].startswith("done,")]
            proof.record["verdict"] = ("Every part ran" if proof.ok else "Not every part ran to the end") + \
                (f"; {', '.join(noted)} had failures" if noted else "") + ": see the outcomes below."
            files = package.write_results(work, results, proof.record, readme.render(proof.record), package.out_folder())
            print("\n".join(f"  {f['name']:14s} {f['bytes'] / 2 ** 20:8.2f} MiB" for f in files), flush=True)
            print(f"results: {results}", flush=True)
    print(f"gpu-proof: {proof.record['verdict']} {time.monotonic() - plan.start:.0f} s of {args.budget:.0f} s", flush=True)
    return 0 if proof.ok else 1
