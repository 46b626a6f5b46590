"""``make frontier`` end to end: PRESET=tiny trains its map on the tiny corpus and writes the whole folder; a
second call reuses every run (from the folder's runs.csv); PRESET=iwslt's dry run lists exactly its grid's commands at the IWSLT shape,
which fairseq builds; bad input is one line.

The outcomes of the tiny map are read back from the run folders here, independently of the report: each
row of ``runs.csv`` must be what its folder's status.json and metrics.jsonl say under the bar in plan.json.
"""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def make(*args, timeout=600):
    return subprocess.run(["make", "-s", "--no-print-directory", "frontier", f"PY={sys.executable}", *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def expected(directory: Path, bar: float) -> str:
    """The rule, read straight from the run's files."""
    status = json.loads((directory / "status.json").read_text())
    if status["status"] == "diverged":
        return "diverges"
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()]
    nll = max(rows, key=lambda r: r["num_updates"])["valid_nll_loss"]
    return "trains" if nll < bar else "stalls"


def test_make_frontier_tiny_trains_its_map_writes_the_folder_and_reuses_it(tiny_bin, tmp_path):
    out, root = tmp_path / "out", tmp_path / "runs"
    args = [f"PRESET=tiny", f"RUN_ROOT={root}", f"FRONTIER_ARGS=--out {out}",
            f"ARGS=dataset.data_bin={tiny_bin} dataset.ref_dir={tiny_bin.parent / 'ref'}"]
    start = time.time()
    proc = make(*args)
    took = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    first_run = next(i for i, line in enumerate(lines) if line.startswith("[frontier 1/"))
    plan = "\n".join(lines[:first_run])
    # the plan comes first: 2 schemes x 2 depths x 2 lrs, 2 warm-up runs (W = 2 at one lr, both schemes)
    assert "= 8 runs of seed 1 at most" in plan and "at most 2 warm-up runs" in plan and "at most ~10 runs" in plan
    assert re.search(r"below \d+\.\d+ bits = the target unigram cross-entropy", plan)
    assert any(line.startswith("frontier: projected from the runs so far: <= ") for line in lines)

    info = json.loads((out / "plan.json").read_text())
    rows = read_csv(out / "runs.csv")
    ran = [r for r in rows if r["outcome"] != "not run"]
    folders = sorted(p.parent for p in root.rglob("status.json"))
    assert sorted(Path(r["run"]) for r in ran) == folders  # each run once (W = 1 shared with the map), nothing else
    assert len(ran) == 10
    for r in ran:
        assert r["outcome"] == expected(Path(r["run"]), info["bar"]["bar_bits"]), r
        if float(r["lr"]) == 100:  # diverges at its first updates: stopped there, not run to N
            assert r["outcome"] == "diverges" and int(r["updates"] or 0) < 6, r
    assert {(r["scheme"], r["warmup"]) for r in ran if r["depth"] == "1" and r["lr"] == "0.01"} == \
        {(s, w) for s in ("post_ln", "pre_ln") for w in ("1", "2")}

    for name in ("README.md", "table.md", "frontier.csv", "slopes.csv", "fig1_frontier.png", "fig2_warmup.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "fig1_frontier.png").read_bytes()[:4] == b"\x89PNG"
    readme = (out / "README.md").read_text()
    assert "make frontier PRESET=tiny" in readme and info["commit"] in readme and info["machine"] in readme
    frontier = read_csv(out / "frontier.csv")
    assert {(r["scheme"], r["depth"]) for r in frontier} == {(s, d) for s in ("post_ln", "pre_ln") for d in ("1", "2")}
    for r in frontier:  # lr 100 diverges everywhere: lr* is 1e-2 where it trains, none where it does not
        cell = next(x for x in ran if (x["scheme"], x["depth"], x["warmup"], x["lr"]) == (r["scheme"], r["depth"], "1", "0.01"))
        assert r["lr_star"] == ("0.01" if cell["outcome"] == "trains" else ""), (r, cell)
    slopes = {r["scheme"]: r["frontier_slope"] for r in read_csv(out / "slopes.csv")}
    for scheme in ("post_ln", "pre_ln"):  # the same lr* at depths 1 and 2: slope 0; none without two lr*
        both = all(r["lr_star"] for r in frontier if r["scheme"] == scheme)
        assert slopes[scheme] == ("0.0000" if both else ""), (scheme, slopes)
    print(f"make frontier PRESET=tiny: {took:.0f} s")

    again = make(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    # the folder's runs.csv is the record the second call reuses, before any run folder (test_frontier_record.py)
    assert "(0 trained now, 0 reused from their run folders, 10 from the record)" in again.stdout
    assert [r["outcome"] for r in read_csv(out / "runs.csv")] == [r["outcome"] for r in rows]


def test_iwslt_dry_run_lists_its_grid_at_the_iwslt_shape_and_fairseq_builds_it(tmp_path, dict_dir):
    from normpos.fairseq_build import build_task_and_model
    from normpos.frontier.plan import load_preset

    proc = make("PRESET=iwslt", "DRY_RUN=1", f"RUN_ROOT={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    preset = load_preset("iwslt")
    commands = [line for line in proc.stdout.splitlines() if "normpos.fairseq_run train" in line]
    warmups = len(preset.warmup.schemes) * (len(preset.warmup.updates) - 1) * len(preset.lrs)
    assert len(commands) == len(preset.schemes) * len(preset.depths) * len(preset.lrs) + warmups
    assert len(set(commands)) == len(commands)
    assert "no GPU here" in proc.stdout or "per GPU" in proc.stdout  # how many at once is decided on the GPU machine

    def flag(command, name):
        return command.split(f" {name} ")[1].split()[0]

    grid = {(flag(c, "--arch"), flag(c, "--encoder-layers"), flag(c, "--lr"), flag(c, "--warmup-updates")) for c in commands}
    want = {(f"normpos_iwslt_de_en_{s}", str(d), str(lr), "1") for s in preset.schemes for d in preset.depths for lr in preset.lrs}
    assert want <= grid
    for c in commands:
        assert " --cpu" not in c and flag(c, "--max-update") == "500" and flag(c, "--max-tokens") == "4096"
        assert flag(c, "--decoder-layers") == flag(c, "--encoder-layers") and flag(c, "--decay-anchor-updates") == "500"
    assert not list(tmp_path.rglob("status.json"))  # a dry run trains nothing
    # fairseq parses the deepest command and builds the paper's shape 24 layers deep
    deepest = next(c for c in commands if flag(c, "--encoder-layers") == "24" and "pre_ln" in flag(c, "--arch"))
    options = shlex.split(deepest)
    options = options[options.index("train") + 2:]  # after the data folder, as test_experiment_grids builds them
    _, _, model = build_task_and_model(dict_dir, *options, langs=("de", "en"))
    layer = model.decoder.layers[-1]
    assert (len(model.encoder.layers), len(model.decoder.layers), layer.fc1.in_features, layer.fc1.out_features,
            layer.self_attn.num_heads) == (24, 24, 512, 1024, 4)


def test_bad_input_is_one_line(tmp_path):
    for args, words in ((["PRESET=huge", "DRY_RUN=1"], "no frontier preset 'huge'"),
                        (["PRESET=tiny", "DRY_RUN=1", "SCHEMES=post_ln,nope"], "unknown scheme 'nope'"),
                        (["PRESET=tiny", f"ARGS=dataset.data_bin={tmp_path / 'none'}"], "holds no prepared data")):
        proc = make(*args, f"RUN_ROOT={tmp_path}", timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("normpos: error:")]
        assert proc.returncode != 0 and len(errors) == 1 and words in errors[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
