"""Train the map's runs through the sweep's own runner, several at once, choosing each next run from the outcomes.

Every run is composed the way ``python -m normpos.sweep`` composes a job (Hydra: ``configs/train.yaml`` with
the preset's experiment and the command line's overrides, then the cell's scheme, depth, lr, seed and
warm-up), validated by the same schema, and trained by the same ``normpos.experiment.run_one.run``: the same
run folders and identities (a finished run is reused, a killed one starts again), lock, divergence watcher,
status and outcome log (``<run.root>/.sweeps/``). What Hydra's launchers cannot do is choose the next run
from the last outcome (a column stops after two failures; seed 2 goes where seed 1's frontier is), so the
runs go to a pool of worker threads here instead. Worker w keeps job number w, so on GPUs it trains on GPU
w mod n (``devices.gpu_for_job``), J workers per GPU as ``make sweep`` packs them.

The runner's own lines of each run (``[run] training``, the watcher's progress) go to the session's log
beside the outcomes, prefixed by the run; the terminal gets one line per run with its outcome, the runs
left and the time left, projected from the measured seconds per run at each depth.
"""

from __future__ import annotations

import copy
import io
import os
import statistics
import sys
import warnings
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from normpos.experiment import command, run_one, sweep_log, write_faults
from normpos.experiment.schema import ExperimentCfg, validate
from normpos.report.runs import FAILED

from . import plan as planning
from .classify import Outcome, classify
from .plan import Column, Key, Preset

REPO = Path(__file__).resolve().parents[3]


def compose_base(experiment: str, overrides: List[str]):
    """The preset's experiment composed by Hydra as the sweep app composes it, with the user's overrides."""
    from hydra import compose, initialize_config_dir

    # version_base 1.1: Hydra's version base is process-wide, and fairseq (building a model later in the same
    # process, e.g. a test) still calls hydra.experimental.initialize, which versions >= 1.2 refuse; our configs
    # compose the same under both (the config and the launcher choices were compared)
    with warnings.catch_warnings():  # Hydra's note that base 1.1 goes in Hydra 1.4 would end up in our one-liners
        warnings.filterwarnings("ignore", message=r"(?s).*version_base")
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
            return compose("train", overrides=[f"experiment={experiment}", *overrides])


def run_config(base, key: Key) -> ExperimentCfg:
    """The validated config of one run: the base with the cell's values set (as ``key=value`` overrides would)."""
    cfg = copy.deepcopy(base)
    for name, value in key.overrides().items():
        OmegaConf.update(cfg, name, value, merge=False)
    return validate(cfg)


class _Lines(io.TextIOBase):
    """sys.stdout while the pool runs: worker threads' lines go to the session log, prefixed by their run;
    the main thread's go to the terminal."""

    def __init__(self, terminal, log_path: Path):
        self.terminal, self.local, self.lock = terminal, threading.local(), threading.Lock()
        self.log = open(log_path, "a", encoding="utf-8")

    def tag(self, words: Optional[str]) -> None:
        self.local.tag, self.local.pending = words, ""

    def write(self, text: str) -> int:
        tag = getattr(self.local, "tag", None)
        if tag is None:
            return self.terminal.write(text)
        self.local.pending += text
        *lines, self.local.pending = self.local.pending.split("\n")
        if lines:
            with self.lock:
                self.log.write("".join(f"[{tag}] {line}\n" for line in lines))
                self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()

    def close_log(self) -> None:
        self.log.close()


class Pool:
    """Runs keys on ``jobs`` worker threads; each worker keeps its job number (its GPU)."""

    def __init__(self, base, bar_bits: float, jobs: int, lines: _Lines):
        self.base, self.bar, self.lines = base, bar_bits, lines
        self.executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="normpos-frontier")
        self.free = list(range(jobs))
        self.running: Dict[Future, Tuple[Key, int]] = {}

    def has_room(self) -> bool:
        return bool(self.free)

    def submit(self, key: Key) -> None:
        slot = self.free.pop(0)
        self.running[self.executor.submit(self._train, key, slot)] = (key, slot)

    def _train(self, key: Key, slot: int) -> Tuple[Outcome, Path, bool]:
        self.lines.tag(key.words())
        cfg = run_config(self.base, key)  # validated before the map started: cannot fail here
        directory = command.run_dir(cfg)
        try:
            try:
                status = run_one.run(cfg, slot)
            except OSError as err:  # a full disk or a read-only folder ends this run, not the map
                write_faults.record_failure(directory, err)
                status = {"status": "failed"}
            return classify(directory, self.bar), directory, status.get("outcome") == "skipped"
        except Exception as err:  # noqa: BLE001 - an unreadable run folder is this run's failure, not the map's
            return Outcome(FAILED, None, None, None, None, f"{type(err).__name__}: {err}"), directory, False
        finally:
            self.lines.tag(None)

    def done(self, timeout: Optional[float] = None) -> List[Tuple[Key, Outcome, Path, bool]]:
        """Wait for at least one run to end (or ``timeout`` seconds: maybe none); each ended run's (key, outcome,
        folder, reused)."""
        finished, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for future in finished:
            key, slot = self.running.pop(future)
            self.free.append(slot)
            out.append((key, *future.result()))
        return out

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class Progress:
    """Seconds per run by depth (median of the runs trained, or reused with their recorded time), and the
    time left for the runs the plan may still need."""

    def __init__(self, jobs: int):
        self.jobs, self.seconds, self.start = jobs, {}, time.time()

    def add(self, depth: int, seconds: Optional[float]) -> None:
        if seconds:
            self.seconds.setdefault(depth, []).append(float(seconds))

    def per_run(self, depth: int) -> Optional[float]:
        return statistics.median(self.seconds[depth]) if depth in self.seconds else None

    def left(self, runs_by_depth: Dict[int, int]) -> Optional[float]:
        """Seconds for these runs at ``jobs`` at once; None while a depth that has runs left was never timed."""
        total = 0.0
        for depth, runs in runs_by_depth.items():
            if runs and self.per_run(depth) is None:
                return None
            total += runs * (self.per_run(depth) or 0.0)
        return total / self.jobs

    def words(self, runs_by_depth: Dict[int, int]) -> str:
        left = self.left(runs_by_depth)
        timed = ", ".join(f"L{d} {self.per_run(d):.0f} s" for d in sorted(self.seconds))
        if left is None:
            return "time left: after the first run at each depth"
        return f"<= {left / 60:.1f} min left (per run: {timed}; {self.jobs} at once)"


