"""Bad input at the source: no network, wrong checksum, truncated or unsafe archive (issue 3, "Bad input").

Downloads are exercised with file:// URLs and archives built here from the staged real files, because
this machine has no internet; every failure must be one line that says what to do, and leave nothing.
"""

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from conftest import shared_data
from normpos.data import multi30k
from normpos.data.__main__ import main
from normpos.data.download import Identity, Resource, extract, fetch
from normpos.data.errors import DataError
from normpos.data.textfiles import hash_file
from normpos.data.prepare import prepare

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once, like a machine offline


def make_tgz(path: Path, members: dict) -> Path:
    """A .tgz whose members (archive path -> bytes) are written in the given order."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def multi30k_gz(name: str) -> Path:
    return shared_data("multi30k", "task1", "raw", name)


def test_no_network_is_one_line_naming_url_and_local_option(tmp_path):
    resource = Resource("de-en.tgz", f"{UNREACHABLE}/fairseq/data/iwslt14/de-en.tgz")
    with pytest.raises(DataError) as e:
        fetch(resource, [], tmp_path / "orig")
    msg = str(e.value)
    assert "\n" not in msg
    assert resource.url in msg and "--source" in msg and "de-en.tgz" in msg
    assert leftovers(tmp_path) == []


def test_cli_offline_error_is_one_line_and_exit_1(tmp_path, capsys):
    code = main(["prepare", "iwslt14", "--out-root", str(tmp_path), "--source", f"{UNREACHABLE}/de-en.tgz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: ")
    assert f"{UNREACHABLE}/de-en.tgz" in err[0] and "--source" in err[0]
    assert leftovers(tmp_path) == []


def test_download_by_file_url_is_checked_and_cached(tmp_path):
    src = multi30k_gz("val.en.gz")
    resource = Resource("val.en.gz", src.as_uri(), Identity(sha256=hash_file(src)["sha256"]))
    first = fetch(resource, [], tmp_path / "orig")
    assert first.record["from"] == "download" and first.record["checks"] == {"sha256": "ok"}
    assert first.path().read_bytes() == src.read_bytes()
    again = fetch(resource, [], tmp_path / "orig")
    assert again.record["from"] == "download cache"
    assert leftovers(tmp_path / "orig") == ["val.en.gz"]


def test_downloaded_file_with_wrong_checksum_is_refused_and_removed(tmp_path):
    src = multi30k_gz("val.en.gz")
    resource = Resource("val.en.gz", src.as_uri(), Identity(sha256="0" * 64))
    with pytest.raises(DataError, match="sha256 is .* expected 0{64}.*--allow-unverified"):
        fetch(resource, [], tmp_path / "orig")
    assert leftovers(tmp_path / "orig") == []


def test_local_file_with_wrong_checksum_is_refused(tmp_path):
    # A Multi30k file that is not the published one: the real val.de with one word changed.
    text = gzip.decompress(multi30k_gz("val.de.gz").read_bytes()).replace(b"Geige", b"Cello", 1)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "val.de.gz").write_bytes(gzip.compress(text))
    sources = [str(tmp_path / "src"), str(multi30k_gz("val.de.gz").parent)]
    with pytest.raises(DataError, match="val.de.gz .*sha256 is"):
        prepare(multi30k.RECIPE, sources=sources, out_root=tmp_path / "data", workers=1)
    assert leftovers(tmp_path / "data") == []


def test_weak_identity_mismatch_only_warns(tmp_path, capsys):
    src = multi30k_gz("val.en.gz")
    resource = Resource("val.en.gz", src.as_uri(), Identity(md5="0" * 32, weak=frozenset({"md5"}), note="one blog"))
    fetched = fetch(resource, [str(src)], tmp_path / "orig")
    assert "md5 is" in capsys.readouterr().err
    assert fetched.record["checks"]["md5"].startswith("MISMATCH")


def test_truncated_archive_is_refused_and_leaves_nothing(tmp_path):
    xml = shared_data("iwslt14", "de-en", "IWSLT14.TED.tst2010.de-en.en.xml")
    good = make_tgz(tmp_path / "good.tgz", {"de-en/" + xml.name: xml.read_bytes()})
    data = good.read_bytes()
    (tmp_path / "src").mkdir()
    truncated = tmp_path / "src" / "de-en.tgz"
    truncated.write_bytes(data[: len(data) // 2])
    resource = Resource("de-en.tgz", f"{UNREACHABLE}/de-en.tgz", members={"de-en/" + xml.name: None})
    with pytest.raises(DataError, match="truncated or corrupt"):
        fetch(resource, [str(truncated)], tmp_path / "orig")
    assert leftovers(tmp_path / "orig") == []


def test_truncated_download_fails_the_size_check(tmp_path):
    xml = shared_data("iwslt14", "de-en", "IWSLT14.TED.tst2010.de-en.en.xml")
    good = make_tgz(tmp_path / "good.tgz", {"de-en/" + xml.name: xml.read_bytes()})
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good.read_bytes()[:-100])
    resource = Resource("de-en.tgz", cut.as_uri(), Identity(size=good.stat().st_size), {"de-en/" + xml.name: None})
    with pytest.raises(DataError, match="size is"):
        fetch(resource, [], tmp_path / "orig")
    assert leftovers(tmp_path / "orig") == []


def test_archive_members_escaping_the_folder_are_refused(tmp_path):
    evil = make_tgz(tmp_path / "evil.tgz", {"de-en/README": b"ok\n", "../outside": b"no\n"})
    with pytest.raises(DataError, match="outside the target folder"):
        extract(evil, tmp_path / "orig" / "evil")
    assert not (tmp_path / "orig" / "outside").exists() and not (tmp_path / "outside").exists()
    assert leftovers(tmp_path / "orig") == []


def test_member_with_wrong_identity_removes_the_unpacked_folder(tmp_path):
    xml = shared_data("iwslt14", "de-en", "IWSLT14.TED.tst2010.de-en.en.xml")
    archive = make_tgz(tmp_path / "de-en.tgz", {"de-en/x.xml": xml.read_bytes()})
    resource = Resource("de-en.tgz", f"{UNREACHABLE}/de-en.tgz", members={"de-en/x.xml": Identity(sha256="1" * 64)})
    with pytest.raises(DataError, match="de-en/x.xml"):
        fetch(resource, [str(archive)], tmp_path / "orig")
    assert leftovers(tmp_path / "orig") == []
