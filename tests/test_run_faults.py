"""Faults a long sweep meets, through the sweep app with real fairseq on a tiny corpus (issue 11, items 2 and 6):
a checkpoint_last.pt truncated by a kill or a full disk (fairseq copies it in place), an empty one with no
good checkpoint beside it under Admin (whose profiling keys on that file), a disk that fills up mid-run, and a
read-only run folder.

The update count a checkpoint holds is read with torch.load, what fairseq resumed from with fairseq's own
"Loaded checkpoint ... (epoch E @ U updates)" line; full and read-only disks are real tmpfs mounts (skipped,
with the reason, where mounting is not permitted)."""

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pytest

from conftest import REPO
from test_experiment_runs import ENV, metrics, run_dirs, sweep_argv

pytestmark = pytest.mark.slow

SAVE_EVERY_5 = "train.extra_args=[--validate-interval-updates,5,--save-interval-updates,5]"
# Admin (Post-LN with profiled omegas): its profiling keys on whether checkpoint_last.pt exists (schemes/admin.py)
RESUMED = ["hydra.sweeper.params.variant=postln_constant", "model.scheme=admin", "train.max_update=20", SAVE_EVERY_5]


def stored_updates(path: Path) -> Optional[int]:
    """The update count fairseq's trainer restores from a checkpoint (its optimizer_history); None when the file
    does not load. Our own test checkpoints: a full unpickle is fine."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None
    return state["optimizer_history"][-1]["num_updates"]


def validated_at(log: str):
    """The update counts of fairseq's own "valid" lines in a piece of train.log."""
    return [int(n) for n in re.findall(r'"valid_num_updates": "(\d+)"', log)]