def order(preset: Preset):
    """Priority of a run: low lrs first across the whole map (so that every depth is timed within the first
    runs), the map before the warm-up rows, deeper first at a tie (the longest runs start early)."""
    schemes = list(preset.schemes)

    def key(k: Key):
        return (preset.lrs.index(k.lr), k.warmup, k.seed, schemes.index(k.scheme), -k.depth)

    return key


def remaining(cols: List[Column], results: Dict[Key, str], skip_after: int) -> Dict[int, int]:
    """Runs the plan may still need, by depth."""
    by: Dict[int, int] = {}
    for col in cols:
        by[col.depth] = by.get(col.depth, 0) + planning.most_runs(col, results, skip_after)
    return by


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's ended children (the training processes): unlike wall time,
    hardly moved by other work on the machine, so it says what the map costs on idle cores."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_map(preset: Preset, base, bar_bits: float, jobs: int, log_path: Path,
            known: Optional[Dict[Key, Tuple[Outcome, Path]]] = None) -> Tuple[Dict[Key, Tuple[Outcome, Path]], int, float]:
    """Train the map; return every run's outcome and folder, how many were trained now (not reused), and the
    CPU seconds their processes used. Prints one line per run. ``known``: outcomes already measured (the
    committed record, ``record.py``): the plan continues from them as from runs that just ended, and their
    recorded seconds per run project the time of the new runs before any has ended."""
    grid, rows = planning.columns(preset)
    cols = grid + rows
    found: Dict[Key, Tuple[Outcome, Path]] = dict(known or {})
    results: Dict[Key, str] = {key: outcome.kind for key, (outcome, _) in found.items()}
    pending = set()
    progress = Progress(jobs)
    for key, (outcome, _) in found.items():
        progress.add(key.depth, outcome.wall_seconds)
    left = remaining(cols, results, preset.skip_after)
    if found:
        print(f"frontier: {sum(left.values())} runs at most left to train; "
              + (progress.words(left) if sum(left.values()) else "nothing to train"), flush=True)
    priority = order(preset)
    lines = _Lines(sys.stdout, log_path)
    pool = Pool(base, bar_bits, jobs, lines)
    done = trained = 0
    announced = bool(found) and progress.left(left) is not None  # projected above, from the record
    cpu = children_cpu_seconds()
    sys.stdout = lines
    try:
        while True:
            ready = sorted({k for col in cols for k in planning.wanted(col, results, preset.skip_after)
                            if k not in results and k not in pending}, key=priority)
            while ready and pool.has_room():
                key = ready.pop(0)
                pending.add(key)
                pool.submit(key)
            if not pool.running:
                break
            for key, outcome, directory, reused in pool.done():
                pending.discard(key)
                results[key] = outcome.kind
                found[key] = (outcome, directory)
                progress.add(key.depth, outcome.wall_seconds)
                done += 1
                trained += not reused
                left = remaining(cols, results, preset.skip_after)
                nll = f", valid nll {outcome.nll:.2f}" if outcome.nll is not None else ""
                took = "reused" if reused else f"{outcome.wall_seconds or 0:.0f} s"
                print(f"[frontier {done}/<={done + sum(left.values())}] {key.words()}: {outcome.kind}{nll} "
                      f"({took}); {(time.time() - progress.start) / 60:.1f} min so far, {progress.words(left)}",
                      flush=True)
                if not announced and not reused and progress.left(left) is not None:
                    announced = True
                    print(f"frontier: projected from the runs so far: {progress.words(left)}", flush=True)
    except KeyboardInterrupt:
        sys.stdout = lines.terminal
        print("frontier: interrupted; the runs that ended are kept: rerun the same command to go on", flush=True)
        os._exit(130)  # worker threads end with the process; their fairseq processes get SIGKILL (launch.py)
    finally:
        sys.stdout = lines.terminal
        lines.close_log()
    pool.shutdown()
    cpu = children_cpu_seconds() - cpu
    print(f"frontier: {done} runs ({trained} trained now, {done - trained} reused from their run folders"
          f"{f', {len(known)} from the record' if known else ''}) in "
          f"{(time.time() - progress.start) / 60:.1f} min, {cpu / 60:.1f} CPU-min of training processes"
          f"{f' ({cpu / trained:.0f} s a run)' if trained else ''}; every run's lines: {log_path}", flush=True)
    return found, trained, cpu


def outcomes_log(root: Path) -> Path:
    """A fresh outcomes file for this session beside the sweeps' (``sweep_log.record`` appends to it)."""
    folder = Path(root) / ".sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-frontier.jsonl"
    path.touch()
    os.environ[sweep_log.ENV_LOG] = str(path)
    return path
