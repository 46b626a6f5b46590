"""``python -m normpos.theory`` with a record already in ``--out`` (``normpos.theory.record``, issue 26): one more
scheme measures only that scheme's models and merges them; the same call again measures nothing and leaves the
folder byte for byte; a record of other settings is refused in one line. The merged rows of the new scheme
must equal those of the same scheme measured alone into an empty folder (an independent measurement)."""

import csv
import json

from test_theory_claims import data_dir, one_thread  # noqa: F401  (the same fixtures: real data, one thread)
from test_theory_cli import TINY

from normpos.theory import cli

SMALL = ["--depths", "1", "2", "--seeds", "1", "--theory-depths", "--per-layer-depth", "0", "--max-tokens", "512",
         "--model-args", TINY, "--no-progress"]
FILES = ("measurements.csv", "run.json", "report.md", "fig3_schemes_xavier.png")


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_more_scheme_measures_only_it_and_a_record_of_other_settings_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "record"
    assert cli.main(["--schemes", "post_ln", "pre_ln", *SMALL, "--out", str(out)]) == 0
    before = read(out / "measurements.csv")

    assert cli.main(["--schemes", "post_ln", "pre_ln", "rezero", *SMALL, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "4 of the 6 models asked for are in" in said and "measuring 2" in said
    merged = read(out / "measurements.csv")
    assert merged[:len(before)] == before  # the record's rows, untouched, first
    alone = tmp_path / "alone"
    assert cli.main(["--schemes", "rezero", *SMALL, "--out", str(alone)]) == 0
    assert merged[len(before):] == read(alone / "measurements.csv")
    meta = json.loads((out / "run.json").read_text())
    assert meta["options"]["schemes"] == ["post_ln", "pre_ln", "rezero"]
    assert [(s["schemes_measured"], s["models_measured_now"]) for s in meta["sessions"]] == \
        [(["post_ln", "pre_ln"], 4), (["rezero"], 2)]
    report = (out / "report.md").read_text()
    assert all(f"| `{s}`" in report for s in ("post_ln", "pre_ln", "rezero"))
    assert "- Measured in 2 invocations, merged into one record: `post_ln`, `pre_ln` at" in report

    # the same call again: nothing to measure, every file as it was
    saved = {name: (out / name).read_bytes() for name in FILES}
    assert cli.main(["--schemes", "rezero", *SMALL, "--out", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in FILES} == saved

    # other settings (2 seeds): refused in one line, nothing written
    capsys.readouterr()
    argv = ["--schemes", "deepnorm", *SMALL, "--out", str(out)]
    argv[argv.index("--seeds") + 1] = "2"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("normpos.theory: error: ") and "seeds 1 (this command: 2)" in err[0]
    assert {name: (out / name).read_bytes() for name in FILES} == saved
