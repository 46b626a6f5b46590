"""What a newcomer's mistyped or not-yet-run experiment gives through make: one line naming the valid
experiments, and report paths without an empty dataset (``results/runs//NAME``).

The Makefile's DATASET default comes from ``scripts/experiment_dataset.sh``; it must agree with the dataset
Hydra composes for every experiment (an experiment built on another one, as schemes_demo on demo, included).
"""

import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def make(*args: str) -> subprocess.CompletedProcess:
    # PY other than the venv: make does not try to (re)build .venv
    return subprocess.run(["make", "--no-print-directory", *args, f"PY={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


MAKE_CLOSING = re.compile(r"make(\[\d+\])?: \*\*\* ")


def own_lines(done: subprocess.CompletedProcess) -> list:
    """Every line printed, except make's own closing ``make: *** [...] Error 2`` (``make[1]: ***`` when the
    suite itself runs under make, as ``make test`` does)."""
    return [line for line in (done.stdout + done.stderr).splitlines() if not MAKE_CLOSING.match(line)]


@pytest.mark.parametrize("target, name", [("sweep", "nope"), ("table", "never_run"), ("figures", "nope")])
def test_unknown_experiment_is_one_line_naming_the_valid_ones(target, name):
    done = make(target, f"EXPERIMENT={name}")
    assert done.returncode != 0
    lines = own_lines(done)
    assert len(lines) == 1, lines  # no sed complaint, no Hydra traceback or list before it
    assert lines[0].startswith(f"normpos: error: unknown experiment '{name}'")
    assert lines[0].split("valid: ", 1)[1].split() == EXPERIMENTS


@pytest.mark.parametrize("name, dataset", [("schemes_demo", "multi30k"), ("sec4_radam", "iwslt14")])
def test_table_of_a_never_run_experiment_names_its_real_folder(tmp_path, name, dataset):
    done = make("table", f"EXPERIMENT={name}", f"RUN_ROOT={tmp_path}")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "//" not in text
    assert f"normpos: error: {tmp_path}/{dataset}/{name} is not a folder of runs" in text


def test_make_dataset_default_equals_what_hydra_composes():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        hydra = {name: compose("train", overrides=[f"experiment={name}"]).dataset.name for name in EXPERIMENTS}
    script = {name: subprocess.run([str(REPO / "scripts" / "experiment_dataset.sh"), name], cwd=REPO,
                                   capture_output=True, text=True, check=True).stdout.strip()
              for name in EXPERIMENTS}
    assert script == hydra
    assert len(set(hydra.values())) == 3  # iwslt14, multi30k and wmt14 all occur: a constant would fail
