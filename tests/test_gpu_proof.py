"""``make gpu-proof`` on CPU at a tiny size: the GPU command's own code path (benchmark, packing trials with 1
and 2 concurrent fairseq-train runs, the 7-run grid through the sweep's command line, scoring, report,
results folder), checked against what fairseq, Hydra and the file system recorded; and the guards that keep
the proof from losing anything (its folders) or starting without its tools (wheels)."""

import csv
import filecmp
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NORMPOS_COMMIT": "given-by-the-test"}
EXPECTED_FILES = {"README.md", "bench.json", "packing.json", "machine.json", "runs.tar.gz", "table.md",
                  "curves.png", "speedup.png"}
GRID = {f"post_ln_adam_lr-{lr}_warmup-inverse-sqrt_wu-{wu}_L2" for lr in ("5e-4", "1e-3") for wu in (1, 500, 4000)} \
    | {"pre_ln_adam_lr-5e-4_step-once_L2"}


@pytest.fixture(scope="module")
def proof(tiny_bin, tmp_path_factory):
    """One tiny proof through make, as a GPU user starts it (PY= another interpreter, OUT set)."""
    base = tmp_path_factory.mktemp("proof")
    work, results, out = base / "scratch", base / "results", base / "out"
    args = (f"--tiny --packings 1 2 --data {tiny_bin} --max-tokens 800 --log-interval 1 --bench-updates 2 "
            f"--packing-window 2 --max-update 6 --override train.num_workers=0 --override eval.max_len_b=40 "
            f"--work {work} --results {results}")
    proc = subprocess.run(["make", "--no-print-directory", "gpu-proof", f"PY={sys.executable}", "BUDGET=1800",
                           f"GPU_PROOF_ARGS={args}"], cwd=REPO, env={**ENV, "OUT": str(out)},
                          capture_output=True, text=True, timeout=1800)
    return {"proc": proc, "work": work, "results": results, "out": out}


def tar_text(results: Path, suffix: str) -> str:
    """A file of runs.tar.gz by the end of its name (below the scratch folder's own name)."""
    with tarfile.open(results / "runs.tar.gz") as tar:
        (member,) = [m for m in tar.getmembers() if m.name.split("/", 1)[-1] == suffix]
        return tar.extractfile(member).read().decode("utf-8")


def tar_names(results: Path) -> list:
    with tarfile.open(results / "runs.tar.gz") as tar:
        return [m.name.split("/", 1)[-1] for m in tar.getmembers()]


def slug(config_name: str) -> str:
    """A run folder's configuration without the identity hash the sweep appends (``<slug>_<8 hex>``)."""
    return re.sub(r"_[0-9a-f]{8}$", "", config_name)


def grid_runs(results: Path) -> dict:
    """configuration slug -> its run folder inside runs.tar.gz."""
    found = {}
    for name in tar_names(results):
        match = re.fullmatch(r"(runs/multi30k/gpu_proof/([^/]+)/seed-1)/run\.json", name)
        if match:
            found[slug(match.group(2))] = match.group(1)
    return found


