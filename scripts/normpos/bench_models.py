"""Benchmark: does the plugin cost speed? (``make bench``; a benchmark, not a test.)

Trains our Post-LN and Pre-LN IWSLT models and fairseq's built-in ``transformer_iwslt_de_en`` (plain, and
with ``--encoder/decoder-normalize-before``) through fairseq's own ``Trainer`` on the same batches, in one
process, and prints tokens/s of each and the ratio ours / built-in (target >= 0.98). Rounds are interleaved
(A B C D, A B C D, ...) so that machine noise hits every model alike; the median round counts. How far to trust
it is printed beside it: each model's spread over the rounds, and the ratio of each pair round by round (a round's
ratio compares two models timed seconds apart, so it cancels slow drifts of the machine but not another job that
starts or stops between them). When a pair's round ratios span more than the verdict's margin (1 - target, 2%),
the rounds disagree by more than the verdict can tell apart, and the output says so. All models use
the current fairseq FFN init (``--ffn-init torch_default``) so that they are the same computation: the init
does not change the speed.

``--precision`` trains in fp32, fp16 or bf16 (fairseq's ``--fp16`` / ``--bf16``: half-precision weights and
activations with an fp32 master copy); ``--json`` writes the numbers, with each model's peak GPU memory, for
``make gpu-proof``. The four models share one GPU, so a model's peak is measured as the memory it holds
(weights, gradients, optimizer state: allocated while building it and running its warm-up steps) plus the
largest extra allocation during one of its rounds (activations, workspaces): what it would need alone.
``--model-args`` adds fairseq options to every model (a tiny shape for tests). ``--max-seconds`` bounds the
whole process (from its start): no round starts that would end later; the JSON is rewritten after every
round, so a process stopped from outside still leaves the rounds it finished.

    python -m normpos.bench_models [--data BIN_DIR] [--device cpu|cuda] [--precision fp32|fp16|bf16]
        [--max-tokens N] [--updates N] [--rounds N] [--max-seconds S] [--model-args "..."] [--json PATH]
"""

import time

STARTED = time.perf_counter()  # --max-seconds counts from here, before the imports of torch and fairseq

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from normpos.fairseq_build import build_task_and_model  # noqa: E402
from normpos.files import write_json  # noqa: E402
from normpos.provenance import git_commit  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED_MULTI30K = REPO.parent / "shared" / "data" / "multi30k" / "task1" / "tok"

# name -> (architecture options); each ours is paired with the built-in it must equal
MODELS = {
    "fairseq transformer_iwslt_de_en (Post-LN)": ["--arch", "transformer_iwslt_de_en", "--share-decoder-input-output-embed"],
    "normpos_iwslt_de_en_post_ln": ["--arch", "normpos_iwslt_de_en_post_ln", "--ffn-init", "torch_default"],
    "fairseq transformer_iwslt_de_en + normalize_before (Pre-LN)": [
        "--arch", "transformer_iwslt_de_en", "--share-decoder-input-output-embed",
        "--encoder-normalize-before", "--decoder-normalize-before",
    ],
    "normpos_iwslt_de_en_pre_ln": ["--arch", "normpos_iwslt_de_en_pre_ln", "--ffn-init", "torch_default"],
}
PAIRS = [("normpos_iwslt_de_en_post_ln", "fairseq transformer_iwslt_de_en (Post-LN)"),
         ("normpos_iwslt_de_en_pre_ln", "fairseq transformer_iwslt_de_en + normalize_before (Pre-LN)")]
TARGET_RATIO = 0.98  # ours may cost at most 2% of the built-in's speed
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"]}
MIB = 2 ** 20


