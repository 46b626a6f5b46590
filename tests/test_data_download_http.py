"""Downloads over real HTTP that fail safely (issue 11, item 7): short bodies, redirects, resumption, stalls.

The server is the standard library's ``ThreadingHTTPServer`` on 127.0.0.1 (port 0), serving small real
archives made here; each path has a queue of one-off behaviours (cut the body, stall, ignore Range,
redirect), after which it serves normally with Range, If-Range and a strong ETag, as a CDN does. Every
request it saw is recorded, so the tests assert the exact Range and If-Range headers the client sent.
Timeouts are lowered to fractions of a second; a stalled handler is released when the test ends.
"""

import fcntl
import hashlib
import random
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import shared_data
from normpos.data import multi30k, transfer
from normpos.data.__main__ import main
from normpos.data.download import Identity, Resource, fetch
from normpos.data.errors import DataError
from normpos.data.textfiles import hash_file
from test_data_download import leftovers, make_tgz

CUT = 40_000  # bytes a cut or stalled response delivers; the archive is about 150 KB
STALL = 1.0  # the lowered inactivity timeout, seconds (long enough for a loaded 2-core machine)


class Site:
    """What the server serves (path -> bytes), what it does next per path, and what it saw."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.plans: dict[str, deque] = defaultdict(deque)
        self.seen: list[dict] = []
        self.release = threading.Event()  # ends stalled handlers
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def plan(self, path: str, *behaviours) -> None:
        self.plans[path].extend(behaviours)

    def seen_headers(self, name: str) -> list:
        return [r[name] for r in self.seen]


def etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a handler never waits longer than this on the client

    def log_message(self, *args):  # keep pytest's output for failures
        pass

    def do_GET(self):
        site: Site = self.server.site
        behaviour = site.plans[self.path].popleft() if site.plans[self.path] else ("serve",)
        kind, *args = behaviour
        record = {"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range"),
                  "status": None}
        site.seen.append(record)
        self.close_connection = True
        if kind == "redirect":
            record["status"] = args[0]
            self.send_response(args[0])
            self.send_header("Location", args[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "stall":  # accepts the request, answers nothing
            site.release.wait(10)
            return
        if self.path not in site.files:
            record["status"] = 404
            self.send_error(404)
            return
        data = site.files[self.path]
        start = 0
        wanted = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if kind != "ignore_range" and wanted.startswith("bytes=") and wanted.endswith("-") and \
                (if_range is None or if_range == etag(data)):
            start = int(wanted[len("bytes="):-1])
        body = data[start:]
        record["status"] = 206 if start else 200
        self.send_response(record["status"])
        self.send_header("ETag", etag(data))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            first = 0 if kind == "wrong_range" else start  # a broken server: not the range asked for
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        if kind == "overlong":  # more bytes than Content-Range says the file has
            body += b"\0" * args[0]
        announced = len(body) - args[0] if kind == "short_length" else len(body)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        if kind == "cut":  # the connection closes early: fewer bytes than Content-Length
            self.wfile.write(body[: args[0]])
            if len(args) > 1:  # ... and the file changes on the server before the next request
                site.files[self.path] = args[1]
        elif kind == "stall_after":  # some bytes, then silence with the connection open
            self.wfile.write(body[: args[0]])
            self.wfile.flush()
            site.release.wait(10)
        else:
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up makes a broken pipe here; that is the test's point


@pytest.fixture
def site(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy from the environment must not see these requests
    site = Site()
    server = Server(("127.0.0.1", 0), Handler)
    server.site = site
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield site
    site.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small real .tgz (random, incompressible member) and its Resource identity."""
    folder = tmp_path_factory.mktemp("archive")
    member = random.Random(0).randbytes(150_000)
    path = make_tgz(folder / "pack.tgz", {"pack/README": b"a test archive\n", "pack/data.bin": member})
    data = path.read_bytes()
    known = hash_file(path)
    identity = Identity(size=known["size"], sha256=known["sha256"])
    members = {"pack/data.bin": Identity(sha256=hashlib.sha256(member).hexdigest())}
    return data, identity, members


def resource(site, archive, path="/files/pack.tgz", identity=None) -> Resource:
    data, known, members = archive
    return Resource("pack.tgz", site.url(path), identity or known, members)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def assert_complete(fetched, data, cache):
    assert fetched.record["from"] == "download"
    assert fetched.record["checks"] == {"size": "ok", "sha256": "ok"}
    assert (cache / "pack.tgz").read_bytes() == data
    assert leftovers(cache) == ["pack", "pack.tgz", "pack/.archive-sha256", "pack/pack", "pack/pack/README",
                                "pack/pack/data.bin"]


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_redirect_to_another_path_is_followed(site, archive, tmp_path, code):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/old/pack.tgz", ("redirect", code, "/files/pack.tgz"))
    fetched = fetch(resource(site, archive, "/old/pack.tgz"), [], tmp_path / "orig")
    assert_complete(fetched, data, tmp_path / "orig")
    assert [(r["path"], r["status"]) for r in site.seen] == [("/old/pack.tgz", code), ("/files/pack.tgz", 200)]


