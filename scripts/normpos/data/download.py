"""Getting a source file: from a URL or a local path, checked against its known identity, safely unpacked.

A :class:`Resource` is one published file (an archive such as IWSLT's ``de-en.tgz`` or a plain file such
as Multi30k's ``train.de.gz``) with its official URL, what is known about its bytes, and, for an archive,
the members the recipe reads. :func:`fetch` finds it, in this order:

1. each ``--source`` that is a local path: the file itself, a folder holding it, or a folder holding
   the already unpacked members (at their archive paths or flat), which is then read in place;
2. the download cache ``<out-root>/<dataset>/orig/`` (what an earlier run downloaded or unpacked);
3. each ``--source`` URL (the file's own URL, or a mirror folder URL to which the file name is appended),
   else the official URL. A download is complete or absent under its name; an interrupted one resumes
   (``normpos.data.transfer``).

Known identities come from shared/data/PROVENANCE.md and sacrebleu's dataset table. A ``strong`` check
(size, sha256, member hashes confirmed by independent copies) refuses a mismatching file; a ``weak`` one
(a value seen in a single third-party source) only warns, because refusing the right file over an
unconfirmed number would be worse than a warning. Every source's hashes go into the manifest either way.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from normpos.data import transfer
from normpos.data.errors import DataError
from normpos.data.textfiles import hash_file
from normpos.files import atomic_output

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Identity:
    """What is known about a file's bytes; a field left None is unknown and not checked.

    ``weak`` names the fields whose only source is a single unconfirmed report: a mismatch there warns.
    """

    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    git_blob: str | None = None
    weak: frozenset = frozenset()
    note: str = ""

    def known(self) -> dict:
        return {k: getattr(self, k) for k in ("size", "sha256", "md5", "git_blob") if getattr(self, k) is not None}


UNKNOWN = Identity()


@dataclass(frozen=True)
class Resource:
    """One published file. ``members`` (archive-relative path -> Identity) is empty for a plain file."""

    filename: str
    url: str
    identity: Identity = UNKNOWN
    members: dict = field(default_factory=dict)

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith(ARCHIVE_SUFFIXES)

    @property
    def stem(self) -> str:
        for suffix in ARCHIVE_SUFFIXES:
            if self.filename.endswith(suffix):
                return self.filename[: -len(suffix)]
        return self.filename


@dataclass
class Fetched:
    """Where a resource's bytes are on disk, and the record of where they came from for the manifest."""

    paths: dict  # member (or the filename for a plain file) -> Path
    record: dict

    def path(self, member: str | None = None) -> Path:
        return self.paths[member] if member is not None else next(iter(self.paths.values()))


def check_identity(what: str, path: Path, identity: Identity, allow_unverified: bool) -> dict:
    """Hash ``path`` and compare it with ``identity``; return the hashes and per-field results.

    A strong mismatch raises DataError (or warns under ``allow_unverified``); a weak one warns.
    """
    hashes = hash_file(path)
    checks = {}
    for key, expected in identity.known().items():
        got = hashes[key]
        if got == expected:
            checks[key] = "ok"
            continue
        checks[key] = f"MISMATCH (expected {expected})"
        msg = f"{what}: {key} is {got}, expected {expected}"
        if key in identity.weak:
            warn(f"{msg} (single unconfirmed source{': ' + identity.note if identity.note else ''}); continuing")
        elif allow_unverified:
            warn(f"{msg}; continuing because of --allow-unverified")
        else:
            raise DataError(
                f"{msg}: refusing a file that is not the published one (a truncated or different copy?); "
                "fetch it again, or pass --allow-unverified to use it anyway"
            )
    return {**hashes, "checks": checks or "no published identity to check against"}


def is_url(source: str) -> bool:
    return source.split("://", 1)[0] in ("http", "https", "file", "ftp") and "://" in source


def download(url: str, dest: Path, what: str, timeout: float | None = None) -> None:
    """Download ``url`` to ``dest``: complete or not at all under ``dest`` (``normpos.data.transfer``).

    ``timeout``: seconds without data before giving up (default ``transfer.TIMEOUT_S``, 60).
    """
    try:
        transfer.download(url, dest, what, timeout)
    except transfer.TransferError as e:
        kept = ""
        if e.kept:  # say so, or the user deletes the cache and loses what was received
            kept = (f"; the {e.kept.stat().st_size:,} bytes received are kept in {e.kept} and a rerun from this "
                    "URL resumes")
        raise DataError(
            f"cannot download {url} ({e}){kept}; download it where the internet is reachable and pass "
            f"--source /path/to/{what} (the file, the folder holding it, or its unpacked folder)"
        ) from None


def _safe_members(tar: tarfile.TarFile, archive: Path):
    """Refuse path traversal and links before extracting anything (tarfile's 'data' filter does it again)."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts:
            raise DataError(f"{archive}: member {m.name!r} would be written outside the target folder; refusing")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: member {m.name!r} is a link or device, not a plain file; refusing")
    return members


def extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into the folder ``dest`` safely and atomically.

    A truncated or corrupt archive raises DataError and leaves nothing behind (the unpacking happens in a
    temporary folder that is removed on failure).
    """
    print(f"unpacking {archive} -> {dest}", file=sys.stderr)
    try:
        with atomic_output(dest) as tmp, tarfile.open(archive, "r:*") as tar:
            members = _safe_members(tar, archive)
            tmp.mkdir()
            tar.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive} is truncated or corrupt ({e}); delete it and fetch it again") from None