def binarize_multi30k_slice(out: Path, lines: int = 6000) -> Path:
    """Real text for the benchmark when no prepared data is given: the first lines of Multi30k (tokenized)."""
    if not SHARED_MULTI30K.is_dir():
        sys.exit(f"normpos: error: no --data given and {SHARED_MULTI30K} is absent; prepare data (make data-multi30k) and pass --data")
    for lang in ("de", "en"):
        text = (SHARED_MULTI30K / f"train.lc.norm.tok.{lang}").read_text(encoding="utf-8").splitlines()[:lines]
        (out / f"train.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "-s", "de", "-t", "en", "--joined-dictionary",
         "--trainpref", str(out / "train"), "--validpref", str(out / "train"), "--destdir", str(out / "bin"),
         "--workers", "2"],
        check=True, capture_output=True,
    )
    return out / "bin"


def make_trainer(data: Path, arch_args, common):
    from fairseq.trainer import Trainer

    cfg, task, model = build_task_and_model(data, *arch_args, *common, seed=1)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion), task, cfg


def fixed_batches(task, cfg, count):
    task.load_dataset("train")
    itr = task.get_batch_iterator(
        dataset=task.dataset("train"), max_tokens=cfg.dataset.max_tokens, seed=1, num_workers=0,
    ).next_epoch_itr(shuffle=True)
    return [batch for _, batch in zip(range(count), itr)]