def test_resume_after_a_dropped_connection_follows_the_redirect_again(site, archive, tmp_path):
    """The Range header survives the redirect (urllib copies request headers to the new request)."""
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/old/pack.tgz", ("redirect", 302, "/files/pack.tgz"), ("redirect", 302, "/files/pack.tgz"))
    site.plan("/files/pack.tgz", ("cut", CUT))
    fetched = fetch(resource(site, archive, "/old/pack.tgz"), [], tmp_path / "orig")
    assert_complete(fetched, data, tmp_path / "orig")
    assert [(r["path"], r["range"], r["status"]) for r in site.seen] == [
        ("/old/pack.tgz", None, 302), ("/files/pack.tgz", None, 200),
        ("/old/pack.tgz", f"bytes={CUT}-", 302), ("/files/pack.tgz", f"bytes={CUT}-", 206)]


def test_dropped_connection_resumes_with_range_and_206(site, archive, tmp_path, capsys):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/files/pack.tgz", ("cut", CUT))
    fetched = fetch(resource(site, archive), [], tmp_path / "orig")
    assert_complete(fetched, data, tmp_path / "orig")
    assert [(r["range"], r["if_range"], r["status"]) for r in site.seen] == [
        (None, None, 200), (f"bytes={CUT}-", etag(data), 206)]
    assert f"the connection closed after {CUT:,} of {len(data):,} bytes; resuming at byte {CUT:,}" \
        in capsys.readouterr().err


def test_server_that_ignores_range_is_read_again_from_byte_0(site, archive, tmp_path):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/files/pack.tgz", ("cut", CUT), ("ignore_range",))
    fetched = fetch(resource(site, archive), [], tmp_path / "orig")
    assert_complete(fetched, data, tmp_path / "orig")  # appending the 200 body to the prefix would differ
    assert [(r["range"], r["status"]) for r in site.seen] == [(None, 200), (f"bytes={CUT}-", 200)]


def test_file_changed_on_the_server_is_not_spliced(site, tmp_path):
    """If-Range carries the first ETag; the server sees it is stale and sends the new file whole."""
    old = random.Random(1).randbytes(100_000)
    new = bytes(b ^ 1 for b in old)  # same length: only the validator tells the two apart
    site.files["/files/blob.gz"] = old
    site.plan("/files/blob.gz", ("cut", CUT, new))
    identity = Identity(size=len(new), sha256=hashlib.sha256(new).hexdigest())
    fetched = fetch(Resource("blob.gz", site.url("/files/blob.gz"), identity), [], tmp_path / "orig")
    assert fetched.record["checks"] == {"size": "ok", "sha256": "ok"}
    assert fetched.path().read_bytes() == new  # not old[:CUT] + new[CUT:]
    assert [(r["range"], r["if_range"], r["status"]) for r in site.seen] == [
        (None, None, 200), (f"bytes={CUT}-", etag(old), 200)]


def test_body_shorter_than_content_length_is_refused_and_kept_only_as_part(site, archive, tmp_path):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/files/pack.tgz", *[("cut", CUT)] * transfer.ATTEMPTS)
    cache = tmp_path / "orig"
    res = resource(site, archive)
    with pytest.raises(DataError) as e:
        fetch(res, [], cache)
    got = CUT * transfer.ATTEMPTS
    msg = one_line_error(e)
    assert f"cannot download {res.url} (the connection closed after {got:,} of {len(data):,} bytes)" in msg
    assert f"the {got:,} bytes received are kept in {cache / 'pack.tgz.part'}" in msg and "--source" in msg
    assert leftovers(cache) == ["pack.tgz.part", "pack.tgz.part.json"]  # never under the final name
    assert (cache / "pack.tgz.part").read_bytes() == data[:got]
    assert site.seen_headers("range") == [None] + [f"bytes={CUT * i}-" for i in range(1, transfer.ATTEMPTS)]

    # Not mistaken for the file: an unreachable mirror finds no cached pack.tgz, and keeps the .part.
    with pytest.raises(DataError, match="cannot download http://127.0.0.1:9/pack.tgz"):
        fetch(res, ["http://127.0.0.1:9/"], cache)
    assert (cache / "pack.tgz.part").read_bytes() == data[:got]

    # The next run from the same URL resumes where the last one stopped.
    fetched = fetch(res, [], cache)
    assert_complete(fetched, data, cache)
    assert site.seen[-1]["range"] == f"bytes={got}-" and site.seen[-1]["status"] == 206


def test_part_from_another_url_is_replaced_not_resumed(site, archive, tmp_path):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    cache = tmp_path / "orig"
    cache.mkdir()
    (cache / "pack.tgz.part").write_bytes(b"x" * CUT)
    (cache / "pack.tgz.part.json").write_text('{"url": "http://elsewhere/pack.tgz", "validator": null}')
    fetched = fetch(resource(site, archive), [], cache)
    assert_complete(fetched, data, cache)
    assert site.seen_headers("range") == [None]


