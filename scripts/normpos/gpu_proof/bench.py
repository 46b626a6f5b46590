"""Part (a): ours against fairseq's built-in Transformer in each precision, and the precision for (b) and (c).

Runs ``python -m normpos.bench_models --precision P --json ...`` once per precision, each in its own process
(a precision that fails, e.g. bf16 where fairseq cannot run it, costs only its own entry) with an equal
share of the part's time. The precision then used for training is the fastest for our two models (mean
tokens/s); bf16 is preferred to fp16 when it is within ``BF16_MARGIN`` of it, since it needs no loss scaling
and cannot end a run with fp16's "minimum loss scale reached".
"""

from __future__ import annotations

import json
import shlex
import statistics
import time
from pathlib import Path
from typing import List, Optional

from normpos.gpu_proof.children import python_module, run_until

OURS = ("normpos_iwslt_de_en_post_ln", "normpos_iwslt_de_en_pre_ln")
BF16_MARGIN = 0.03
# per round on a GPU: 10 updates of 4096 tokens per model, about a second each at the IWSLT size, so that
# a 25-second slot holds the four models' build and warm-up and still two or three rounds
UPDATES, ROUNDS = 10, 5


def is_result_line(line: str) -> bool:
    """The benchmark's own lines (rounds, the table, errors), not fairseq's and Hydra's logging."""
    if line.startswith("  "):
        return "tokens/s" in line or "ratio" in line
    return line.startswith(("round ", "benchmark:", "normpos: error", "Traceback")) or "Error" in line.split(":")[0]


def ours_tokens_per_s(result: dict) -> float:
    return statistics.fmean(result["models"][name]["tokens_per_s"] for name in OURS)


def choose_precision(results: dict) -> tuple:
    """(precision, why) from the precisions that ran; fp32 when none did."""
    ran = {p: ours_tokens_per_s(r) for p, r in results.items() if "models" in r}
    if not ran:
        return "fp32", "no precision could be benchmarked: fp32, fairseq's default"
    best = max(ran, key=ran.get)
    why = f"{best} is the fastest for our models ({ran[best]:.0f} tokens/s)"
    if best == "fp16" and "bf16" in ran and ran["bf16"] >= ran["fp16"] * (1 - BF16_MARGIN):
        best, why = "bf16", (f"bf16 ({ran['bf16']:.0f} tokens/s) is within {BF16_MARGIN:.0%} of fp16 "
                             f"({ran['fp16']:.0f}) and needs no loss scaling")
    return best, why


def run(precisions: List[str], data: Path, max_tokens: int, model_args: str, device: str, folder: Path,
        deadline: float, updates: Optional[int] = None) -> dict:
    """bench.json: one entry per precision (its numbers, or why it has none) and the precision chosen."""
    results = {}
    for index, precision in enumerate(precisions):
        slot = (deadline - time.monotonic()) / (len(precisions) - index)
        out = folder / f"bench-{precision}.json"
        argv = python_module("normpos.bench_models", "--data", str(data), "--device", device,
                             "--precision", precision, "--max-tokens", str(max_tokens),
                             "--updates", str(updates or UPDATES), "--rounds", str(ROUNDS),
                             # the process must end in its slot: building four models and their warm-up
                             # come first, so the rounds get what is left of 85% of it
                             "--max-seconds", f"{slot * 0.85:.1f}", "--model-args", model_args, "--json", str(out))
        print(f"[bench] {precision}: up to {slot:.0f} s: {shlex.join(argv[1:])}", flush=True)
        child = run_until(argv, folder / f"bench-{precision}.log", f"[bench {precision}] ", deadline=time.monotonic() + slot,
                          echo=is_result_line)
        if out.is_file():  # written after every round: a process stopped at its deadline leaves those
            results[precision] = json.loads(out.read_text(encoding="utf-8"))
            if child.returncode != 0:
                results[precision]["stopped"] = f"stopped after {results[precision]['rounds']} round(s): {child.tail(1)}"
        else:
            reason = "out of time" if child.returncode is None or child.returncode < 0 else f"exit code {child.returncode}"
            results[precision] = {"error": f"{reason}: {child.tail(2)}", "log": f"bench-{precision}.log"}
            print(f"[bench] {precision} failed: {results[precision]['error']}", flush=True)
    best, why = choose_precision(results)
    print(f"[bench] training precision: {best} ({why})", flush=True)
    return {"precisions": results, "training_precision": best, "why": why, "bf16_margin": BF16_MARGIN}