def truncate(path: Path) -> bytes:
    """Cut a file to half its size, as a kill during fairseq's in-place copy does; return what is left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def sweep(root: Path, *overrides: str, tiny_bin: Path) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_argv(tiny_bin, root, *overrides), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)


def start_sweep(root: Path, *overrides: str, tiny_bin: Path) -> subprocess.Popen:
    return subprocess.Popen(sweep_argv(tiny_bin, root, *overrides), cwd=REPO, env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def killed_run(tiny_bin, tmp_path_factory) -> Path:
    """A run root whose only run (Admin, tiny) was killed (SIGKILL, sweep and fairseq) after its interval
    checkpoints at 5 and 10 updates were written."""
    root = tmp_path_factory.mktemp("killed")
    proc = start_sweep(root, *RESUMED, tiny_bin=tiny_bin)

    def has_two_interval_checkpoints():
        dirs = run_dirs(root)
        return bool(dirs) and (dirs[0] / "checkpoints" / "checkpoint_1_10.pt").exists() and \
            (dirs[0] / "metrics.jsonl").exists() and len(metrics(dirs[0])) >= 2

    try:
        wait_for(has_two_interval_checkpoints, "the run made two interval checkpoints")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    (directory,) = run_dirs(root)
    assert not (directory / "status.json").exists()  # killed: no final status
    return root


def run_dir_of(tiny_bin: Path, root: Path, *overrides: str) -> Path:
    """The run directory the sweep app gives a configuration, from the same overrides (Hydra's compose)."""
    from hydra import compose, initialize_config_dir
    from normpos.experiment import command
    from normpos.experiment.schema import validate

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        argv = sweep_argv(tiny_bin, root, *overrides)
        cfg = compose("train", overrides=argv[argv.index("-m", 3) + 1:])  # what follows "python -m normpos.sweep -m"
    return command.run_dir(validate(cfg))


def copy_of(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, symlinks=True)
    (directory,) = run_dirs(dest)
    return directory


def test_truncated_last_checkpoint_resumes_from_the_newest_good_one(killed_run, tiny_bin, tmp_path):
    directory = copy_of(killed_run, tmp_path / "root")
    folder = directory / "checkpoints"
    # the kill may itself have cut a checkpoint that fairseq was copying in place (None: does not load)
    updates = {p.name: stored_updates(p) for p in folder.glob("*.pt")}
    intervals = sorted((u, name) for name, u in updates.items()
                       if u is not None and re.fullmatch(r"checkpoint_\d+_\d+\.pt", name))
    assert len(intervals) >= 2, updates
    target, target_name = intervals[-2]  # damage everything newer: the rows after it must be dropped and re-logged
    damaged = {name: truncate(folder / name) for name, u in updates.items()
               if u is None or u > target or name == "checkpoint_last.pt"}
    before = [r for r in metrics(directory) if r["num_updates"] <= target]
    assert len(metrics(directory)) > len(before)  # the killed run validated after the resume point

    done = sweep(tmp_path / "root", *RESUMED, tiny_bin=tiny_bin)
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads((directory / "status.json").read_text())
    assert status["status"] == "finished"
    assert re.search(rf"resumed from {target_name} \(epoch \d+ @ {target} updates\)", status["recovered"])
    assert "recovered: checkpoint_last.pt did not load" in done.stdout
    log = (directory / "train.log").read_text()
    assert f"recovered: {status['recovered']}" in log
    resumed = log.split("recovered:")[-1]
    loaded = re.findall(r"Loaded checkpoint \S+ \(epoch \d+ @ (\d+) updates\)", resumed)
    assert loaded == [str(target)]  # fairseq's own word for where it resumed
    rows = metrics(directory)
    numbers = [r["num_updates"] for r in rows]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 20  # each validation once, in order
    assert [r for r in rows if r["num_updates"] <= target] == before  # rows before the resume point kept as they were
    assert [n for n in numbers if n > target] == validated_at(resumed)  # the rest: what the resumed training logged
    for name, data in damaged.items():  # kept aside, byte for byte, where no tool reads them
        assert (folder / (name + ".damaged")).read_bytes() == data
    assert not list(folder.glob("*.pt.damaged-*"))


def test_a_loading_checkpoint_is_left_alone_and_a_tie_goes_to_the_interval_checkpoint(killed_run, tmp_path):
    from normpos.experiment.checkpoints import repair_resume_point

    directory = copy_of(killed_run, tmp_path / "root")
    folder = directory / "checkpoints"
    updates = {p.name: stored_updates(p) for p in folder.glob("checkpoint_*_*.pt")}
    newest = max((u, name) for name, u in updates.items() if u is not None)[1]
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):  # both as fairseq copies them: same update count
        shutil.copyfile(folder / newest, folder / name)
    listing = sorted(p.name for p in folder.iterdir())
    assert repair_resume_point(directory) is None
    assert sorted(p.name for p in folder.iterdir()) == listing  # nothing renamed, nothing added

    truncate(folder / "checkpoint_last.pt")
    note = repair_resume_point(directory)
    assert f"resumed from {newest} (epoch " in note  # not checkpoint_best.pt, which holds the same update count
    assert filecmp.cmp(folder / "checkpoint_last.pt", folder / newest, shallow=False)
    assert all(r["num_updates"] <= updates[newest] for r in metrics(directory))


def test_no_good_checkpoint_restarts_cleanly_and_admin_profiles_again(killed_run, tiny_bin, tmp_path):
    directory = copy_of(killed_run, tmp_path / "root")
    folder = directory / "checkpoints"
    damaged = {p.name: truncate(p) for p in folder.glob("*.pt")}
    (folder / "checkpoint_last.pt").write_bytes(b"")  # an empty file counts as damaged too
    damaged["checkpoint_last.pt"] = b""
    # no profile and a checkpoint_last.pt: Admin would skip profiling and wait for omegas from the checkpoint
    (folder / "admin_profile.json").unlink()

    done = sweep(tmp_path / "root", *RESUMED, tiny_bin=tiny_bin)
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads((directory / "status.json").read_text())
    assert status["status"] == "finished"
    assert "checkpoint_last.pt did not load (empty file) and no other checkpoint does; restarted from update 0" \
        in status["recovered"]
    after = (directory / "train.log").read_text().split("recovered:")[-1]
    assert "Loaded checkpoint" not in after and "No existing checkpoint found" in after  # fairseq started afresh
    assert "Admin: profiled on 1 train batch(es)" in after
    profile = json.loads((folder / "admin_profile.json").read_text())
    assert profile["scheme"] == "admin" and len(profile["sublayers"]) == 2 * 2 + 2 * 3  # encoder 2x2, decoder 2x3
    numbers = [r["num_updates"] for r in metrics(directory)]
    assert numbers == validated_at(after) and numbers[-1] == 20  # every row from the new training, each once
    for name, data in damaged.items():
        assert (folder / (name + ".damaged")).read_bytes() == data


