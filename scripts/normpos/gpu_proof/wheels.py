"""Make fairseq, Hydra and the MT tools importable on a machine that lacks them, without internet.

The GPU machines lent to this project have torch, numpy, sacrebleu, sentencepiece, pandas and matplotlib,
but not fairseq, Hydra or the tokenizers. ``../shared/tools/gpu-wheelhouse .whl`` downloads their wheels
(Python 3.12, x86-64) on a machine with internet; carried along, they are installed here as that tool's
header says: ``pip install --no-index --no-deps --no-compile --target SITE .whl/*.whl``, and SITE is put on
``PYTHONPATH`` for this process and every child (after the repository's own folders, so our code wins).

When a module is not even found, the wheels are installed and then every module is imported in a child
Python, not just looked for: fairseq that is present but misses one of its own dependencies fails here, with
a clear line, rather than minutes later inside the benchmark. When all are found (a prepared machine), that
import check is skipped: it costs seconds of the budget, and the benchmark imports them first anyway.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

from normpos.gpu_proof import ProofError

# what the pipeline imports: fairseq and its config stack, the joblib launcher (packing), the Moses
# tokenizer and subword-nmt (data preparation, scoring), tabulate (tables)
REQUIRED = ("fairseq", "hydra", "omegaconf", "yaml", "joblib", "hydra_plugins.hydra_joblib_launcher",
            "sacremoses", "subword_nmt", "tabulate", "sacrebleu", "matplotlib")


def missing_modules(modules: Sequence[str]) -> List[str]:
    """The modules of ``modules`` that a fresh interpreter (with our environment) cannot import."""
    probe = ("import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n"
             "    except Exception as e:\n        bad.append(f'{m} ({type(e).__name__}: {e})')\nprint('\\n'.join(bad))")
    proc = subprocess.run([sys.executable, "-c", probe, *modules], capture_output=True, text=True, env=os.environ)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def not_found(modules: Sequence[str]) -> List[str]:
    """The modules of ``modules`` that this interpreter cannot even find (no import, so no side effects)."""
    missing = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except ImportError:  # the parent package of a dotted name is missing
            missing.append(module)
    return missing


def add_to_path(site: Path) -> None:
    """Put ``site`` on this process's import path and, for children, at the end of PYTHONPATH."""
    site = str(site)
    if site not in sys.path:
        sys.path.append(site)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if site not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([*parts, site])
    importlib.invalidate_caches()


def ensure_importable(wheel_dir: Path, site: Path, modules: Sequence[str] = REQUIRED) -> List[str]:
    """Install the wheels of ``wheel_dir`` into ``site`` when some of ``modules`` cannot be imported.

    Returns the wheels installed (empty when nothing was missing); raises ProofError when modules are still
    missing afterwards, naming them and the fix."""
    if site.is_dir() and any(site.iterdir()):
        add_to_path(site)  # installed by an earlier proof (or by the device command itself)
    missing = not_found(modules)
    if not missing:
        return []
    wheels = sorted(Path(wheel_dir).glob("*.whl"))
    if not wheels:
        raise ProofError(f"cannot find {', '.join(missing)}, and {wheel_dir}/ holds no wheels: build them with "
                         f"../shared/tools/gpu-wheelhouse {wheel_dir} and carry that folder")
    print(f"[wheels] cannot find {', '.join(missing)}: installing {len(wheels)} wheels "
          f"from {wheel_dir}/ into {site}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--target", str(site), *map(str, wheels)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["(no message)"]
        raise ProofError(f"pip could not install the wheels of {wheel_dir}/: {tail[0]}")
    add_to_path(site)
    still = missing_modules(modules)
    if still:
        raise ProofError(f"still cannot import {'; '.join(still)} after installing {wheel_dir}/: add the missing "
                         f"packages with ../shared/tools/gpu-wheelhouse {wheel_dir} PACKAGE ...")
    return [w.name for w in wheels]