def time_round(trainer, batches, device) -> float:
    """Seconds for one pass of train_step over the batches (CUDA synchronized)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        trainer.train_step([batch])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class Memory:
    """Per-model GPU memory while several models share the GPU (see the module docstring); no-op on CPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.resident, self.step_peak, self._before = {}, {}, 0

    def mark(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self._before = torch.cuda.memory_allocated()

    def held_since_mark(self, name: str) -> None:
        """What ``name`` holds now that it is built and warmed up: allocated since ``mark``."""
        if self.cuda:
            torch.cuda.synchronize()
            self.resident[name] = torch.cuda.memory_allocated() - self._before

    def timed_round(self, name: str, trainer, batches, device) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
        seconds = time_round(trainer, batches, device)
        if self.cuda:
            extra = torch.cuda.max_memory_allocated() - start
            self.step_peak[name] = max(self.step_peak.get(name, 0), extra)
        return seconds

    def of(self, name: str) -> dict:
        if not self.cuda:
            return {"resident_mib": None, "step_peak_mib": None, "peak_mib": None}
        resident, step = self.resident[name] / MIB, self.step_peak.get(name, 0) / MIB
        return {"resident_mib": round(resident, 1), "step_peak_mib": round(step, 1), "peak_mib": round(resident + step, 1)}


def spread(values) -> float:
    """(max - min) / median of a model's per-round tokens/s: 0 when every round ran at the same speed."""
    return (max(values) - min(values)) / statistics.median(values)


def round_ratios(seconds: dict, ours: str, ref: str) -> list:
    """ours / built-in tokens/s, round by round (the same tokens in both, so it is the built-in's seconds over ours)."""
    return [r / o for o, r in zip(seconds[ours], seconds[ref])]


def summarize(seconds: dict, tokens: int, memory: "Memory") -> dict:
    """tokens/s (median round), its spread over the rounds and memory of each model; ratio of each of ours to its
    built-in (of the medians), its range over the rounds, and whether the rounds agree within the verdict's margin."""
    rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    per_round = {ours: round_ratios(seconds, ours, ref) for ours, ref in PAIRS}
    margin = 1 - TARGET_RATIO
    return {
        "models": {name: {"tokens_per_s": round(rate[name], 1), "round_seconds": [round(x, 6) for x in seconds[name]],
                          "spread": round(spread([tokens / x for x in seconds[name]]), 4), **memory.of(name)}
                   for name in seconds},
        "ratios": {ours: round(rate[ours] / rate[ref], 4) for ours, ref in PAIRS},
        "ratio_rounds": {ours: [round(x, 4) for x in r] for ours, r in per_round.items()},
        "ratio_range": {ours: [round(min(r), 4), round(max(r), 4)] for ours, r in per_round.items()},
        "rounds_agree": {ours: max(r) - min(r) <= margin for ours, r in per_round.items()},
    }


def verdict_lines(found: dict) -> list:
    """The printed result: tokens/s and spread per model, then each ratio with its range and a plain warning when
    the rounds disagree by more than the verdict's margin."""
    lines = []
    for name, model in found["models"].items():
        peak = model["peak_mib"]
        lines.append(f"  {name:62s} {model['tokens_per_s']:10.0f} tokens/s  spread {100 * model['spread']:5.1f}%"
                     + (f"  peak {peak:8.0f} MiB" if peak is not None else ""))
    margin = 100 * (1 - TARGET_RATIO)
    for ours, ratio in found["ratios"].items():
        low, high = found["ratio_range"][ours]
        rounds = len(found["ratio_rounds"][ours])
        lines.append(f"  ratio {ours} / built-in: {ratio:.3f} (median round), {low:.3f}..{high:.3f} over {rounds} rounds")
        if not found["rounds_agree"][ours]:
            lines.append(f"  WARNING: the rounds disagree by {100 * (high - low):.1f}% (> the {margin:.0f}% the verdict "
                         f"needs): do not trust this ratio; rerun on idle cores or with more rounds")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="binarized de-en fairseq data (default: a Multi30k slice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(PRECISION_FLAGS), default="fp32")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 4096 on GPU, 1024 on CPU")
    parser.add_argument("--updates", type=int, default=None, help="updates per round (default 50 GPU, 4 CPU)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds at most (see --max-seconds)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="start no round that would end later than this many seconds after the process "
                             "started (at least one round runs)")
    parser.add_argument("--model-args", default="", help="fairseq options added to every model, e.g. a tiny shape")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file (after every round)")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    max_tokens = args.max_tokens or (4096 if gpu else 1024)
    updates = args.updates or (50 if gpu else 4)
    common = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
              "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "4000",
              "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
              "--max-tokens", str(max_tokens), "--dropout", "0.1", "--seed", "1", "--num-workers", "0",
              *PRECISION_FLAGS[args.precision], *shlex.split(args.model_args)]
    if not gpu:
        common.append("--cpu")
    device_name = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    commit = git_commit(short=True)
    record = {
        "precision": args.precision, "device": args.device, "device_name": device_name,
        "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
        "max_tokens": max_tokens, "updates_per_round": updates, "model_args": shlex.split(args.model_args),
        "pairs": dict(PAIRS), "target_ratio": TARGET_RATIO,
        "command": shlex.join(["python", "-m", "normpos.bench_models", *(argv if argv is not None else sys.argv[1:])]),
    }
    memory = Memory(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or binarize_multi30k_slice(Path(tmp))
        trainers, batches = {}, None
        for name, arch_args in MODELS.items():
            memory.mark()
            trainer, task, cfg = make_trainer(data, arch_args, common)
            if batches is None:
                batches = fixed_batches(task, cfg, updates)
            time_round(trainer, batches[:2], args.device)  # warm-up: allocator, kernels
            memory.held_since_mark(name)
            trainers[name] = trainer
        tokens = sum(int(b["ntokens"]) for b in batches)
        seconds = {name: [] for name in MODELS}
        for r in range(args.rounds):
            for name, trainer in trainers.items():
                seconds[name].append(memory.timed_round(name, trainer, batches, args.device))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            if args.json:
                write_json(args.json, {**record, "rounds": r + 1, "target_tokens_per_round": tokens,
                                       **summarize(seconds, tokens, memory)})
            elapsed, per_round = time.perf_counter() - STARTED, sum(s[-1] for s in seconds.values())
            if args.max_seconds and elapsed + per_round > args.max_seconds:
                break  # the next round would end past the time given
    rounds = len(seconds[next(iter(MODELS))])
    found = summarize(seconds, tokens, memory)
    print(f"\nbenchmark: {updates} updates x {rounds} rounds, max_tokens {max_tokens}, {args.precision}, "
          f"{tokens} target tokens per round, device {device_name}, torch {torch.__version__}, commit {commit}")
    print("\n".join(verdict_lines(found)))


if __name__ == "__main__":
    main()