@pytest.mark.parametrize("broken", [("wrong_range",), ("overlong", 100)], ids=["wrong-start", "overlong"])
def test_206_that_does_not_continue_the_part_is_refused_and_discarded(site, archive, tmp_path, broken):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/files/pack.tgz", ("cut", CUT), broken)
    with pytest.raises(DataError) as e:
        fetch(resource(site, archive), [], tmp_path / "orig")
    expected = {"wrong_range": f"asked for bytes {CUT}-, the server answered 206 with Content-Range "
                               f"'bytes 0-{len(data) - 1}/{len(data)}'; the partial download was discarded",
                "overlong": f"received {len(data) + 100:,} bytes, more than the {len(data):,} the server announced"}
    assert f"({expected[broken[0]]})" in one_line_error(e)
    assert leftovers(tmp_path / "orig") == []  # the bytes on disk cannot be trusted: the rerun starts clean
    assert [(r["range"], r["status"]) for r in site.seen] == [(None, 200), (f"bytes={CUT}-", 206)]


def test_content_length_shorter_than_the_file_fails_the_size_check(site, archive, tmp_path):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/files/pack.tgz", ("short_length", 100))
    with pytest.raises(DataError) as e:
        fetch(resource(site, archive), [], tmp_path / "orig")
    assert f"size is {len(data) - 100}, expected {len(data)}" in one_line_error(e)
    assert leftovers(tmp_path / "orig") == []


@pytest.mark.parametrize("stall", [("stall",), ("stall_after", 0)], ids=["before-headers", "after-headers"])
def test_stalled_server_times_out_and_leaves_nothing(site, archive, tmp_path, stall):
    site.files["/files/pack.tgz"] = archive[0]
    site.plan("/files/pack.tgz", stall)
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        fetch(resource(site, archive), [], tmp_path / "orig", timeout=STALL)
    assert time.monotonic() - started < 5
    assert f"(no data for {STALL:g} s)" in one_line_error(e)
    assert leftovers(tmp_path / "orig") == []
    assert len(site.seen) == 1  # no bytes came, so no second connection


def test_default_timeout_stays_60_s():
    assert transfer.TIMEOUT_S == 60


def test_stall_mid_body_is_resumed(site, archive, tmp_path):
    data = archive[0]
    site.files["/files/pack.tgz"] = data
    site.plan("/files/pack.tgz", ("stall_after", CUT))
    started = time.monotonic()
    fetched = fetch(resource(site, archive), [], tmp_path / "orig", timeout=STALL)
    assert time.monotonic() - started < 5
    assert_complete(fetched, data, tmp_path / "orig")
    assert [(r["range"], r["status"]) for r in site.seen] == [(None, 200), (f"bytes={CUT}-", 206)]


def test_wrong_sha256_over_http_is_refused_and_leaves_nothing(site, archive, tmp_path):
    site.files["/files/pack.tgz"] = archive[0]
    wrong = Identity(size=len(archive[0]), sha256="0" * 64)
    with pytest.raises(DataError, match="sha256 is .* expected 0{64}.*--allow-unverified"):
        fetch(resource(site, archive, identity=wrong), [], tmp_path / "orig")
    assert leftovers(tmp_path / "orig") == []


def test_part_locked_by_another_download_is_left_alone(site, archive, tmp_path):
    site.files["/files/pack.tgz"] = archive[0]
    cache = tmp_path / "orig"
    cache.mkdir()
    (cache / "pack.tgz.part").write_bytes(b"x" * 10)
    with open(cache / "pack.tgz.part", "ab") as other:  # flock: a second open file is a second owner
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DataError) as e:
            fetch(resource(site, archive), [], cache)
    assert "is being written by another download" in one_line_error(e)
    assert (cache / "pack.tgz.part").read_bytes() == b"x" * 10
    assert site.seen == []


def test_cli_downloads_multi30k_from_a_mirror_folder(site, tmp_path, capsys):
    """``prepare multi30k --source http://.../raw/``: five files arrive verified, the one whose connection
    keeps dropping is one error line, kept as a .part for the rerun (the full preparation is
    test_data_multi30k's; it costs a minute of CPU, which is why it stops at the download here)."""
    raw = shared_data("multi30k", "task1", "raw")
    for name in multi30k.SHA256:
        site.files[f"/mirror/raw/{name}"] = (raw / name).read_bytes()
    site.plan("/mirror/raw/val.de.gz", *[("cut", 5000)] * transfer.ATTEMPTS)
    code = main(["prepare", "multi30k", "--out-root", str(tmp_path), "--source", site.url("/mirror/raw/")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: val.de.gz: cannot download " + site.url("/mirror/raw/val.de.gz"))
    assert "closed after 15,000 of 24,681 bytes" in err[-1]
    cache = tmp_path / "multi30k" / "orig"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [n for n in multi30k.SHA256 if n != "val.de.gz"] + ["val.de.gz.part", "val.de.gz.part.json"])
    for name in multi30k.SHA256:
        if name != "val.de.gz":
            assert (cache / name).read_bytes() == (raw / name).read_bytes()
    assert (cache / "val.de.gz.part").read_bytes() == (raw / "val.de.gz").read_bytes()[:15_000]
