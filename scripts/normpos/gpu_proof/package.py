"""Part (d): the results folder of the proof, small enough to come back from a lent GPU.

The device tool returns at most 8 files of at most 16 MiB each, so the folder holds exactly these (those
that exist): ``README.md`` (what ran, the time of each part, the numbers), ``table.md``, ``curves.png`` and
``speedup.png`` (``normpos.report``), ``bench.json`` (a), ``packing.json`` (b), ``machine.json``, and
``runs.tar.gz``: the scratch folder without checkpoints (every run directory of the grid, the packing
trials' fairseq logs, the benchmark logs, the sweeps' output, the report's other files, and ``proof.json``,
the whole record of the proof). The folder is built under a temporary name and renamed into place; the
copy into ``$OUT`` is made file by file, each under a temporary name first.

Both folders are replaced by the next proof, so neither may be something else: the scratch folder carries
a marker file, and a results folder must hold a proof's ``machine.json``; otherwise the proof refuses to start.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import Optional

from normpos.files import atomic_output, write_json, write_text
from normpos.gpu_proof import ProofError

SCRATCH_MARKER = ".normpos-gpu-proof"
MAX_FILES = 8
MAX_BYTES = 16 * 2 ** 20
REPORT_FILES = ("table.md", "curves.png", "speedup.png")
BULKY = (".pt",)  # checkpoints: hundreds of MB each, and re-made by training


def prepare_folders(work: Path, results: Path) -> None:
    """Empty the scratch folder (an earlier proof's) and check that ``results`` may be replaced."""
    if work.exists():
        if any(work.iterdir()) and not (work / SCRATCH_MARKER).is_file():
            raise ProofError(f"{work} is not empty and not a proof's scratch folder: choose another --work")
        shutil.rmtree(work)
    if results.exists() and any(results.iterdir()) and not (results / "machine.json").is_file():
        raise ProofError(f"{results} is not empty and not a proof's results folder: choose another --results")
    work.mkdir(parents=True)
    (work / SCRATCH_MARKER).write_text("scratch folder of make gpu-proof; the next proof replaces it\n", encoding="utf-8")


def _keep(drop_hypotheses: bool):
    def keep(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        name = Path(info.name)
        if name.suffix in BULKY or "checkpoints" in name.parts:
            return None
        if drop_hypotheses and name.name.startswith("test.hyp."):
            return None
        return info
    return keep


def tarball(work: Path, path: Path) -> dict:
    """``runs.tar.gz`` of the scratch folder; without the test hypotheses if it would pass the size limit."""
    for drop in (False, True):
        with atomic_output(path) as tmp:
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(work, arcname=work.name, filter=_keep(drop))
        if path.stat().st_size <= MAX_BYTES:
            return {"bytes": path.stat().st_size, "hypotheses_dropped": drop}
    raise ProofError(f"{path.name} is {path.stat().st_size / 2 ** 20:.1f} MiB even without the hypotheses "
                     f"(limit {MAX_BYTES // 2 ** 20} MiB)")


def check_limits(folder: Path) -> list:
    files = sorted(p for p in folder.iterdir())
    if len(files) > MAX_FILES or any(not p.is_file() for p in files):
        raise ProofError(f"{folder} must hold at most {MAX_FILES} plain files, holds {[p.name for p in files]}")
    too_big = [p.name for p in files if p.stat().st_size > MAX_BYTES]
    if too_big:
        raise ProofError(f"{', '.join(too_big)} exceed {MAX_BYTES // 2 ** 20} MiB")
    return [{"name": p.name, "bytes": p.stat().st_size} for p in files]


def write_results(work: Path, results: Path, proof: dict, readme: str, out: Optional[Path]) -> list:
    """Build ``results`` (replacing an earlier proof's), copy it into ``out``; returns its file list."""
    write_json(work / "proof.json", proof, sort_keys=True)
    with atomic_output(results) as tmp:
        tmp.mkdir()
        proof["tarball"] = tarball(work, tmp / "runs.tar.gz")
        for name in REPORT_FILES:
            made = work / "report" / name
            if made.is_file():
                shutil.copyfile(made, tmp / name)
        for part in ("bench", "packing"):
            outcome = proof["parts"].get(part, {}).get("outcome", "not started")
            write_json(tmp / f"{part}.json", proof.get(part) or {"not_run": outcome})
        write_json(tmp / "machine.json", proof["machine"])
        write_text(tmp / "README.md", readme)
        files = check_limits(tmp)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for entry in files:
            with atomic_output(out / entry["name"]) as tmp_file:
                shutil.copyfile(results / entry["name"], tmp_file)
    return files


def out_folder() -> Optional[Path]:
    """``$OUT``, the folder the device tool brings back, when it is set."""
    value = os.environ.get("OUT", "").strip()
    return Path(value) if value else None

