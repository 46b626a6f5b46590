"""``manifest.json``: what a prepared folder holds, and the rule for reusing or refusing an existing folder.

A prepared folder ``<out-root>/<dataset>/<variant>/`` is named after the options that change its content
(subword kind and size, the WMT14 test version), and its manifest records:
``options`` (those plus the recipe version), ``sources`` (every input file's URL or path and its size,
sha256, md5, git blob and the result of the identity checks), ``tools`` (library versions), ``counts``
(lines, words before subword splitting, subword tokens, per split and language), ``files`` (sha256 of
every text and model file), and the fairseq-preprocess command.

Rule (issue 3, item 5): the same options again -> nothing is done; the folder exists with other options
(or, with an explicit ``--source``, other source bytes) -> refused with a one-line error, unless ``--force``
rebuilds it. The folder is renamed into place only when complete, so a manifest is never half-written
and old and new outputs are never mixed.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from normpos.data.errors import DataError
from normpos.data.textfiles import hash_file, read_lines
from normpos.files import write_json

MANIFEST = "manifest.json"
TOOL_PACKAGES = ("sacremoses", "subword-nmt", "sentencepiece", "ve-fairseq", "torch", "sacrebleu")


def tool_versions() -> dict:
    versions = {"python": platform.python_version()}
    for pkg in TOOL_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def read(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write(folder: Path, data: dict) -> None:
    write_json(Path(folder) / MANIFEST, data)


def source_fingerprint(records: list[dict]) -> dict:
    """name -> sha256 of the file, or member -> sha256 when the source was an unpacked folder."""
    out = {}
    for r in records:
        if "sha256" in r:
            out[r["name"]] = r["sha256"]
        else:
            out[r["name"]] = {m: v["sha256"] for m, v in r.get("members", {}).items()}
    return out


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def reuse(folder: Path, options: dict, force: bool) -> bool:
    """True when ``folder`` already holds data prepared with ``options`` (nothing to do).

    Raises DataError when it holds something else and ``force`` is not set.
    """
    folder = Path(folder)
    if not folder.exists():
        return False
    old = read(folder)
    if force:
        return False
    if old is None:
        raise DataError(f"{folder} exists but has no {MANIFEST} (not made by this tool, or damaged); "
                        "remove it or pass --force to rebuild it")
    if old.get("options") != options:
        raise DataError(f"{folder} was prepared with other options ({_diff(old.get('options', {}), options)}); "
                        "remove it, choose another --out-root, or pass --force to rebuild it")
    tools = tool_versions()
    if old.get("tools") != tools:
        print(f"warning: {folder} was made with other tool versions ({_diff(old.get('tools', {}), tools)}); "
              "reusing it (pass --force to rebuild)", file=sys.stderr)
    return True


def check_sources(folder: Path, fingerprint: dict) -> None:
    """Refuse reuse when explicitly given sources differ from the ones the folder was made from."""
    old = read(folder) or {}
    recorded = source_fingerprint(old.get("sources", []))
    for name, new in fingerprint.items():
        if name in recorded and recorded[name] != new and not _same_bytes(recorded[name], new):
            raise DataError(f"{folder} was prepared from a different {name} than the --source given; "
                            "remove it or pass --force to rebuild it from this source")


def _same_bytes(a, b) -> bool:
    # An archive recorded by its own hash and the same data given unpacked (or the reverse) cannot be
    # compared file by file; only mismatching values of the same form count as different.
    return type(a) is not type(b)


def file_counts(path: Path) -> dict:
    """Lines and space-separated tokens of a text file."""
    lines = tokens = 0
    for line in read_lines(path):
        lines += 1
        tokens += len(line.split())
    return {"lines": lines, "tokens": tokens}


def file_hashes(folder: Path, names: list[str]) -> dict:
    return {name: hash_file(Path(folder) / name)["sha256"] for name in names}
