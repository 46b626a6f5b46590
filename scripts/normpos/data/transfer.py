"""Moving a URL's bytes into a local file with every byte accounted for: lengths checked, stalls timed out,
dropped connections resumed (issue 11, item 7).

urllib alone is not enough for a large archive on a flaky link: ``HTTPResponse.read(n)`` returns ``b""``
when the server closes the connection early, so a body shorter than its Content-Length looked complete;
and every dropped connection started over from byte 0. Here, for ``dest``:

- the bytes go to ``<dest>.part``, which becomes ``dest`` (one rename) only when their count equals the
  length the server announced (Content-Length of a 200, the total of a 206's Content-Range). Nothing reads
  a ``.part`` as a finished file: the download cache looks for ``dest`` only;
- a connection that delivered bytes and then dropped or stalled is resumed with ``Range: bytes=N-``
  (RFC 9110 sec. 14.2), up to ATTEMPTS connections. ``If-Range`` carries the first response's strong ETag
  (else its Last-Modified), so a file that changed on the server is sent whole (200) instead of being
  spliced onto the old bytes; a server that ignores Range (200) is likewise read again from byte 0, and a
  206 that does not start at byte N is refused and its ``.part`` discarded;
- when every attempt fails, a ``.part`` that holds bytes is kept, with ``<dest>.part.json`` recording its
  URL, validator and total, and the next run from that URL resumes it: a rerun after a dropped connection
  on a large WMT14 training archive should not fetch again what it already has. A ``.part`` without that
  record, or from another URL, is replaced once the URL being fetched answers; an empty one is removed;
- every socket operation gives up after TIMEOUT_S seconds without data (inactivity, not total time: a
  large file on a slow link may take hours, a server that sends nothing should not hold a run forever);
- the ``.part`` is locked (``flock``) while a process writes it, so two runs on one cache cannot interleave
  their bytes; the second is refused.

Failures raise :class:`TransferError`, whose message is one line; ``normpos.data.download`` adds what to do.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from normpos.files import write_json

USER_AGENT = "normpos-data/1 (+https://github.com/facebookresearch/fairseq recipe reproduction)"
TIMEOUT_S = 60  # seconds without a byte before a connection is given up
ATTEMPTS = 3  # connections per download; a next one is made only after one that delivered bytes
BLOCK = 1 << 16
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransferError(Exception):
    """A download that did not complete; ``kept`` is the resumable ``.part`` left for the next run, if any."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.kept: Path | None = None


class _Restart(Exception):
    """The ``.part`` cannot be continued (the server's file changed, or it is already too long): start over."""


