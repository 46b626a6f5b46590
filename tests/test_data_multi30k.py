"""Multi30k De-En from the staged official files to fairseq binary data, through the command line.

Also the manifest rule (issue 3, item 5): the same options again do nothing; a folder made with other
options is refused, never mixed.
"""

import gzip
import json

import pytest

from conftest import shared_data
from normpos.data import multi30k
from normpos.data.__main__ import main
from normpos.data.textfiles import read_lines

RAW_LINES = {"train": 29000, "valid": 1014, "test": 1000}


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    shared_data("multi30k", "task1", "raw")
    root = tmp_path_factory.mktemp("m30k")
    # No --source: the staged copy is the default source when it is there.
    assert main(["prepare", "multi30k", "--out-root", str(root), "--workers", "2"]) == 0
    return root


def test_prepared_end_to_end(out_root, capfd):
    folder = out_root / "multi30k" / "bpe8000"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["options"]["vocab"] == 8000 and m["options"]["subword"] == "bpe"
    assert all(s["checks"] == {"sha256": "ok"} for s in m["sources"])
    assert {s["name"] for s in m["sources"]} == set(multi30k.SHA256)
    assert m["steps"]["clean"]["input_pairs"] == RAW_LINES["train"]
    n_train = m["steps"]["clean"]["output_pairs"]
    assert 28000 < n_train <= 29000
    for split, n in {"train": n_train, "valid": 1014, "test": 1000}.items():
        for lang in ("de", "en"):
            assert m["counts"][split][lang]["subword"]["lines"] == n
            assert sum(1 for _ in read_lines(folder / f"{split}.{lang}")) == n
    # Untokenized references are the published text.
    raw = shared_data("multi30k", "task1", "raw")
    for split, stem in (("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            published = gzip.decompress((raw / f"{stem}.{lang}.gz").read_bytes()).decode("utf-8")
            assert (folder / "ref" / f"{split}.{lang}").read_text(encoding="utf-8") == published
    # Lowercased, Moses-tokenized, BPE'd.
    test_en = (folder / "test.en").read_text(encoding="utf-8")
    assert test_en == test_en.lower() and "@@ " in test_en and " ." in test_en
    assert (folder / "code").read_text().count("\n") == 8001


def test_binary_data_loads_in_fairseq(out_root):
    from fairseq.data import Dictionary, data_utils

    folder = out_root / "multi30k" / "bpe8000"
    d_de, d_en = (Dictionary.load(str(folder / "bin" / f"dict.{lang}.txt")) for lang in ("de", "en"))
    assert d_de.symbols == d_en.symbols  # joined dictionary
    for split, n in (("valid", 1014), ("test", 1000)):
        ds = data_utils.load_indexed_dataset(str(folder / "bin" / f"{split}.de-en.en"), d_en)
        assert len(ds) == n
        first = next(read_lines(folder / f"{split}.en"))
        assert d_en.string(ds[0]) == first


def test_same_options_again_do_nothing(out_root, capsys):
    folder = out_root / "multi30k" / "bpe8000"
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert main(["prepare", "multi30k", "--out-root", str(out_root)]) == 0
    captured = capsys.readouterr()
    assert "nothing to do" in captured.err and captured.out.strip().splitlines()[-1] == str(folder)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_folder_made_with_other_options_is_refused(out_root, capsys):
    folder = out_root / "multi30k" / "bpe8000"
    manifest = folder / "manifest.json"
    original = manifest.read_text()
    m = json.loads(original)
    m["options"]["recipe_version"] = 0  # as if an older recipe had made it
    manifest.write_text(json.dumps(m))
    try:
        assert main(["prepare", "multi30k", "--out-root", str(out_root)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "other options" in err[0] and "recipe_version: 0 -> 1" in err[0]
        assert "--force" in err[0]
    finally:
        manifest.write_text(original)
