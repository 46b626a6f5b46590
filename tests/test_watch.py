"""The divergence watcher on real fairseq log lines: each criterion alone, and its baseline across a resume.

Lines come from a real 3-update fairseq-train run on the tiny corpus (its json log format); variants change
only the loss value in such a line. The fp16 marker is fairseq's own message, read from its source.
"""

import inspect
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO
from normpos.experiment.watch import Watcher


@pytest.fixture(scope="module")
def real_lines(tiny_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("watchlog")
    proc = subprocess.run(
        [sys.executable, "-m", "normpos.fairseq_run", "train", str(tiny_bin), "-s", "de", "-t", "en",
         "--arch", "normpos_iwslt_de_en_post_ln", "--encoder-layers", "1", "--decoder-layers", "1",
         "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
         "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
         "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "800", "--max-update", "3", "--cpu",
         "--criterion", "label_smoothed_cross_entropy", "--log-format", "json", "--log-interval", "1",
         "--no-progress-bar", "--no-save", "--num-workers", "0", "--save-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    inner = [line for line in lines if "train_inner" in line]
    assert len(inner) >= 2, lines[-20:]
    return inner


def with_loss(line: str, loss: str) -> str:
    """The same real fairseq line with its loss replaced (fairseq logs numbers as JSON strings)."""
    changed, n = re.subn(r'"loss": "[^"]*"', f'"loss": "{loss}"', line)
    assert n == 1
    return changed


def first_loss(line: str) -> float:
    return float(json.loads(line[line.index("{"):])["loss"])


def test_a_real_run_does_not_trip_the_watcher(real_lines):
    watcher = Watcher(1.5, {})
    for line in real_lines:
        watcher.feed(line)
    assert watcher.diverged is None
    assert watcher.first_loss == first_loss(real_lines[0])


@pytest.mark.parametrize("bad", ["inf", "nan"])
def test_non_finite_loss_diverges(real_lines, bad):
    watcher = Watcher(1.5, {})
    watcher.feed(real_lines[0])
    watcher.feed(with_loss(real_lines[1], bad))
    assert watcher.diverged and bad in watcher.diverged


def test_loss_above_factor_times_the_first_diverges_and_just_below_does_not(real_lines):
    base = first_loss(real_lines[0])
    below, above = Watcher(1.5, {}), Watcher(1.5, {})
    for watcher, loss in ((below, 1.49 * base), (above, 1.51 * base)):
        watcher.feed(real_lines[0])
        watcher.feed(with_loss(real_lines[1], f"{loss:.3f}"))
    assert below.diverged is None
    assert above.diverged and "above 1.5 x its first value" in above.diverged


def test_fp16_minimum_loss_scale_marker_is_fairseqs_own_message():
    from fairseq.optim import dynamic_loss_scaler

    source = inspect.getsource(dynamic_loss_scaler)
    template = re.search(r'"(Minimum loss scale reached \(\{\}\)\.[^"]*)"', source).group(1)  # its first part
    line = "FloatingPointError: " + template.format(0.0001)  # as the traceback's last line begins
    watcher = Watcher(1.5, {})
    watcher.feed(line)
    assert watcher.saw_marker in ("Minimum loss scale reached", "FloatingPointError")
    # fp16's ordinary rescaling (the scaler's own OverflowError text) is no divergence
    ordinary = re.search(r'OverflowError\("([^"]*)"', source).group(1) + "64.0"
    calm = Watcher(1.5, {})
    calm.feed(ordinary)
    assert calm.saw_marker is None


def test_the_baseline_survives_a_resume(real_lines, tmp_path):
    state = tmp_path / "watch.json"
    base = first_loss(real_lines[0])
    before = Watcher(1.5, {}, state=state)
    before.feed(real_lines[0])
    assert json.loads(state.read_text())["first_loss"] == base
    # after a resume the loss is lower; a climb to 1.6 x the *original* first loss must still count
    resumed, fresh = Watcher(1.5, {}, state=state), Watcher(1.5, {})
    for watcher in (resumed, fresh):
        watcher.feed(with_loss(real_lines[1], f"{0.5 * base:.3f}"))
        watcher.feed(with_loss(real_lines[1], f"{1.6 * base:.3f}"))
    assert resumed.diverged and f"{base:.2f}" in resumed.diverged
    assert fresh.diverged and f"{0.5 * base:.2f}" in fresh.diverged  # without the file: the wrong baseline
    resumed_ok = Watcher(1.5, {}, state=state)
    resumed_ok.feed(with_loss(real_lines[1], f"{1.4 * base:.3f}"))
    assert resumed_ok.diverged is None
