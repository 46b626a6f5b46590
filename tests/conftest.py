"""Shared test fixtures: where the plugin and the staged real data are, and a tiny fairseq data folder."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every training and decoding child of a test pins 1 CPU thread unless its config or the test sets another count
# (normpos.numerics: the pin's default is 2). The suite's models are tiny and run on 2 workers: 2 threads each
# only fight over the 2 cores. The golden curves pin 2 themselves (configs/experiment/golden.yaml), as committed.
os.environ.setdefault("NORMPOS_NUMERICS_THREADS", "1")
PLUGIN_DIR = REPO / "plugins" / "normpos_fairseq"
SHARED_DATA = Path(os.environ.get("NORMPOS_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not staged: {path} is absent (set NORMPOS_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def dict_dir(tmp_path_factory) -> Path:
    """A folder with a joined de/en dictionary of 96 made-up words: enough for fairseq to build a model."""
    folder = tmp_path_factory.mktemp("dicts")
    words = "".join(f"w{i} {1000 - i}\n" for i in range(96))
    for lang in ("de", "en"):
        (folder / f"dict.{lang}.txt").write_text(words)
    return folder


def tiny_corpus_lines(lang: str, count: int):
    """Real text (Multi30k, tokenized and lowercased); the test is skipped, with the reason, when it is not staged.
    (A synthetic stand-in of equal-length lines was tried: the thresholds the tests assert, set on real text,
    do not hold on it, so the tests failed instead of skipping.)"""
    tok = shared_data("multi30k", "task1", "tok", f"train.lc.norm.tok.{lang}")
    return tok.read_text(encoding="utf-8").splitlines()[:count]


@pytest.fixture(scope="session")
def tiny_bin(tmp_path_factory) -> Path:
    """A binarized de-en corpus (400 train / 40 valid / 40 test) with ``ref/`` references beside ``bin/``."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("tiny")
    splits = {"train": (0, 400), "valid": (400, 440), "test": (440, 480)}
    (root / "ref").mkdir()
    for lang in ("de", "en"):
        lines = tiny_corpus_lines(lang, 480)
        for split, (a, b) in splits.items():
            text = "\n".join(lines[a:b]) + "\n"
            (root / f"{split}.{lang}").write_text(text, encoding="utf-8")
            (root / "ref" / f"{split}.{lang}").write_text(text, encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "normpos.fairseq_run", "preprocess", "--source-lang", "de", "--target-lang", "en",
         "--joined-dictionary", "--trainpref", str(root / "train"), "--validpref", str(root / "valid"),
         "--testpref", str(root / "test"), "--destdir", str(root / "bin"), "--workers", "1"],
        check=True, capture_output=True,
    )
    return root / "bin"


def pytest_collection_modifyitems(config, items):
    """Files with the most slow tests first. `make test` hands out whole files to its 2 workers in collection
    order (--dist loadfile); a long file collected last (alphabetically test_schemes_all.py, ~1/6 of the suite)
    kept one worker busy alone at the end. Within a file the order is kept; files with as many slow tests keep
    their alphabetical order."""
    slow = {}
    for item in items:
        slow[item.fspath] = slow.get(item.fspath, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.fspath])  # stable: ties keep the collected order