@pytest.mark.slow
def test_results_folder_holds_eight_small_files_and_out_has_the_same(proof):
    proc, results, out = proof["proc"], proof["results"], proof["out"]
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    assert "a. benchmark" in proc.stdout and "(setup took" not in proc.stdout  # the plan was printed first
    assert re.search(r"b\. packing: aggregate updates/s of 1 2 concurrent fairseq-train runs: \d+ s", proc.stdout)
    files = {p.name for p in results.iterdir()}
    assert files == EXPECTED_FILES
    assert all((results / name).stat().st_size <= 16 * 2 ** 20 for name in files)
    assert {p.name for p in out.iterdir()} == files
    assert all(filecmp.cmp(results / name, out / name, shallow=False) for name in files)
    names = tar_names(results)
    assert not [n for n in names if n.endswith(".pt") or "/checkpoints/" in n]  # no checkpoint travels
    machine = json.loads((results / "machine.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert machine["commit"].startswith(head) and machine["gpu"] is None and machine["torch"]


@pytest.mark.slow
def test_packing_numbers_are_fairseqs_own_speeds_from_the_logs(proof):
    """Each run's updates/s is recomputed here from the ``ups`` fairseq logged (its own timer), over the
    records packing.json names; the aggregate is their sum; the chosen budget is what every grid run got."""
    results = proof["results"]
    packing = json.loads((results / "packing.json").read_text())
    trials = {t["concurrent"]: t for t in packing["trials"]}
    assert set(trials) == {1, 2} and all(t["status"] == "measured" for t in trials.values())
    for k, trial in trials.items():
        assert len(trial["runs"]) == k
        for run in trial["runs"]:
            log = tar_text(results, f"packing/{run['log']}")
            rows = [json.loads(line.split("train_inner:", 1)[1]) for line in log.splitlines() if "train_inner:" in line]
            counted = [r for r in rows if run["first_update"] < int(r["num_updates"]) <= run["last_update"]]
            previous, updates, seconds = run["first_update"], 0, 0.0
            for r in counted:
                n = int(r["num_updates"]) - previous
                updates, seconds, previous = updates + n, seconds + n / float(r["ups"]), int(r["num_updates"])
            assert counted and updates == run["updates"] == run["last_update"] - run["first_update"]
            assert run["updates_per_s"] == pytest.approx(updates / seconds, abs=1e-4)
            assert '"valid_loss"' not in log  # trials train only: no validation in the measured time
        assert trial["aggregate_updates_per_s"] == pytest.approx(sum(r["updates_per_s"] for r in trial["runs"]), abs=1e-3)
    chosen = packing["chosen"]
    assert chosen["concurrent"] in trials and chosen["max_update"] <= 6
    runs = grid_runs(results)
    assert set(runs) == GRID
    for directory in runs.values():
        command = tar_text(results, f"{directory}/command.sh")
        assert f"--max-update {chosen['max_update']} " in command and "--fp16" not in command
        status = json.loads(tar_text(results, f"{directory}/status.json"))
        assert status["status"] == "finished" and status["num_updates"] == chosen["max_update"]
    if chosen["post_ln_jobs"] > 1:  # Hydra's joblib launcher says how many jobs it ran at a time
        sweep = tar_text(results, "grid/sweep-post-ln.log")
        assert f"Joblib.Parallel(n_jobs={chosen['post_ln_jobs']}," in sweep


@pytest.mark.slow
def test_sweeps_read_the_measured_runs_per_gpu_from_packing_json(proof, tmp_path):
    """packing.json is what `make sweep` packs by on this GPU model (normpos.experiment.devices reads it):
    the fewest concurrent runs within 5% of the fastest aggregate speed measured."""
    from normpos.experiment import devices

    packing = json.loads((proof["results"] / "packing.json").read_text())
    top = max(t["aggregate_updates_per_s"] for t in packing["trials"])
    assert packing["best_jobs_per_gpu"] == min(t["concurrent"] for t in packing["trials"]
                                               if t["aggregate_updates_per_s"] >= 0.95 * top)
    machine = json.loads((proof["results"] / "machine.json").read_text())
    assert packing["gpu"] == machine["gpu"]  # None here: no GPU model matches a CPU's proof
    (tmp_path / "test-gpu").mkdir()
    (tmp_path / "test-gpu" / "packing.json").write_text(json.dumps({**packing, "gpu": "Test GPU"}))
    assert devices.jobs_per_gpu(None, "test gpu", tmp_path)[0] == packing["best_jobs_per_gpu"]


@pytest.mark.slow
def test_table_has_a_row_per_grid_configuration_with_its_test_bleu(proof):
    results = proof["results"]
    rows = list(csv.DictReader(tar_text(results, "report/table.csv").splitlines()))
    assert {slug(r["config"]) for r in rows} == GRID
    runs = grid_runs(results)
    for row in rows:
        score = json.loads(tar_text(results, f"{runs[slug(row['config'])]}/score.json"))
        assert float(row["tok_bleu_mean"]) == pytest.approx(score["test_tok_bleu"])
    table = (results / "table.md").read_text().split("\n## ")[0]  # the main table, not the significance section
    assert sum(line.startswith("| Post-LN") or line.startswith("| Pre-LN") for line in table.splitlines()) == 7
    readme = (results / "README.md").read_text()
    assert readme.count("| finished |") == 7 and "Every part ran: see the outcomes below." in readme


@pytest.mark.slow
def test_bench_json_compares_ours_with_the_built_in_on_the_same_batches(proof):
    bench = json.loads((proof["results"] / "bench.json").read_text())
    assert list(bench["precisions"]) == ["fp32"] and bench["training_precision"] == "fp32"
    fp32 = bench["precisions"]["fp32"]
    assert fp32["rounds"] >= 1 and fp32["model_args"][:2] == ["--encoder-layers", "2"]
    for ours, built_in in fp32["pairs"].items():
        rate = fp32["models"][ours]["tokens_per_s"] / fp32["models"][built_in]["tokens_per_s"]
        assert fp32["ratios"][ours] == pytest.approx(rate, abs=2e-3)
        assert fp32["models"][ours]["peak_mib"] is None  # no GPU memory on CPU


def write_wheel(folder: Path, module: str) -> Path:
    """A minimal pure-Python wheel (PEP 427): one module, METADATA, WHEEL, RECORD."""
    dist = f"{module}-1.0.dist-info"
    path = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{module}.py", "VALUE = 42\n")
        whl.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        whl.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}/RECORD", "")
    return path


def test_missing_modules_are_installed_from_the_wheel_folder_with_pip(tmp_path, monkeypatch):
    from normpos.gpu_proof import wheels

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    (tmp_path / "whl").mkdir()
    wheel = write_wheel(tmp_path / "whl", "normpos_probe_module")
    installed = wheels.ensure_importable(tmp_path / "whl", tmp_path / "site", modules=("normpos_probe_module",))
    assert installed == [wheel.name]
    assert (tmp_path / "site" / "normpos_probe_module.py").is_file()
    child = subprocess.run([sys.executable, "-c", "import normpos_probe_module as m; print(m.VALUE)"],
                           capture_output=True, text=True, env=os.environ)
    assert child.stdout.strip() == "42"  # children find it through PYTHONPATH


def test_a_missing_module_without_wheels_is_one_clear_error(tmp_path):
    from normpos.gpu_proof import ProofError, wheels

    (tmp_path / "whl").mkdir()
    with pytest.raises(ProofError, match=r"cannot find normpos_no_such_module, and .*whl/ holds no wheels: "
                                         r"build them with ../shared/tools/gpu-wheelhouse"):
        wheels.ensure_importable(tmp_path / "whl", tmp_path / "site", modules=("normpos_no_such_module",))


def test_the_proof_refuses_folders_it_did_not_make_and_deletes_nothing(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    for flag in ("--work", "--results"):
        other = "--results" if flag == "--work" else "--work"
        proc = subprocess.run([sys.executable, "-m", "normpos.gpu_proof", "--budget", "100", "--tiny", flag, str(mine),
                               other, str(tmp_path / "free"), "--wheels", str(tmp_path)],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert re.fullmatch(rf"normpos: error: {mine} is not empty and not a proof's (scratch|results) folder: "
                            rf"choose another {flag}\n", proc.stderr)
        assert (mine / "keep.txt").read_text() == "mine"


def test_without_a_gpu_the_iwslt_size_proof_refuses_to_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "normpos.gpu_proof", "--work", str(tmp_path / "w"),
                           "--results", str(tmp_path / "r")], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("normpos: error: no CUDA GPU here: the IWSLT-size proof is for a GPU; on CPU run the tests' "
                           "size with --tiny (make gpu-proof GPU_PROOF_ARGS=--tiny)\n")
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()


def processes_mentioning(text: str) -> list:
    """Live processes whose command line contains ``text`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(entry.name)
        except OSError:
            continue
    return found


def test_a_terminated_proof_stops_its_children_and_still_writes_its_results(tiny_bin, tmp_path):
    work, results = tmp_path / "scratch", tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "normpos.gpu_proof", "--budget", "600", "--tiny", "--data", str(tiny_bin),
                             "--work", str(work), "--results", str(results)],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (work / "bench" / "bench-fp32.log").exists() and time.time() < deadline:
        time.sleep(0.2)  # the benchmark and the dry run have started
    assert processes_mentioning(str(work))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "normpos: error: interrupted (signal 15)" in err
    assert processes_mentioning(str(work)) == []  # nothing it started is left running
    readme = (results / "README.md").read_text()
    assert "| bench |" in readme and "interrupted" in readme and "Not every part ran" in readme
