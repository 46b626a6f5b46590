"""The converged reproduction (issue 25): the convergence rule on built series and on fairseq's own log lines,
the CPU preset's dry run (its plan, projection and commands), and the whole pipeline at the tiny preset, whose
runs' endings are checked against the rule applied here, independently, to each run's metrics.jsonl."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from normpos.experiment.convergence import CONVERGED, HIT_MAX, IMPROVING, verdict
from normpos.experiment.watch import Watcher

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def make(*args, timeout=600):
    return subprocess.run(["make", "-s", "--no-print-directory", "reproduce-multi30k", f"PY={sys.executable}", *args],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_rule_converged_when_the_best_loss_gained_less_than_the_threshold_over_the_window():
    # best after epoch 3: 6.00; after epoch 6: 5.99 -> gained 0.01 < 0.02 over the last 3 epochs
    v = verdict([9.0, 7.0, 6.0, 6.05, 5.99, 6.01], window=3, min_gain_bits=0.02, max_epoch=30)
    assert (v.state, v.epoch) == (CONVERGED, 6) and v.gain_bits == pytest.approx(0.01)


def test_rule_still_improving_and_too_few_epochs():
    assert verdict([9.0, 7.0, 6.0, 5.5, 5.2], 3, 0.02, 30).state == IMPROVING  # 7.0 -> 5.2 over 3 epochs
    assert verdict([9.0, 9.0, 9.0], 3, 0.02, 30).state == IMPROVING  # needs window + 1 epochs to judge
    assert verdict([9.0, 9.0, 9.0, 9.0], 0, 0.02, 30).state == IMPROVING  # window 0: the rule is off


def test_rule_hit_the_maximum_while_improving_but_converged_wins_at_the_maximum():
    assert verdict([9.0, 8.0, 7.0, 6.0], 3, 0.02, max_epoch=4).state == HIT_MAX
    assert verdict([9.0, 8.0, 8.0, 8.0], 2, 0.02, max_epoch=4).state == CONVERGED
    # a stalled run (Post-LN without warm-up) converges at its high loss
    assert verdict([8.94, 8.93, 8.94, 8.935], 3, 0.02, 30).state == CONVERGED
    with pytest.raises(ValueError):
        verdict([9.0, None], 3, 0.02)


def valid_line(epoch: int, loss: float, updates: int) -> str:
    return (f"2026-12-07 10:00:00 | INFO | valid | {{\"epoch\": {epoch}, \"valid_loss\": \"{loss}\", "
            f"\"valid_num_updates\": \"{updates}\"}}\n")


def test_watcher_applies_the_rule_to_fairseqs_valid_lines_and_a_resumed_runs_earlier_epochs():
    losses = [9.0, 7.0, 6.0, 6.01, 5.995, 5.99]
    watcher = Watcher(1.5, {}, converge_window=3, converge_min_bits=0.02)
    states = []
    for e, loss in enumerate(losses, 1):
        watcher.feed(valid_line(e, loss, 10 * e))
        states.append(watcher.converged is not None)
    assert states == [False, False, False, False, False, True]
    # resumed after epoch 5: the epochs before come from metrics.jsonl, the sixth from the log
    resumed = Watcher(1.5, dict(watcher.metrics), converge_window=3, converge_min_bits=0.02)
    resumed.metrics.pop(60)
    resumed.feed(valid_line(6, 5.99, 60))
    assert resumed.converged and "after epoch 6" in resumed.converged


def test_cpu_presets_dry_run_prints_the_plan_projection_and_one_command_per_run(tmp_path):
    proc = make("PRESET=cpu", "DRY_RUN=1", f"RUN_ROOT={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    preset = yaml.safe_load((REPO / "configs/converge/cpu.yaml").read_text())
    exp = yaml.safe_load((REPO / "configs/experiment/reproduce_cpu.yaml").read_text())
    s3, s4, b, e = preset["sec3"], preset["sec4"], preset["budget"], exp["train"]["max_epoch"]
    runs = len(s3["lrs"]) * len(s3["warmups"]) + len(s3["pre_ln_lrs"]) + 2 * len(s4["seeds"]) - 1
    minutes = runs * (e * (b["updates_per_epoch"] / b["updates_per_s"] + b["valid_seconds"]) + b["run_seconds"]) / 2 / 60
    assert minutes <= 150 == b["minutes"]
    assert f"{runs} runs, 2 at once" in proc.stdout and f"time: <= {minutes:.0f} min" in proc.stdout
    assert "budget 150 min: fits" in proc.stdout
    commands = [line for line in proc.stdout.splitlines() if "normpos.fairseq_run train" in line]
    assert len(commands) == len(set(commands)) == runs
    tokens, anneal = exp["train"]["max_tokens"], exp["schedule"]["anneal_epoch"]
    assert all(f"--max-epoch {e} " in c and f"--max-tokens {tokens} " in c and "--encoder-embed-dim 64" in c
               for c in commands)
    for lr in s3["lrs"]:
        for w in s3["warmups"]:
            assert sum(f"--lr {float(lr)} " in c and f"--warmup-updates {w} " in c and "post_ln" in c for c in commands) >= 1
    pre = [c for c in commands if "normpos_iwslt_de_en_pre_ln" in c]
    assert len(pre) == len(s4["seeds"]) + 1 and all(f"--lr-scheduler normpos_step_once --anneal-epoch {anneal} " in c for c in pre)
    assert not list(tmp_path.rglob("status.json"))


@pytest.mark.slow
def test_tiny_preset_trains_to_the_rule_writes_the_folder_and_reuses_its_runs(tiny_bin, tmp_path):
    out, root = tmp_path / "out", tmp_path / "runs"
    args = ["PRESET=tiny", f"RUN_ROOT={root}", f"REPRODUCE_ARGS=--out {out} --frontier {tmp_path / 'none'}",
            f"ARGS=dataset.data_bin={tiny_bin} dataset.ref_dir={tiny_bin.parent / 'ref'}"]
    proc = make(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"time: <= \d+ min", proc.stdout) and "[reproduce 5/5]" in proc.stdout
    exp = yaml.safe_load((REPO / "configs/experiment/reproduce_tiny.yaml").read_text())["train"]
    folders = sorted(p.parent for p in root.rglob("status.json"))
    assert len(folders) == 5
    capped = []
    for folder in folders:
        status = json.loads((folder / "status.json").read_text())
        if status["status"] != "finished":
            continue
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
        losses = [r["valid_loss"] for r in sorted(rows, key=lambda r: r["num_updates"])]
        # the rule, by hand: converged at the first epoch e > window whose best gained < min over the window
        w, m = exp["converge_window"], exp["converge_min_bits"]
        stop = next((e for e in range(w + 1, len(losses) + 1) if min(losses[:e - w]) - min(losses[:e]) < m), None)
        if stop is None:
            assert len(losses) == exp["max_epoch"] and status["reason"] == "", (folder, losses, status)
            capped.append(min(losses[:-w]) - min(losses))  # what the README says it still gained
        else:
            assert len(losses) == stop and status["reason"].startswith("converged"), (folder, losses, status)
        assert (folder / "score.json").is_file()
    readme = (out / "README.md").read_text()
    # the table's title says how the runs ended (the rule's count), not that they converged
    n_converged = len(folders) - len(capped) - sum(
        json.loads((f / "status.json").read_text())["status"] != "finished" for f in folders)
    assert (out / "table.md").read_text().splitlines()[0].endswith(
        f"until converged or {exp['max_epoch']} epochs: {n_converged} of 5 runs converged): test BLEU per configuration")
    assert f"{n_converged} of 5 runs met the convergence rule" in readme
    assert "by `make reproduce-multi30k PRESET=tiny" in (out / "table.md").read_text()  # its maker, title and all
    assert "make reproduce-multi30k PRESET=tiny" in readme and "## How each run ended" in readme
    said = re.findall(r"\*\*hit the maximum\*\* \(\d+ epochs\): best valid loss still improved ([0-9.]+) bits", readme)
    assert sorted(float(x) for x in said) == pytest.approx(sorted(capped), abs=6e-4)
    # the time the runs took comes from their own records, so a re-render by a later invocation keeps it
    span = re.search(r"The runs trained from \S+ \S+ to their last end ([0-9.]+) min later, at commit (\w+)", readme)
    assert span and 0 < float(span.group(1)) < 30 and span.group(2) == json.loads(
        (folders[0] / "run.json").read_text())["commit"][:7]
    assert "make frontier PRESET=cpu SCHEMES=post_ln,pre_ln DEPTHS=1" in readme  # no frontier map given
    # the comparison with the paper quotes table.csv's sacreBLEU means, and its verdict follows them
    with open(out / "table.csv", newline="") as f:
        bleu = {row["config"]: float(row["sacrebleu_mean"]) for row in csv.DictReader(f) if row["sacrebleu_mean"]}
    none = next(v for k, v in bleu.items() if k.startswith("post_ln") and "_wu-1_" in k)
    warm = next(v for k, v in bleu.items() if k.startswith("post_ln") and "_wu-2_" in k)
    line = next(x for x in readme.splitlines() if x.startswith("- **Post-LN without warm-up ends below"))
    assert f"{none:.2f} without against {warm:.2f} with W 2" in line
    assert f"**{'agrees' if warm > none else 'disagrees'}**" in line
    assert "- **Pre-LN without warm-up reaches Post-LN with warm-up**" in readme
    for name in ("table.md", "table.csv", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    # a run of another plan below the same run root (an earlier batch size's): left out of the table, and named
    stray = folders[0].parent.parent / "stray_L1_00000000" / "seed-1"
    shutil.copytree(folders[0], stray)
    info = json.loads((stray / "run.json").read_text())
    (stray / "run.json").write_text(json.dumps({**info, "config": "stray_L1_00000000"}))
    again = make(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(reused)") == 5
    assert "stray" not in (out / "table.csv").read_text()
    assert "Left out: runs below the run root" in (out / "README.md").read_text() and "`stray_L1_00000000`" in \
        (out / "README.md").read_text()


def test_the_cross_check_says_whether_the_100_update_verdict_orders_the_finished_runs():
    from normpos.converge.crosscheck import verdict as orders

    def cell(kind, bleu):
        return {"frontier": kind, "test_bleu": bleu}

    held = orders([cell("trains", 30.1), cell("trains", 28.0), cell("stalls", 12.5), cell("stalls", None)])
    assert held.startswith("**The 100-update verdict orders") and ">= 28.00" in held and "<= 12.50" in held
    broken = orders([cell("trains", 30.1), cell("stalls", 31.0)])  # a stalled start that recovered
    assert "does not order" in broken and "<= 31.00" in broken
    assert "no ordering to check" in orders([cell("trains", 30.1), cell("trains", 29.0)])