class _Partial:
    """``<dest>.part`` and its record ``<dest>.part.json``; the file handle holds the lock."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.path = dest.with_name(dest.name + ".part")
        self.record_path = dest.with_name(dest.name + ".part.json")
        self.file = None
        self.record: dict | None = None
        self.received = 0  # bytes written by the current connection

    def _open(self) -> None:
        if self.file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b")  # noqa: SIM115 (held open for the lock until close())
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise TransferError(f"{self.path} is being written by another download (another run on the same "
                                "cache folder?); wait for it to finish") from None
        self.file = f

    def size(self) -> int:
        if self.file is None:
            return 0
        self.file.flush()  # the count must include what is still in the write buffer
        return self.path.stat().st_size

    def resume_offset(self, url: str) -> int:
        """Bytes already here for ``url``; 0 when the ``.part`` is of another URL or has no record.

        Such a ``.part`` is replaced only once ``url`` answers, so an unreachable URL loses nothing.
        """
        if not self.path.is_file():
            return 0
        self._open()
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or record.get("url") != url:
            return 0
        self.record = record
        return self.size()

    def restart(self, url: str, validator: str | None, total: int | None) -> None:
        """Empty the ``.part`` and record what it is now the start of."""
        self._open()
        self.file.truncate(0)
        self.record = {"url": url, "validator": validator, "total": total}
        write_json(self.record_path, self.record)

    def write(self, block: bytes) -> None:
        self.file.write(block)  # append mode: always at the end
        self.received += len(block)

    def finish(self) -> None:
        self.file.flush()  # before the rename: the finished file must hold every byte
        os.replace(self.path, self.dest)
        self.record_path.unlink(missing_ok=True)
        self.close()

    def close(self) -> Path | None:
        """Release the lock; remove an empty ``.part``; return the ``.part`` when it is kept."""
        if self.file is None:
            return None
        kept = self.path if self.path.is_file() and self.size() > 0 else None
        if kept is None:
            self.path.unlink(missing_ok=True)
            self.record_path.unlink(missing_ok=True)
        self.file.close()  # releases the flock
        self.file = None
        return kept


def download(url: str, dest: Path, desc: str, timeout: float | None = None) -> None:
    """Download ``url`` to ``dest``; see the module docstring. Raises TransferError."""
    timeout = TIMEOUT_S if timeout is None else timeout
    part = _Partial(Path(dest))
    try:
        for attempt in range(1, ATTEMPTS + 1):
            part.received = 0
            try:
                _connection(url, part, timeout, desc)
            except _Restart:
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                reason = _reason(e, timeout)
                if part.received and attempt < ATTEMPTS:
                    print(f"download {desc}: {reason}; resuming at byte {part.size():,}", file=sys.stderr)
                    continue
                raise TransferError(reason) from None
            part.finish()
            return
        raise TransferError(f"the server's file kept changing or its length disagreed with it in {ATTEMPTS} tries")
    except TransferError as e:
        e.kept = part.close()
        raise
    finally:
        part.close()


def _connection(url: str, part: _Partial, timeout: float, desc: str) -> None:
    """One request: append the body to ``part`` and check its length; raise on anything short of complete."""
    from tqdm import tqdm

    offset = part.resume_offset(url)
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if part.record.get("validator"):
            headers["If-Range"] = part.record["validator"]
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is as long as the file or longer: it is not a prefix
            part.restart(url, None, None)
            raise _Restart from None
        raise
    with response:
        status = getattr(response, "status", None) or 200  # file:// and ftp:// answers carry no status
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if offset and status == 206:
            total = _check_content_range(response.headers.get("Content-Range"), offset, part, url)
            if total is None and length is not None:
                total = offset + length
        else:  # a first request, or a server that ignored Range / found the file changed: from byte 0
            total = length
            part.restart(url, _validator(response.headers), total)
        with tqdm(total=total, initial=part.size(), unit="B", unit_scale=True, desc=f"download {desc}",
                  file=sys.stderr, disable=None) as bar:
            # read1: what has arrived, at most one socket read; read(n) would wait for n bytes and, on a
            # stall, lose the ones it had buffered with the timeout, so a stalled connection could not resume.
            for block in iter(lambda: response.read1(BLOCK), b""):
                part.write(block)
                bar.update(len(block))
    got = part.size()
    if total is not None and got != total:
        if got > total:  # more bytes than announced: the file cannot be trusted, start the next run clean
            part.restart(url, None, None)
            raise TransferError(f"received {got:,} bytes, more than the {total:,} the server announced")
        raise ConnectionError(f"the connection closed after {got:,} of {total:,} bytes")


def _check_content_range(value: str | None, offset: int, part: _Partial, url: str) -> int | None:
    """The file's total length from a 206's Content-Range, which must continue the ``.part`` at ``offset``."""
    match = CONTENT_RANGE.fullmatch((value or "").strip())
    if not match or int(match[1]) != offset:
        part.restart(url, None, None)
        raise TransferError(f"asked for bytes {offset}-, the server answered 206 with Content-Range {value!r}; "
                            "the partial download was discarded")
    total = None if match[3] == "*" else int(match[3])
    if total is not None and part.record.get("total") not in (None, total):
        part.restart(url, None, None)  # the file's length changed: the bytes we have are of another file
        raise _Restart
    return total


def _validator(headers) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified (RFC 9110 sec. 13.1.5)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _reason(e: BaseException, timeout: float) -> str:
    """One line on why a connection failed."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    cause = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(cause, TimeoutError):
        return f"no data for {timeout:g} s"
    return str(cause) or type(cause).__name__
