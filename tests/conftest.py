"""Shared test fixtures: where the plugin and the staged real data are, and a tiny fairseq data folder."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
