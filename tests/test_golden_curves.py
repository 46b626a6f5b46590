"""Golden training curves (normpos.golden): every scheme, the N-gram window, data parallelism and every lr
schedule reproduce the committed values in tests/golden/ exactly, under pinned CPU numerics.

A failure means the training numerics changed. If the change is intended, run ``make golden`` (it rewrites the
files and prints what moved) and say why in the commit. The pin is what makes exact equality possible here:
``test_outside_caps_are_a_no_op`` runs a case with every library capped from outside and gets the committed
bits, and ``test_the_caps_are_live_without_the_pin`` shows those same caps do change the result when the pin is
off (so the first test is not passing by accident).
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import shared_data
from normpos import numerics
from normpos.golden.__main__ import golden_path
from normpos.golden.cases import SCHEDULE_CASES, train_cases
from normpos.golden.corpus import build
from normpos.golden.curves import differences, run_schedule, run_train, run_trains_in_one_process
from normpos.experiment.schema import SCHEDULES

pytestmark = pytest.mark.slow
# every library pointed at other kernels and thread counts than the pin's (this host offers AVX2 at least)
OUTSIDE_CAPS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
POST_LN = next(c for c in train_cases() if c.name == "scheme-post_ln")


@pytest.fixture(scope="module")
def golden_bin(tmp_path_factory):
    shared_data("multi30k", "task1", "tok")
    return build(tmp_path_factory.mktemp("golden-corpus"))


def expected(name: str) -> dict:
    path = golden_path(name)
    assert path.exists(), f"{path} is missing: run make golden and commit it"
    return json.loads(path.read_text())


def assert_golden(name: str, got: dict) -> None:
    words = differences(expected(name), got)
    assert not words, f"{name}: {'; '.join(words)} (make golden rewrites tests/golden/; say why in the commit)"


@pytest.fixture(scope="module")
def one_process_records(golden_bin, tmp_path_factory):
    """Every one-process training case run by one child process (normpos.golden.curves.run_trains_in_one_process):
    the same commands as one process each, a process start-up saved per case; the committed values were made one
    process a case (make golden), so equality here also shows the runs do not leak into each other."""
    return run_trains_in_one_process(train_cases(), golden_bin, tmp_path_factory.mktemp("golden-runs"))


@pytest.mark.parametrize("case", train_cases(), ids=lambda c: c.name)
def test_training_curve_is_golden(case, golden_bin, tmp_path, one_process_records):
    got = one_process_records.get(case.name) or run_train(case, golden_bin, tmp_path)  # data parallel: its ranks
    assert_golden(case.name, got)


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=lambda c: c.name)
def test_schedule_arithmetic_is_golden(case, golden_bin):
    assert_golden(case.name, run_schedule(case, golden_bin))


def test_every_schedule_and_scheme_has_a_golden_case():
    from normpos_fairseq.schemes import scheme_names

    named = {o.split("=", 1)[1] for c in SCHEDULE_CASES for o in c.overrides if o.startswith("schedule.name=")}
    assert named == set(SCHEDULES)
    assert {c.name for c in train_cases()} >= {f"scheme-{s}" for s in scheme_names()}


def test_outside_caps_are_a_no_op(golden_bin, tmp_path):
    env = {**os.environ, **OUTSIDE_CAPS}
    assert_golden(POST_LN.name, run_train(POST_LN, golden_bin, tmp_path, env=env))


def test_the_caps_are_live_without_the_pin(golden_bin, tmp_path):
    env = {**os.environ, **OUTSIDE_CAPS}
    got = run_train(POST_LN, golden_bin, tmp_path, extra=["train.numerics=native"], env=env)
    assert got["weights_sha256"] != expected(POST_LN.name)["weights_sha256"]


def test_a_pinned_child_runs_avx2_kernels_on_two_threads_whatever_the_caller_says():
    if numerics.host_isa() not in ("avx2", "avx512"):
        pytest.skip(f"this host's ISA is {numerics.host_isa()}: the AVX2 pin cannot hold here")
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    caller = {k: v for k, v in os.environ.items() if k != numerics.ENV_THREADS}  # the pin's own default count
    env = numerics.environment({**caller, **OUTSIDE_CAPS}, "pinned")
    code = f"from normpos import numerics; numerics.pin_process(); {probe}"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "2"]
    native = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **OUTSIDE_CAPS, "NORMPOS_NUMERICS": "native"},
                            capture_output=True, text=True, check=True).stdout
    assert native.split() == ["DEFAULT", "1"]


def test_an_unknown_numerics_mode_is_one_line():
    with pytest.raises(numerics.NumericsError, match="valid: pinned, native"):
        numerics.mode({"NORMPOS_NUMERICS": "fast"})
