"""The theory tool (Xiong et al. 2020, sec. 3.4 / Fig. 3 at initialization) is independent of where it runs and
its report modules depend one way: an Admin model it builds profiles its own batches even when the working
directory holds another model's ``checkpoints/`` (fairseq's default save dir), and writes nothing there;
``report_schemes.py`` builds on ``aggregate.py``, never on ``report.py``, which calls it."""

import ast
import json

import torch

from conftest import REPO
from normpos.theory import model as theory_model
from normpos_fairseq.schemes.admin import PROFILE_NAME, admin_joins

TINY = ("--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2")


def admin_omegas(data_dir, seed=1) -> list:
    setting = theory_model.Setting("admin", dropout=0.0, model_args=TINY)
    _, _, model, _ = theory_model.build(data_dir, setting, depth=2, seed=seed)
    return [join.omega.detach().clone() for join in admin_joins(model)]


def test_admin_ignores_a_checkpoints_folder_in_the_working_directory(tiny_bin, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.chdir(clean)
    profiled = admin_omegas(tiny_bin)
    assert not (clean / "checkpoints").exists(), "the theory tool wrote into ./checkpoints"
    # profiled: omega_1 = 1 in each stack, every later omega above 1
    assert [bool(torch.all(o > 1)) for o in profiled] == [False, True, True, True, False] + [True] * 5

    # another model's leftovers where fairseq looks by default: a profile for the same shape with omega 7
    # everywhere, and a checkpoint_last.pt (which would make Admin skip profiling)
    dirty = tmp_path / "dirty"
    (dirty / "checkpoints").mkdir(parents=True)
    keys = [("encoder", i, s) for i in range(2) for s in ("self_attn", "ffn")] + \
        [("decoder", i, s) for i in range(2) for s in ("self_attn", "encoder_attn", "ffn")]
    stale = {"sublayers": [{"stack": st, "layer": i, "sublayer": s, "omega": 7.0} for st, i, s in keys]}
    (dirty / "checkpoints" / PROFILE_NAME).write_text(json.dumps(stale))
    (dirty / "checkpoints" / "checkpoint_last.pt").write_bytes(b"not a checkpoint")
    monkeypatch.chdir(dirty)
    theory_model._cfg_and_task.cache_clear()  # the config is cached per process; build it in this directory
    again = admin_omegas(tiny_bin)
    assert len(again) == len(profiled) == len(keys)
    for got, want in zip(again, profiled):
        assert torch.equal(got, want)  # the same profile as in a clean directory, not 7 and not 1
    assert sorted(p.name for p in (dirty / "checkpoints").iterdir()) == ["admin_profile.json", "checkpoint_last.pt"]
    assert json.loads((dirty / "checkpoints" / PROFILE_NAME).read_text()) == stale


def imported_modules(path) -> set:
    """Modules a file imports, relative imports written as ``.name``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found |= {base} if node.module else {f"{base}{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_theory_report_modules_import_one_way():
    theory = REPO / "scripts" / "normpos" / "theory"
    schemes = imported_modules(theory / "report_schemes.py")
    report = imported_modules(theory / "report.py")
    assert ".report" not in schemes and "normpos.theory.report" not in schemes
    assert ".aggregate" in schemes and ".report_schemes" in report
    assert not {".report", ".report_schemes"} & imported_modules(theory / "aggregate.py")