@contextmanager
def tmpfs(path: Path, options: str):
    """A real small file system at ``path`` (skips the test, with the reason, where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # still busy: detach it


def fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its file system has no space left."""
    block = b"\0" * (1 << 20)
    with open(folder / "filler", "wb", buffering=0) as f:  # unbuffered: a short write, then ENOSPC
        try:
            while True:
                f.write(block)
        except OSError as err:
            assert err.errno == 28, err  # ENOSPC


def error_lines(text: str):
    return [line for line in text.splitlines() if line.startswith("normpos: error:")]


def test_full_disk_fails_the_run_keeps_its_checkpoint_and_the_sweep_goes_on(tiny_bin, tmp_path):
    with tmpfs(tmp_path / "disk", "size=64m") as root:
        first, second = (run_dir_of(tiny_bin, root, f"variant={v}", "train.max_update=40", SAVE_EVERY_5)
                         for v in ("preln_constant", "postln_constant"))
        proc = start_sweep(root, "variant=preln_constant,postln_constant", "train.max_update=40",
                           SAVE_EVERY_5, tiny_bin=tiny_bin)
        try:
            # fairseq logs "Saved checkpoint" once the checkpoint and its copies (best, last) are complete
            wait_for(lambda: "Saved checkpoint" in (first / "train.log").read_text()
                     if (first / "train.log").exists() else False, "the first checkpoint")
            fill(root)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        assert "Traceback" not in out + err, (out + err)[-3000:]
        errors = error_lines(err)
        assert len(errors) == 2, err[-3000:]  # one line per run: the sweep went on to the second
        assert errors[0].startswith(f"normpos: error: [{first}] failed:") and "No space left on device" in errors[0]
        assert errors[1].startswith(f"normpos: error: [{second}] failed:") and "No space left on device" in errors[1]
        for directory in (first, second):  # nothing claims an outcome it did not reach
            status = directory / "status.json"
            assert not status.exists() or json.loads(status.read_text())["status"] == "failed"
        last = first / "checkpoints" / "checkpoint_last.pt"
        assert (stored_updates(last) or 0) >= 5  # the last good checkpoint survived the full disk, and loads
        assert not list((first / "checkpoints").glob("*.pt.tmp"))  # fairseq's half-written save: removed
        # the sweep's outcome lines may not fit on the full disk either: the summary still says so, exit 1
        assert proc.returncode == 1 and "sweep: " in out and ("2 failed" in out or "left no outcome" in out), out[-2000:]


def test_fairseq_failing_to_write_a_checkpoint_is_recorded_with_the_reason(tiny_bin, tmp_path):
    # only the checkpoint folder is full: fairseq's save fails, our own files are written
    overrides = ("variant=preln_constant", "train.max_update=5")
    directory = run_dir_of(tiny_bin, tmp_path, *overrides)
    with tmpfs(directory / "checkpoints", "size=1m") as folder:
        fill(folder)
        done = sweep(tmp_path, *overrides, tiny_bin=tiny_bin)
        assert run_dirs(tmp_path) == [directory]
        status = json.loads((directory / "status.json").read_text())
        assert status["status"] == "failed"
        # fairseq's last lines are torch's "unexpected pos" error: the OSError above them is the reason
        assert status["reason"].startswith("exit code 1: [Errno 28] No space left on device / "), status["reason"]
        assert f"[{directory}] failed exit code 1: [Errno 28] No space left on device" in done.stdout
        assert "Traceback" not in done.stdout + done.stderr  # fairseq's traceback is in train.log only
        assert "Traceback" in (directory / "train.log").read_text()


def test_read_only_run_root_is_one_line_and_writes_nothing(tiny_bin, tmp_path):
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    with tmpfs(tmp_path / "ro", "ro,size=1m") as root:
        done = sweep(root, "train.max_update=5", tiny_bin=tiny_bin)
        assert done.returncode == 2
        assert error_lines(done.stderr) == [f"normpos: error: run.root {root} cannot be written: Read-only file system"]
        assert "Traceback" not in done.stdout + done.stderr
        assert not list(root.iterdir())

    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == before  # nothing written into the checkout either
    assert not (REPO / "outputs").exists() and not (REPO / "multirun").exists()  # Hydra's default folders
    assert [p.name for p in tmp_path.iterdir()] == ["ro"]
