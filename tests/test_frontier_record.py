"""The frontier's committed record as its cache (``normpos.frontier.record``, issue 26): a rerun on a fresh clone
(an empty run root) trains only what the results folder's ``runs.csv`` lacks, and writes a folder that keeps
every scheme of the record. Rows of other settings are not reused. Lrs added above the grid continue only the
columns whose climb is not over, checked on the committed CPU map itself.

"Fresh clone" here: every invocation gets its own empty ``RUN_ROOT``, so nothing can come from a run folder;
which runs trained is read from the run folders each invocation created.
"""

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from test_frontier import make, read_csv

pytestmark = pytest.mark.slow

CPU_RECORD = REPO / "results" / "multi30k" / "frontier-cpu"


def tiny(tiny_bin, out, root, *more):
    """One ``make frontier PRESET=tiny`` at depth 2 only (no warm-up rows: they are at depth 1), into ``out``."""
    proc = make("PRESET=tiny", "DEPTHS=2", f"RUN_ROOT={root}", f"FRONTIER_ARGS=--out {out}",
                f"ARGS=dataset.data_bin={tiny_bin} dataset.ref_dir={tiny_bin.parent / 'ref'}", *more)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def trained_in(root: Path):
    """(scheme, lr) of every run folder under ``root``, read from the folder names."""
    return sorted((s.parent.parent.name.split("_adam_")[0], s.parent.parent.name.split("_lr-")[1].split("_")[0])
                  for s in root.rglob("status.json"))


def test_a_new_scheme_and_added_lrs_train_only_what_the_record_lacks(tiny_bin, tmp_path):
    out = tmp_path / "out"
    tiny(tiny_bin, out, tmp_path / "root1", "SCHEMES=post_ln", "LRS=1e-2")
    first = read_csv(out / "runs.csv")
    assert [(r["scheme"], r["lr"], r["outcome"]) for r in first] == [("post_ln", "0.01", "trains")]  # tiny.yaml's bar
    # a run reused from its run folder (another results folder: no record to read) keeps the commit it trained at
    (info_path,) = (tmp_path / "root1").rglob("run.json")
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "commit": "0" * 40}))
    again = tiny(tiny_bin, tmp_path / "out-again", tmp_path / "root1", "SCHEMES=post_ln", "LRS=1e-2")
    assert "(0 trained now, 1 reused from their run folders" in again.stdout
    assert [r["commit"] for r in read_csv(tmp_path / "out-again" / "runs.csv")] == ["0" * 40]

    # one more scheme, on the whole grid (1e-2, 1e2): only its cells train; the folder keeps post_ln, whose
    # column has not been climbed onto 1e2 yet: its lr* is a bound and the notes say so
    proc = tiny(tiny_bin, out, tmp_path / "root2", "SCHEMES=pre_ln")
    assert trained_in(tmp_path / "root2") == [("pre_ln", "100"), ("pre_ln", "1e-2")]
    assert "reused from" in proc.stdout and "1 measured rows of the same settings" in proc.stdout
    rows = read_csv(out / "runs.csv")
    assert [r for r in rows if r["scheme"] == "post_ln" and r["outcome"] != "not run"] == first  # commit included
    assert [(r["scheme"], r["lr"]) for r in rows] == [("post_ln", "0.01"), ("post_ln", "100.0"), ("pre_ln", "0.01"),
                                                      ("pre_ln", "100.0")]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["schemes"] == ["post_ln", "pre_ln"] and (plan["from_record"], plan["trained_now"]) == (1, 2)
    post = next(r for r in read_csv(out / "frontier.csv") if r["scheme"] == "post_ln")
    assert (post["lr_star"], post["at_top"], post["notes"]) == ("0.01", "True", "not run yet (the climb goes on): 100")
    assert "`≥` marks a lr* at the top of the grid (a bound; or at the top of a column" in (out / "README.md").read_text()

    # every scheme: post_ln climbs on to 1e2, nothing else trains
    tiny(tiny_bin, out, tmp_path / "root3")
    assert trained_in(tmp_path / "root3") == [("post_ln", "100")]
    post = next(r for r in read_csv(out / "frontier.csv") if r["scheme"] == "post_ln")
    assert (post["lr_star"], post["at_top"], post["notes"]) == ("0.01", "False", "")

    # a row measured under other settings is not reused: another identity hash in its run folder, or a record
    # whose plan.json had another N
    from normpos.experiment.schema import validate
    from normpos.frontier import record
    from normpos.frontier.cli import settings
    from normpos.frontier.plan import load_preset
    from normpos.frontier.runner import compose_base

    base = compose_base(load_preset("tiny").experiment, [f"dataset.data_bin={tiny_bin}",
                                                          f"dataset.ref_dir={tiny_bin.parent / 'ref'}"])
    bar, now = plan["bar"], settings(validate(base))
    assert len(record.read(out, base, now, bar).found) == 4
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    slug = Path(next(r for r in rows if r["scheme"] == "pre_ln" and r["lr"] == "100.0")["run"]).parent.name
    (changed / "runs.csv").write_text((changed / "runs.csv").read_text().replace(slug, slug[:-8] + "00000000"))
    reuse = record.read(changed, base, now, bar)
    assert (len(reuse.found), reuse.left_out) == (3, 1) and "pre_ln" in reuse.why
    said = [x for x in record.words(reuse, changed) if x.startswith("frontier: not reusing")]
    assert said == [f"frontier: not reusing 1 rows of {changed}/runs.csv: {reuse.why}"]
    other = json.loads((changed / "plan.json").read_text())
    other["settings"]["max_update"] += 1
    (changed / "plan.json").write_text(json.dumps(other))
    reuse = record.read(changed, base, now, bar)
    assert not reuse.found and reuse.left_out == 4 and "max_update 7 -> 6" in reuse.why


