"""Benchmark: what N-gram masked decoder self-attention saves at decoding time (``make bench-decode``).

Chelba, Chen, Bapna and Shazeer 2020, "Faster Transformer Decoding: N-gram Masked Self-Attention"
(arXiv:2001.04589): with the decoder's self-attention restricted to the last N target positions, each
beam-search step keeps N-1 keys and values per layer instead of all of them. This measures what that is
worth here: one trained model (a finished run of the sweep runner), decoded by ``fairseq-generate`` on its
test split with N in {2, 4, 8} and full attention, the same checkpoint, data, batches (``--max-tokens``, as
scoring forms them) and beam settings (the run's own, as scoring uses them). The window reaches the loaded
model through fairseq's ``--model-overrides "{'decoder_ngram_window': N}"`` (None for full). The speed numbers are
fairseq-generate's own ("Translated S sentences (T tokens) in Xs (... sentences/s, ... tokens/s)": time in
``task.inference_step`` only, tokens of the best hypotheses), so model loading does not count. Rounds are
interleaved (2 4 8 full, 2 4 8 full, ...) so that machine noise hits every window alike; the median round
counts, and each window's ratio is against full attention.

A model trained with full attention and decoded with a window computes something else than it was trained
for: the BLEU that fairseq-generate prints for each window (``--remove-bpe``, tokenized) says how much, and
is not the BLEU of a model trained with that window (``configs/experiment/ngram_demo.yaml`` trains those).
``--fixed-length L`` forces every hypothesis to L tokens (``--min-len L --max-len-a 0 --max-len-b L``), so
that every window does the same number of steps and the per-step cost against length shows alone.

    python -m normpos.bench_decode --runs results/runs/multi30k/ngram_demo [--windows 2 4 8 full]
    python -m normpos.bench_decode --run results/runs/multi30k/demo/<configuration>/seed-1 --rounds 5
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from normpos import numerics
from normpos.files import write_json, write_text
from normpos.provenance import git_commit
from normpos.scoring import score_run
from normpos.scoring.errors import ScoringError

FULL = "full"
TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
                        r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")
BLEU_LINE = re.compile(r"Generate \S+ with beam=\d+: (BLEU4 = [\d.]+)")


class BenchError(Exception):
    """Something that stops the benchmark, reported as one line."""


def parse_window(text: str):
    if text == FULL:
        return FULL
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a window is an integer >= 1 or '{FULL}', got {text!r}")
    return value


def read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist") from None


def full_attention_run(runs: Path) -> Path:
    """The one finished run under an experiment's run folder whose decoder attends to every position."""
    if not runs.is_dir():
        raise BenchError(f"run folder {runs} does not exist (train it first, e.g. make sweep EXPERIMENT=ngram_demo)")
    found = []
    for config in sorted(runs.glob("*/seed-*/config.yaml")):
        window = (read_yaml(config).get("model") or {}).get("ngram_window")
        status = config.parent / "status.json"
        finished = status.is_file() and json.loads(status.read_text()).get("status") == "finished"
        if window is None and finished:
            found.append(config.parent)
    if len(found) != 1:
        raise BenchError(f"{runs} holds {len(found)} finished full-attention runs ({', '.join(map(str, found)) or 'none'}); "
                         f"name one with --run")
    return found[0]


def decoding_settings(run: Path, fixed_length: Optional[int]) -> dict:
    """Checkpoint, data and fairseq-generate options of a run: scoring's own (score_run.generate_options of
    the run's run.json), with the length forced when asked."""
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else None
    if info is None:
        raise BenchError(f"{run} is not a run folder of the sweep runner (no run.json)")
    checkpoint = run / "checkpoints" / "checkpoint_best.pt"
    if not checkpoint.is_file():
        raise BenchError(f"{checkpoint} does not exist")
    try:
        config = score_run.settings(info, run)
    except ScoringError as err:
        raise BenchError(str(err)) from None
    if fixed_length:
        config["max_len_b"] = fixed_length
    options = ["-s", info["source_lang"], "-t", info["target_lang"], *score_run.generate_options(config)]
    if fixed_length:
        options += ["--min-len", str(fixed_length), "--max-len-a", "0"]
    env = score_run.decoding_env(info)  # decode as scoring did: the run's own numerics and threads
    return {"checkpoint": checkpoint, "data_bin": info["data_bin"], "options": options, "env": env,
            "numerics": numerics.describe(score_run.recorded_numerics(info)[0], env)}


def generate_argv(settings: dict, window, device: str) -> List[str]:
    argv = [sys.executable, "-m", "normpos.fairseq_run", "generate", settings["data_bin"],
            "--path", str(settings["checkpoint"]), *settings["options"], "--quiet"]
    # always set, so that "full" is full attention even for a model trained with a window
    argv += ["--model-overrides", repr({"decoder_ngram_window": None if window == FULL else window})]
    if device == "cpu":
        argv.append("--cpu")
    return argv


