"""Benchmark: does the plugin cost speed? (``make bench``; a benchmark, not a test.)

Trains our Post-LN and Pre-LN IWSLT models and fairseq's built-in ``transformer_iwslt_de_en`` (plain, and
with ``--encoder/decoder-normalize-before``) through fairseq's own ``Trainer`` on the same batches, in one
process, and prints tokens/s of each and the ratio ours / built-in. Rounds are interleaved (A B C D, A B C D,
...) so that machine noise hits every model alike; the median round counts. All models use the current
fairseq FFN init (``--ffn-init torch_default``) so that they are the same computation: the init does not
change the speed.

    python -m normpos.bench_models [--data BIN_DIR] [--device cpu|cuda] [--max-tokens N] [--updates N]
"""

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from normpos.fairseq_build import build_task_and_model
from normpos.provenance import git_commit

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="binarized de-en fairseq data (default: a Multi30k slice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 4096 on GPU, 1024 on CPU")
    parser.add_argument("--updates", type=int, default=None, help="updates per round (default 50 GPU, 4 CPU)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    max_tokens = args.max_tokens or (4096 if gpu else 1024)
    updates = args.updates or (50 if gpu else 4)
    common = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
              "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "4000",
              "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
              "--max-tokens", str(max_tokens), "--dropout", "0.1", "--seed", "1", "--num-workers", "0"]
    if not gpu:
        common.append("--cpu")
    if args.fp16:
        common.append("--fp16")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or binarize_multi30k_slice(Path(tmp))
        trainers, batches = {}, None
        for name, arch_args in MODELS.items():
            trainer, task, cfg = make_trainer(data, arch_args, common)
            if batches is None:
                batches = fixed_batches(task, cfg, updates)
            time_round(trainer, batches[:2], args.device)  # warm-up: allocator, kernels
            trainers[name] = trainer
        tokens = sum(int(b["ntokens"]) for b in batches)
        seconds = {name: [] for name in MODELS}
        for r in range(args.rounds):
            for name, trainer in trainers.items():
                seconds[name].append(time_round(trainer, batches, args.device))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    device_name = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    commit = git_commit(short=True)
    print(f"\nbenchmark: {updates} updates x {args.rounds} rounds, max_tokens {max_tokens}, "
          f"{tokens} target tokens per round, device {device_name}, torch {torch.__version__}, commit {commit}")
    rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    for name, r in rate.items():
        print(f"  {name:62s} {r:10.0f} tokens/s")
    for ours, ref in PAIRS:
        print(f"  ratio {ours} / built-in: {rate[ours] / rate[ref]:.3f}")


if __name__ == "__main__":
    main()
