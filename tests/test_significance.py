"""Paired significance tests: ``python -m normpos.scoring compare`` gives the scores, bootstrap means, 95%
confidence intervals, p-values and signatures that the sacrebleu command line prints for the same files and
seed (``--paired-bs`` and ``--paired-ar``, text output: sacreBLEU 2.6.0's JSON output of --paired-bs fails)."""

import json
import os
import random
import re
import subprocess
import sys

import pytest

from conftest import shared_data
from normpos.data.sgm import segments

SEED = 7  # not sacreBLEU's default, so that passing the seed through is tested too


def noisy(lines, drop, seed):
    rng = random.Random(seed)
    return [" ".join(w for w in line.split() if rng.random() > drop) for line in lines]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """200 newstest2014 English references; a baseline and two systems, one clearly better, one close."""
    refs = list(segments(shared_data("wmt14", "test-full", "newstest2014-deen-ref.en.sgm")))[:200]
    folder = tmp_path_factory.mktemp("significance")
    made = {}
    for name, lines in (("ref", refs), ("base", noisy(refs, 0.3, 1)), ("better", noisy(refs, 0.2, 2)),
                        ("close", noisy(refs, 0.3, 3))):
        made[name] = folder / f"{name}.txt"
        made[name].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return made


CELL = re.compile(r"(\d+\.\d+) \((\d+\.\d+) ± (\d+\.\d+)\)")
P_VALUE = re.compile(r"\(p = (\d\.\d+)\)")


def sacrebleu_cli(ref, systems, test: str, seed: int, lowercase: bool) -> tuple:
    """({system: {metric: [score, mean, ci, p]}}, {metric: signature}) parsed from the text table of
    ``sacrebleu REF -i BASELINE SYS... -m bleu chrf --chrf-word-order 2 --paired-{test}`` (bootstrap rows hold
    score, mean, CI and p; approximate randomization rows score and p; the baseline has no p)."""
    cmd = [sys.executable, "-m", "sacrebleu", str(ref), "-i", *map(str, systems), "-m", "bleu", "chrf",
           "--chrf-word-order", "2", f"--paired-{test}", "-f", "text", "-w", "4", "--no-color"]
    cmd += ["-lc", "--chrf-lowercase"] if lowercase else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SACREBLEU_SEED": str(seed)},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, current = {}, None
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0] and cells[0] != "System":
            current = cells[0].removeprefix("Baseline: ")
            rows[current] = {}
            for metric, cell in zip(("BLEU", "chrF2++"), cells[1:]):
                m = CELL.fullmatch(cell)
                rows[current][metric] = [float(m.group(1)), float(m.group(2)), float(m.group(3))] if m else \
                    [float(cell)]  # approximate randomization prints the score only
        elif len(cells) == 3 and current and P_VALUE.search(line):
            for metric, cell in zip(("BLEU", "chrF2++"), cells[1:]):
                rows[current][metric].append(float(P_VALUE.search(cell).group(1)))
    signatures = dict(re.findall(r"^ - (BLEU|chrF2\+\+)\s+(\S+)$", proc.stdout, re.M))
    return rows, signatures


def test_compare_equals_the_sacrebleu_command_line(files, tmp_path):
    out = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, "-m", "normpos.scoring", "compare", "--ref", str(files["ref"]),
                           "--baseline", str(files["base"]), str(files["better"]), str(files["close"]),
                           "--lowercase", "--seed", str(SEED), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = json.loads(out.read_text())
    assert ours["settings"] == {"seed": SEED, "bootstrap_resamples": 1000, "randomization_trials": 10000,
                                "lowercase": True, "sentences": 200}
    systems = [files["base"], files["better"], files["close"]]
    bs, bs_signatures = sacrebleu_cli(files["ref"], systems, "bs", SEED, lowercase=True)
    ar, ar_signatures = sacrebleu_cli(files["ref"], systems, "ar", SEED, lowercase=True)
    assert ours["signatures"] == {"bootstrap": bs_signatures, "randomization": ar_signatures}
    assert "bs:1000|seed:7|case:lc" in bs_signatures["BLEU"] and "ar:10000|seed:7" in ar_signatures["chrF2++"]
    for name in ("base", "better", "close"):
        path = str(files[name])
        for metric in ("BLEU", "chrF2++"):
            got = ours["results"][path][metric]
            want = [got["score"], got["mean"], got["ci"]] + ([got["p_bootstrap"]] if name != "base" else [])
            assert [round(v, 4) for v in want] == bs[path][metric], (name, metric)
            assert [round(got["score"], 4)] + ([round(got["p_randomization"], 4)] if name != "base" else []) == \
                ar[path][metric], (name, metric)
    # the better system is significantly different under both tests, the close one under neither
    better, close = ours["results"][str(files["better"])], ours["results"][str(files["close"])]
    assert max(better["BLEU"]["p_bootstrap"], better["BLEU"]["p_randomization"]) < 0.05
    assert min(close["BLEU"]["p_bootstrap"], close["BLEU"]["p_randomization"]) > 0.05
    assert f"{better['BLEU']['p_bootstrap']:.4f}*" in proc.stdout  # sacreBLEU's mark in our text table


def test_compare_refuses_files_that_do_not_line_up(files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "normpos.scoring", "compare", "--ref", str(files["ref"]),
                           "--baseline", str(files["base"]), str(short)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"normpos: error: {short} has 1 lines but the references 200: the files do not line up\n"