def decode_once(settings: dict, window, device: str) -> dict:
    """One fairseq-generate run: its own speed line and BLEU line."""
    proc = subprocess.run(generate_argv(settings, window, device), capture_output=True, text=True, env=settings["env"])
    text = proc.stdout + proc.stderr
    said = TRANSLATED.search(text)
    if proc.returncode != 0 or said is None:
        tail = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
        raise BenchError(f"fairseq-generate (window {window}) failed: {tail[0]}")
    sentences, tokens, seconds, per_s, tok_per_s = said.groups()
    bleu = BLEU_LINE.search(text)
    return {"sentences": int(sentences.replace(",", "")), "tokens": int(tokens.replace(",", "")),
            "seconds": float(seconds), "sentences_per_s": float(per_s), "tokens_per_s": float(tok_per_s),
            "bleu": bleu.group(1) if bleu else None}


def summarize(rounds: dict) -> dict:
    """Median sentences/s and tokens/s per window and their ratio to full attention."""
    out = {}
    for window, runs in rounds.items():
        out[str(window)] = {
            "sentences_per_s": statistics.median(r["sentences_per_s"] for r in runs),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
            "tokens": runs[0]["tokens"], "bleu": runs[0]["bleu"],
        }
    base = out.get(FULL)
    for row in out.values():
        row["sentences_ratio"] = row["sentences_per_s"] / base["sentences_per_s"] if base else None
        row["tokens_ratio"] = row["tokens_per_s"] / base["tokens_per_s"] if base else None
    return out


def markdown(result: dict) -> str:
    lines = ["| window N | sentences/s | ratio to full | tokens/s | ratio to full | tokens decoded | "
             "BLEU printed by fairseq-generate |", "|---|---:|---:|---:|---:|---:|---|"]
    for window, row in result["median"].items():
        ratio = lambda x: "" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(f"| {window} | {row['sentences_per_s']:.2f} | {ratio(row['sentences_ratio'])} | "
                     f"{row['tokens_per_s']:.1f} | {ratio(row['tokens_ratio'])} | {row['tokens']} | {row['bleu'] or ''} |")
    return "\n".join(lines) + "\n"


def machine(device: str, cpu_numerics: dict) -> str:
    """The machine as the decoding children see it: on CPU their numerics (each fairseq_run pins its own,
    unless NORMPOS_NUMERICS=native), not this process's thread settings, which the children override."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    threads = cpu_numerics["settings"].get("OMP_NUM_THREADS", "unset")
    return (f"{platform.machine()} CPU ({os.cpu_count()} cores; decoding with {cpu_numerics['mode']} numerics, "
            f"{cpu_numerics['cpu_capability']} kernels, OMP_NUM_THREADS={threads}), torch {torch.__version__}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normpos.bench_decode", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a finished run folder (its checkpoint_best.pt is decoded)")
    which.add_argument("--runs", type=Path, help="an experiment's run folder: take its one full-attention run")
    parser.add_argument("--windows", nargs="+", type=parse_window, default=[2, 4, 8, FULL], metavar="N",
                        help=f"windows to decode with (integers >= 1 and '{FULL}'; default 2 4 8 {FULL})")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts (default 3)")
    parser.add_argument("--fixed-length", type=int, default=None, metavar="L",
                        help="force every hypothesis to L tokens (same steps for every window)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, help="write the result as JSON here, and the table beside it (.md)")
    args = parser.parse_args(argv)
    try:
        if args.rounds < 1:
            raise BenchError(f"--rounds must be >= 1, got {args.rounds}")
        if args.fixed_length is not None and args.fixed_length < 1:
            raise BenchError(f"--fixed-length must be >= 1, got {args.fixed_length}")
        run = args.run if args.run else full_attention_run(args.runs)
        settings = decoding_settings(run, args.fixed_length)
        windows = list(dict.fromkeys(args.windows))  # in order, once each
        rounds = {w: [] for w in windows}
        for r in range(args.rounds):
            for window in windows:
                rounds[window].append(decode_once(settings, window, args.device))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    except BenchError as err:
        print(f"normpos: error: {err}", file=sys.stderr)
        return 2
    cpu_numerics = settings["numerics"]  # what the fairseq_run children pin: the run's own
    result = {
        "command": "python -m normpos.bench_decode " + " ".join(sys.argv[1:] if argv is None else argv),
        "run": str(run), "checkpoint": str(settings["checkpoint"]),
        "generate_options": settings["options"], "rounds": args.rounds, "fixed_length": args.fixed_length,
        "commit": git_commit(short=True), "machine": machine(args.device, cpu_numerics),
        "numerics": cpu_numerics,
        "median": summarize(rounds), "per_round": {str(w): r for w, r in rounds.items()},
    }
    table = markdown(result)
    print(f"\ndecoding benchmark: {run}, {args.rounds} rounds, {result['machine']}, commit {result['commit']}")
    print(table)
    if args.out:
        write_json(args.out, result)
        write_text(args.out.with_suffix(".md"), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
