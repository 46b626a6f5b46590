"""The plugin's names as the sweep reads them (normpos.plugin_names): the cached lists equal what the imported
plugin registers, any change to the plugin's source gives a new cache file, and a process that finds the
cache checks a config without importing fairseq."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO
from normpos import plugin_names as names_module
from normpos_fairseq.architectures.transformer_normpos import SHAPES
from normpos_fairseq.ffn_init import FFN_INITS
from normpos_fairseq.schemes import scheme_names

VALID = "a dry run prints the command"


def check_in_child(scheme, cache):
    """A dry-run sweep of one run with this scheme: its first output line (the command or the one-line error),
    and whether the process imported fairseq (python -X importtime lists every module it imports)."""
    env = {**os.environ, "NORMPOS_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "normpos.sweep", "experiment=demo",
                           f"model.scheme={scheme}", "run.dry_run=true", f"run.root={cache / 'runs'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    said = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if not line.startswith("import time:")]
    first = said[0] if said else proc.stderr[-2000:]
    if "normpos.fairseq_run train" in first and f"--arch normpos_iwslt_de_en_{scheme} " in first:
        first = VALID
    return first, "fairseq imported" if "fairseq" in imported else "fairseq not imported"


def test_first_process_imports_the_plugin_and_writes_the_names_later_ones_read_them(tmp_path):
    assert check_in_child("pre_ln", tmp_path) == (VALID, "fairseq imported")
    (written,) = (tmp_path / "plugin-names").iterdir()
    assert written.name == names_module.source_key(names_module.plugin_dir()) + ".json"
    assert json.loads(written.read_text()) == {"schemes": scheme_names(), "shapes": list(SHAPES),
                                               "ffn_inits": list(FFN_INITS)}
    assert check_in_child("pre_ln", tmp_path) == (VALID, "fairseq not imported")
    said, imported = check_in_child("no_such_scheme", tmp_path)
    assert said.startswith("normpos: error: unknown model.scheme 'no_such_scheme'; valid: adanorm, admin, b2t"), said
    assert imported == "fairseq not imported"


def test_a_new_or_edited_plugin_file_gets_another_cache_file(tmp_path):
    copy = tmp_path / "normpos_fairseq"
    shutil.copytree(names_module.plugin_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    key = names_module.source_key(copy)
    assert key == names_module.source_key(names_module.plugin_dir())
    (copy / "schemes" / "mine.py").write_text("# a user's scheme\n")
    added = names_module.source_key(copy)
    (copy / "schemes" / "mine.py").write_text("# a user's scheme, edited\n")
    assert len({key, added, names_module.source_key(copy)}) == 3


def test_a_cache_that_is_not_a_names_file_is_read_again_from_the_plugin(tmp_path):
    path = tmp_path / "plugin-names" / (names_module.source_key(names_module.plugin_dir()) + ".json")
    path.parent.mkdir()
    path.write_text('{"schemes": "truncat')
    assert check_in_child("pre_ln", tmp_path) == (VALID, "fairseq imported")
    assert json.loads(path.read_text())["schemes"] == scheme_names()