def test_a_column_not_yet_climbed_onto_added_lrs_is_a_bound_and_says_so(tiny_bin, tmp_path):
    from normpos.frontier.extract import column_frontier

    lrs = [1e-2, 1e-1, 1.0]
    # climbed to 1e-1 only (the record's grid ended there): lr* 1e-1 is a bound, 1.0 is not run yet
    f = column_frontier(lrs, {0: {1: "trains"}, 1: {1: "trains"}}, 1, skip_after=2)
    assert (f.lr_star, f.at_top, f.skipped, f.not_yet) == (1e-1, True, [], [1.0])
    # two lrs in a row that did not train: the climb is over, the lr above was left out by the skip rule
    f = column_frontier([*lrs, 10.0], {0: {1: "trains"}, 1: {1: "stalls"}, 2: {1: "diverges"}}, 1, skip_after=2)
    assert (f.lr_star, f.at_top, f.skipped, f.not_yet) == (1e-2, False, [10.0], [])


def test_the_committed_cpu_map_is_reused_whole_and_added_lrs_continue_only_the_climbing_columns():
    """No training: the committed record of ``make frontier PRESET=cpu`` read under the current code and preset."""
    from normpos.frontier import plan as planning
    from normpos.frontier import record
    from normpos.frontier.cli import settings
    from normpos.frontier.runner import compose_base
    from normpos.experiment.schema import validate

    old = json.loads((CPU_RECORD / "plan.json").read_text())
    measured = [r for r in read_csv(CPU_RECORD / "runs.csv") if r["outcome"] in ("trains", "stalls", "diverges")]
    preset = planning.load_preset("cpu", schemes=[s for s in old["schemes"]])
    base = compose_base(preset.experiment, ["run.root=results/runs"])
    reuse = record.read(CPU_RECORD, base, settings(validate(base)), old["bar"])
    assert (len(reuse.found), reuse.left_out) == (len(measured), 0)

    results = {key: outcome.kind for key, (outcome, _) in reuse.found.items()}
    grid, rows = planning.columns(preset)
    for col in grid + rows:
        mine = [results.get(col.key(i, col.seeds[0])) for i in range(len(col.lrs))]
        ran = [o for o in mine if o is not None]
        over = len(ran) == len(col.lrs) or (len(ran) >= 2 and all(o != "trains" for o in ran[-2:]))
        asked = [k for k in planning.wanted(col, results, preset.skip_after) if k not in results]
        if over:  # stopped below the top, or at it: nothing runs again, no seed
            assert asked == [], (col, asked)
        else:  # the first seed climbs on from the record's top, one lr at a time
            assert [k.lr for k in asked] == [col.lrs[len(ran)]], (col, asked)


def test_a_depth_added_for_some_schemes_is_not_measured_for_the_others_not_none_trains():
    """`make frontier SCHEMES=post_ln DEPTHS=6` on a map of depths 2 and 4: the other schemes' L6 column has no
    runs, which the table must not read as "no lr trains" (nor count among such columns)."""
    from normpos.frontier.report import frontier_table, frontiers_of

    lrs = [1e-3, 2e-3, 4e-3]
    plan = {"lrs": lrs, "depths": [2, 4, 6], "schemes": ["post_ln", "pre_ln"], "seeds": [1], "skip_after": 2}
    outcome = {("post_ln", 6): ["stalls", "stalls"]}  # measured at L6: nothing trains
    rows = [{"scheme": s, "depth": d, "warmup": 1, "lr": lr, "seed": 1, "outcome": kind}
            for s in plan["schemes"] for d in plan["depths"] if (s, d) != ("pre_ln", 6)
            for lr, kind in zip(lrs, outcome.get((s, d), ["trains", "trains", "stalls"]))]
    fronts = frontiers_of(rows, plan)
    assert ("pre_ln", 6) not in fronts and fronts[("post_ln", 6)].below_grid
    table = frontier_table(fronts, {s: (None, []) for s in plan["schemes"]}, plan)
    post, pre = (next(line for line in table if line.startswith(f"| `{s}`")) for s in plan["schemes"])
    assert post.split(" | ")[3] == "none (< 1e-3)" and pre.split(" | ")[3] == "not measured"
