"""``python -m normpos.theory`` end to end on a tiny model: CSV, figures and a report whose numbers are the
CSV's; bad input as one line; resuming; a checkpoint measured like a freshly built model; and models
built with the seed as fairseq-train builds them."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from test_theory_claims import data_dir, one_thread  # noqa: F401  (the same fixtures: real data, one thread)

from normpos.theory import cli, sweep
from normpos_fairseq.schemes import scheme_names
from normpos.theory import model as theory_model
from normpos.theory.measure import batches, measure_gradients, measure_model

TINY = ("--encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 "
        "--encoder-attention-heads 2 --decoder-attention-heads 2")


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    argv = ["--depths", "1", "2", "--seeds", "2", "--batches", "2", "--per-layer-depth", "2",
            "--theory-depths", "2", "--theory-seeds", "1", "--max-tokens", "1024", "--model-args", TINY,
            "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    # current fairseq's init as a check beside the main run (what `make gradnorm-checks` does)
    check = ["--inits", "torch_default", "--theory-depths", "--out", str(out / "checks" / "current-fairseq-init")]
    assert cli.main([*argv, *check]) == 0
    return out


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_every_measurement_and_a_report(run_dir):
    assert {p.name for p in run_dir.iterdir()} == {
        "measurements.csv", "run.json", "report.md", "lemma2.png", "fig3_xavier.png", "fig3_theory.png", "checks"}
    rows = read_rows(run_dir / "measurements.csv")
    settings = {r["setting"] for r in rows}
    # the default: the paper's init and the theory's assumptions; current fairseq's init is the check's
    assert settings == {f"{s}/{i}" for s in ("post_ln", "pre_ln") for i in ("xavier", "theory")}
    rows += read_rows(run_dir / "checks" / "current-fairseq-init" / "measurements.csv")
    grads = [r for r in rows if r["quantity"] == "grad_norm"]
    # 2 batches per model; depth 2 measures every layer's fc1 and fc2, depth 1 only the last fc2
    per_model = {}
    for r in grads:
        per_model.setdefault((r["setting"], r["depth"], r["seed"]), set()).add((r["stack"], r["layer"], r["param"]))
    assert per_model[("post_ln/xavier", "1", "1")] == {("encoder", "1", "fc2"), ("decoder", "1", "fc2")}
    assert len(per_model[("pre_ln/torch_default", "2", "2")]) == 8
    assert {r["batch"] for r in grads} == {"0", "1"}
    # Lemma 2 rows carry the predictions; Post-LN's paper value is 1.5 d
    post = [r for r in rows if r["setting"] == "post_ln/theory" and r["quantity"] == "ffn_ln_input_sq"]
    assert post and all(float(r["paper_low"]) == 1.5 * 32 for r in post)


def test_report_numbers_come_from_the_csv(run_dir):
    rows = read_rows(run_dir / "measurements.csv")
    report = (run_dir / "report.md").read_text()
    # Fig. 3(c,d) cell: Post-LN decoder, 2-2, per-seed mean over batches, then mean ± std over seeds
    per_seed = {}
    for r in rows:
        if (r["setting"], r["quantity"], r["stack"], r["depth"], r["layer"], r["param"]) == (
                "post_ln/xavier", "grad_norm", "decoder", "2", "2", "fc2"):
            per_seed.setdefault(r["seed"], []).append(float(r["value"]))
    values = [np.mean(v) for v in per_seed.values()]
    assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" in report
    assert "python -m normpos.theory --depths 1 2" in report and "Git commit" in report


def test_report_compares_the_inits_through_the_check(run_dir):
    # the main report is rewritten when a check lands beside it, and takes the setting it lacks from it
    report = (run_dir / "report.md").read_text()
    assert "with current fairseq's init" in report and "The paper's init changes it by" in report
    assert "`current-fairseq-init`" in report


def test_a_check_that_changed_more_than_the_init_is_not_compared(run_dir, tmp_path):
    import json
    import shutil

    from normpos.theory import report

    out = tmp_path / "main"
    shutil.copytree(run_dir, out)
    rows, meta = report.load(out)
    compared = report.with_check_settings(rows, meta, report.load_checks(out))
    assert any(r["setting"].endswith("/torch_default") for r in compared)
    run_json = out / "checks" / "current-fairseq-init" / "run.json"
    changed = json.loads(run_json.read_text())
    changed["options"]["dropout"] = 0.0  # as checks/dropout-0: another measurement, not another init
    run_json.write_text(json.dumps(changed))
    compared = report.with_check_settings(rows, meta, report.load_checks(out))
    assert not any(r["setting"].endswith("/torch_default") for r in compared)


def machine_paths() -> list:
    """The absolute paths a record must not name: the checkout and the shared data folder (the checkout's
    cache of binarized data lies inside the checkout)."""
    from normpos.theory import data

    return [str(REPO), str(data.shared_data().resolve())]


def test_records_name_data_by_name_and_checksum_not_by_this_machines_paths(run_dir):
    import hashlib
    import json

    from normpos.theory import data

    for name in ("run.json", "report.md"):
        text = (run_dir / name).read_text()
        assert not [p for p in machine_paths() if p in text], name
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["data_dir"] == "data/theory-cache/iwslt14"
    valid_de = data.shared_data() / "iwslt14" / "fairseq-prepared-partial" / "valid.de"
    digest = hashlib.sha256(valid_de.read_bytes()).hexdigest()  # independently of data.checksums
    assert meta["data_sha256"]["shared:iwslt14/fairseq-prepared-partial/valid.de"] == digest
    assert digest[:16] in (run_dir / "report.md").read_text()


def test_report_only_makes_an_old_record_portable_and_keeps_every_number(run_dir, tmp_path):
    import json
    import shutil

    from normpos.theory import data

    out = tmp_path / "old"
    shutil.copytree(run_dir, out)
    meta = json.loads((out / "run.json").read_text())
    # a record as the measuring code wrote it before records were portable
    source = data.resolve("iwslt14")
    meta["data"] = f"IWSLT14 de-en valid (... {data.shared_data() / 'iwslt14'}); joined dictionary"
    meta["data_dir"] = str(source.bin_dir)
    meta["options"]["out"] = str(out)
    del meta["data_sha256"]
    (out / "run.json").write_text(json.dumps(meta))
    (out / "report.md").write_text(
        (run_dir / "report.md").read_text().replace("data/theory-cache", str(REPO / "data/theory-cache")))
    before = (out / "measurements.csv").read_bytes()
    assert cli.main(["--report-only", "--out", str(out)]) == 0
    assert (out / "measurements.csv").read_bytes() == before
    for name in ("run.json", "report.md"):
        assert not [p for p in machine_paths() if p in (out / name).read_text()], name
    portable = json.loads((out / "run.json").read_text())
    assert portable["data_sha256"] == data.checksums(source) and portable["data_dir"] == "data/theory-cache/iwslt14"
    # every line but the provenance lines is what the measuring run wrote: the numbers come from the CSV
    fresh = [l for l in (run_dir / "report.md").read_text().splitlines() if not l.startswith("- Data:")]
    assert [l for l in (out / "report.md").read_text().splitlines() if not l.startswith("- Data:")] == fresh
    # the same named source now giving other data is refused, not silently recorded
    meta["dictionary_types"] += 1
    (out / "run.json").write_text(json.dumps(meta))
    assert cli.main(["--report-only", "--out", str(out)]) == 2


def test_every_scheme_gets_the_compact_figure_and_its_slope(data_dir, tmp_path):
    # beyond Post-LN and Pre-LN: one figure with a line per scheme, a table with each scheme's slope
    out = tmp_path / "schemes"
    argv = ["--schemes", "post_ln", "pre_ln", "rezero", "deepnorm", "--depths", "1", "2", "3", "--seeds", "2",
            "--theory-depths", "--per-layer-depth", "0", "--max-tokens", "512", "--model-args", TINY,
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    assert (out / "fig3_schemes_xavier.png").is_file() and not (out / "fig3_xavier.png").exists()
    rows = [r for r in read_rows(out / "measurements.csv") if r["quantity"] == "grad_norm"
            and r["setting"] == "deepnorm/xavier" and r["stack"] == "encoder" and r["layer"] == r["depth"]]
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[int(r["depth"])] = float(r["value"])
    slopes = [np.polyfit(np.log([1, 2, 3]), np.log([d[1], d[2], d[3]]), 1)[0] for d in by_seed.values()]
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("| `deepnorm`"))
    assert f"{np.mean(slopes):.2f} ± {np.std(slopes, ddof=1):.2f}" in line and "Wang et al. 2022" in line


def test_bad_input_is_one_line_from_the_command_line():
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}:{REPO / 'scripts'}"}
    done = subprocess.run([sys.executable, "-m", "normpos.theory", "--schemes", "mid_ln"], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert done.returncode == 2
    valid = ", ".join(scheme_names())
    assert done.stderr == f"normpos.theory: error: unknown normalization scheme 'mid_ln'; valid: {valid}\n"


@pytest.mark.parametrize("argv, message", [
    (["--inits", "kaiming"], "unknown FFN init 'kaiming'; valid: xavier, torch_default"),
    (["--depths", "0"], "--seeds, --batches, --max-tokens and every depth must be at least 1"),
    (["--data", "/nonexistent"],
     "--data /nonexistent: neither iwslt14, multi30k nor a fairseq data folder with dict.de.txt"),
    (["--checkpoint", "/nonexistent.pt"], "checkpoint /nonexistent.pt does not exist"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"normpos.theory: error: {message}\n"


def test_missing_shared_data_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NORMPOS_SHARED_DATA", str(tmp_path))
    assert cli.main(["--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"normpos.theory: error: {tmp_path}/iwslt14/fairseq-prepared-partial/valid.de is absent "
        "(set NORMPOS_SHARED_DATA, or pass --data with a prepared fairseq folder)\n")


def test_partial_file_resumes_finished_jobs_only(tmp_path):
    job = sweep.Job(theory_model.Setting("post_ln"), depth=6, seed=1, batches=1, per_layer=False)
    other = sweep.Job(theory_model.Setting("pre_ln"), depth=6, seed=1, batches=1, per_layer=False)
    partial = sweep.PartialCSV(tmp_path / "p.csv")
    partial.add(job, [{"setting": "post_ln/xavier", "quantity": "loss", "value": "1.5"}])
    partial.close()
    with open(tmp_path / "p.csv", "a", newline="") as f:  # a job killed half-way: rows but no marker
        csv.writer(f).writerow([other.key, "pre_ln/xavier"] + [""] * 13 + ["loss", "2.0"])
    again = sweep.PartialCSV(tmp_path / "p.csv")
    again.close()
    assert set(again.done) == {job.key}
    assert again.done[job.key][0]["value"] == "1.5"


def test_seeded_build_is_reproducible_and_shares_no_state(dict_dir):
    """A cached config gives the same model as a fresh one: the seed alone decides the weights."""
    setting = theory_model.Setting("pre_ln", model_args=tuple(TINY.split()))
    first = theory_model.build(dict_dir, setting, 2, seed=5)[2].state_dict()
    theory_model._cfg_and_task.cache_clear()
    fresh = theory_model.build(dict_dir, setting, 2, seed=5)[2].state_dict()
    other = theory_model.build(dict_dir, setting, 2, seed=6)[2].state_dict()
    assert all(torch.equal(first[k], fresh[k]) for k in first)
    assert not torch.equal(first["encoder.layers.0.fc1.weight"], other["encoder.layers.0.fc1.weight"])


def test_checkpoint_is_measured_like_the_model_it_holds(data_dir, tmp_path):
    """Fig. 3(a) after warm-up reads a fairseq checkpoint; with dropout off its gradients are the model's."""
    setting = theory_model.Setting("post_ln", dropout=0.0, model_args=tuple(TINY.split()))
    cfg, task, model, criterion = theory_model.build(data_dir, setting, 2, seed=1)
    with torch.no_grad():
        model.decoder.layers[1].fc2.weight.mul_(3.0)  # stands in for training: not what a fresh build gives
    state = {"cfg": cfg, "model": model.state_dict(), "extra_state": {}, "last_optimizer_state": None,
             "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                                    "optimizer_name": "Adam", "lr_scheduler_state": {}, "num_updates": 4000}]}
    torch.save(state, tmp_path / "checkpoint_warm.pt")
    direct = measure_model(model, criterion, batches(task, cfg, model, 3, 2, 1024), per_layer=True)
    loaded = measure_gradients("post_ln", 0, 3, 2, data_dir=data_dir, checkpoint=tmp_path / "checkpoint_warm.pt",
                               per_layer=True, max_tokens=1024)
    assert loaded["depth"] == 2 and loaded["scheme"] == "post_ln"
    for key, value in direct["expected_grad_norm"].items():
        assert loaded["expected_grad_norm"][key] == pytest.approx(value, rel=1e-4)
