"""Pinned CPU numerics: the same floats from the same command on any x86-64 host with AVX2.

Why: on CPU, torch, MKL and oneDNN each pick their kernels by what the host's processor offers (AVX2, AVX-512,
...) and split reductions by the number of threads. Kernels for different instruction sets add in different
orders, so the last bits differ, and Post-LN at its peak learning rate amplifies them: the demo's Post-LN
warm-up run gave valid loss 8.288 at update 100 on an AVX-512 host and 8.300 there with torch capped at AVX2
(paper-notes, 2026-12-07). Pinning every library to the AVX2 code path and a fixed thread count removes the
host from the result:

- ``ATEN_CPU_CAPABILITY=avx2``: torch's own vectorized kernels (it would pick AVX-512 where the host has it);
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility, its AVX2 code path on every host (matrix
  products go through MKL in torch's CPU build);
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's kernels (convolutions, some fused ops);
- ``OMP_NUM_THREADS=2``, ``MKL_NUM_THREADS=2``: reductions split the same way on every host (2 = the
  reference machine's cores; a host with more cores runs these jobs on 2 threads, one with fewer oversubscribes).
  A driver that runs several small jobs side by side may fix another count with ``NORMPOS_NUMERICS_THREADS``
  (the frontier map uses 1): still the same on every host, and recorded, but other bits than 2 threads give.

The pin is a process environment, so it must be in place before torch is loaded: :func:`pin_process` is called
first thing by the entry points that run torch (``normpos.fairseq_run``, ``normpos.theory``), and
:func:`environment` gives the environment for a child process. ``NORMPOS_NUMERICS=native`` (or
``train.numerics: native`` in a config) turns it off and lets every library choose for the host. The pin sets
these values even when the caller's environment has others: a cap set from outside is then a no-op, which
``tests/test_golden_curves.py`` checks. GPU kernels are not pinned by any of this.

This module imports nothing heavy (no torch), so that it can run before torch loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional

MODES = ("pinned", "native")
ENV_MODE = "NORMPOS_NUMERICS"
ENV_THREADS = "NORMPOS_NUMERICS_THREADS"
THREADS = 2
PINNED_ISA: Dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Not numerics but speed: OpenMP threads that spin while waiting make every step of a job 5-10 times slower when
# another job shares the cores (measured for normpos.theory: 1.5 s vs 7-19 s a step). Passive waiting costs
# little on an idle machine. A default only: the caller's value wins.
THREAD_DEFAULTS: Dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
# the instruction-set flags torch itself requires for each capability (aten/src/ATen/native/DispatchStub.cpp)
_ISA_FLAGS = (("avx512", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma")), ("avx2", ("avx2", "fma")))


class NumericsError(ValueError):
    """An unknown numerics mode."""


def mode(env: Optional[Mapping[str, str]] = None) -> str:
    """The mode asked for in ``env`` (default: this process's environment): pinned unless told otherwise."""
    value = (os.environ if env is None else env).get(ENV_MODE, "pinned") or "pinned"
    if value not in MODES:
        raise NumericsError(f"{ENV_MODE}={value!r} is not a numerics mode; valid: {', '.join(MODES)}")
    return value


def pinned(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Every pinned setting: the AVX2 code paths and the thread count (``NORMPOS_NUMERICS_THREADS`` in ``env``,
    default 2)."""
    threads = (os.environ if env is None else env).get(ENV_THREADS) or str(THREADS)
    if not threads.isdigit() or int(threads) < 1:
        raise NumericsError(f"{ENV_THREADS}={threads!r} must be a whole number >= 1")
    return {**PINNED_ISA, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def with_threads(base: Mapping[str, str], threads: Optional[int]) -> Dict[str, str]:
    """``base`` with ``NORMPOS_NUMERICS_THREADS`` set to ``threads`` (a config's ``train.threads``), or as it is
    when ``threads`` is None."""
    return {**base, ENV_THREADS: str(threads)} if threads is not None else dict(base)


def environment(base: Mapping[str, str], numerics: str) -> Dict[str, str]:
    """``base`` plus what a child process needs to run with ``numerics`` (pinned: :func:`pinned` over
    whatever ``base`` says; native: ``base`` as it is). The child's own pin_process sees the mode too."""
    if numerics not in MODES:
        raise NumericsError(f"unknown numerics mode {numerics!r}; valid: {', '.join(MODES)}")
    env = {**THREAD_DEFAULTS, **base, ENV_MODE: numerics}
    if numerics == "pinned":
        env.update(pinned(base))
    return env


def pin_process() -> str:
    """Pin this process (unless ``NORMPOS_NUMERICS=native``); call before torch is imported. Returns the mode.
    Raises RuntimeError when torch is already loaded, since the pin could then not take effect."""
    current = mode()
    if current == "pinned":
        import sys

        if "torch" in sys.modules:
            raise RuntimeError("normpos.numerics.pin_process() must run before torch is imported")
        os.environ.update(pinned())
    for key, value in THREAD_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return current


def host_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The best capability torch would pick on this host: avx512, avx2 or default (unknown off Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    for name, needed in _ISA_FLAGS:
        if flags.issuperset(needed):
            return name
    return "default"


def describe(numerics: str, env: Optional[Mapping[str, str]] = None) -> dict:
    """What run.json and the theory report record: the mode, every pinned setting (of ``env``, default this
    process's environment), the host's instruction set, and the capability torch's kernels then use."""
    host = host_isa()
    if numerics == "pinned":
        used = "avx2" if host in ("avx512", "avx2") else host  # torch falls back when the host lacks AVX2
        record = {"mode": "pinned", "settings": pinned(env), "host_isa": host, "cpu_capability": used}
        if host not in ("avx512", "avx2"):
            record["warning"] = f"host ISA {host}: the AVX2 pin cannot hold, results differ from pinned hosts"
        return record
    outside = {k: os.environ[k] for k in pinned() if k in os.environ}
    return {"mode": "native", "settings": outside, "host_isa": host,
            "cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", host)}


def summary(record: dict) -> str:
    """One line for a report's machine line, e.g. 'CPU numerics pinned (host avx512, kernels avx2; ...)'."""
    settings = ", ".join(f"{k}={v}" for k, v in record.get("settings", {}).items()) or "library defaults"
    return (f"CPU numerics {record['mode']} (host {record['host_isa']}, kernels {record['cpu_capability']}; "
            f"{settings})")