def _local_candidates(resource: Resource, source: Path, single: bool):
    """Yield ('file', path) or ('dir', {member: path}) for what a local source offers for ``resource``."""
    if source.is_file():
        if source.name == resource.filename or single:
            yield "file", source
        return
    if not source.is_dir():
        return
    if (source / resource.filename).is_file():
        yield "file", source / resource.filename
    if resource.members:
        for layout in (lambda m: source / m, lambda m: source / Path(m).name):  # archive paths, then flat
            paths = {m: layout(m) for m in resource.members}
            if all(p.is_file() for p in paths.values()):
                yield "dir", paths
                return


def _missing_members(resource: Resource, source: Path) -> str:
    if not source.is_dir() or not resource.members:
        return ""
    missing = [m for m in resource.members if not (source / m).is_file() and not (source / Path(m).name).is_file()]
    return f" (it lacks {', '.join(Path(m).name for m in missing)})" if missing else ""


def fetch(resource: Resource, sources: list[str], cache: Path, allow_unverified: bool = False,
          single: bool = False, timeout: float | None = None) -> Fetched:
    """Find or download ``resource`` and return where its (verified) files are; see the module docstring.

    ``single``: the dataset has only this resource, so a ``--source`` file path is taken whatever its name.
    ``timeout``: seconds a download may go without data (default ``transfer.TIMEOUT_S``).
    """
    local = [Path(s).expanduser() for s in sources if not is_url(s)]
    urls = [s for s in sources if is_url(s)]
    for src in local:
        for kind, found in _local_candidates(resource, src, single):
            if kind == "dir":
                return _verify_members(resource, found, {"from": "unpacked folder", "path": str(src)},
                                       allow_unverified)
            return _use_file(resource, found, cache, {"from": "local file", "path": str(found)}, allow_unverified)

    cached = cache / resource.filename
    if cached.is_file():
        return _use_file(resource, cached, cache, {"from": "download cache", "path": str(cached)}, allow_unverified)
    if resource.is_archive and (cache / resource.stem).is_dir():
        # An earlier run unpacked a since-deleted archive (deleting it saves space); read the members.
        paths = {m: cache / resource.stem / m for m in resource.members}
        if all(p.is_file() for p in paths.values()):
            return _verify_members(resource, paths, {"from": "download cache (unpacked)", "path": str(cache)},
                                   allow_unverified)

    if local and not urls:
        looked = ", ".join(f"{s}{_missing_members(resource, s)}" for s in local)
        hint = f"not found in --source {looked}"
    else:
        hint = ""
    candidates = [u if u.endswith(resource.filename) or single else u.rstrip("/") + "/" + resource.filename
                  for u in urls] or [resource.url]
    errors = []
    for url in candidates:
        try:
            download(url, cached, resource.filename, timeout)
        except DataError as e:
            errors.append(str(e))
            continue
        try:
            return _use_file(resource, cached, cache, {"from": "download", "url": url, "path": str(cached)},
                             allow_unverified)
        except DataError:
            cached.unlink(missing_ok=True)  # a download that fails its check must not be found next time
            raise
    raise DataError(f"{resource.filename}: {hint + '; ' if hint else ''}{errors[-1]}")


def _use_file(resource: Resource, path: Path, cache: Path, record: dict, allow_unverified: bool) -> Fetched:
    record = {"name": resource.filename, "official_url": resource.url, **record,
              **check_identity(f"{resource.filename} ({path})", path, resource.identity, allow_unverified)}
    if not resource.is_archive:
        return Fetched({resource.filename: path}, record)
    dest = cache / resource.stem
    stamp = dest / ".archive-sha256"
    # Re-unpack when the folder came from different archive bytes (a stale cache must not be read).
    if not (stamp.is_file() and stamp.read_text().strip() == record["sha256"]):
        extract(path, dest)
        stamp.write_text(record["sha256"] + "\n")
    paths = {m: dest / m for m in resource.members}
    missing = [m for m, p in paths.items() if not p.is_file()]
    if missing:
        raise DataError(f"{path} does not contain {', '.join(missing)}: not the expected {resource.filename}")
    try:
        fetched = _verify_members(resource, paths, {}, allow_unverified)
    except DataError:
        shutil.rmtree(dest)  # members that fail their check must not be found by the next run
        raise
    record["members"] = fetched.record["members"]
    return Fetched(paths, record)


def _verify_members(resource: Resource, paths: dict, record: dict, allow_unverified: bool) -> Fetched:
    members = {m: check_identity(f"{resource.filename}:{m} ({p})", p, resource.members[m] or UNKNOWN,
                                 allow_unverified)
               for m, p in paths.items()}
    if record:
        record = {"name": resource.filename, "official_url": resource.url, **record}
    return Fetched(paths, {**record, "members": members})


def copy_file(src: Path, dest: Path) -> None:
    """Copy atomically (used for the small reference files that a prepared folder keeps)."""
    with atomic_output(dest) as tmp:
        shutil.copyfile(src, tmp)
