"""What the proof ran on (``machine.json``) and the folder name of its results (``nvidia-h200``).

The commit: a copy of the repository sent to a lent GPU has no ``.git``, so ``git_commit()`` says
``unknown`` there; the device command passes it in ``NORMPOS_COMMIT`` instead (see the package docstring).
The driver version is ``nvidia-smi``'s (torch does not report it).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from normpos.provenance import git_commit


def slug(name: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200``: a folder name without spaces, ``:`` or ``=``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def commit() -> str:
    try:
        found = git_commit()
    except OSError:  # no git on the machine at all
        found = "unknown"
    if found != "unknown":
        return found
    given = os.environ.get("NORMPOS_COMMIT", "").strip()
    return f"{given} (from NORMPOS_COMMIT)" if given else "unknown"


def nvidia_smi(field: str):
    if not shutil.which("nvidia-smi"):
        return None
    proc = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout.strip() else None


def package_version(name: str):
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def describe() -> dict:
    """machine.json: GPU, driver, torch, CUDA and library versions, CPU, commit, date."""
    import torch

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1) if props else None,
        "compute_capability": f"{props.major}.{props.minor}" if props else None,
        "driver": nvidia_smi("driver_version"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "fairseq": package_version("ve-fairseq") or package_version("fairseq"),
        "hydra": package_version("hydra-core"),
        "sacrebleu": package_version("sacrebleu"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "interpreter": sys.executable,
        "commit": commit(),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }
