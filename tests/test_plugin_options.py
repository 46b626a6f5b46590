"""The plugin's model options can be found: ``python -m normpos.plugin --list-options`` and
``python -m normpos.fairseq_run train ... --help`` list exactly the options the model registers.

fairseq prints ``--help`` while parsing ``--arch``, before the model's ``add_args`` runs, so its own help
never shows ``--norm-scheme`` or any scheme's option. The expected set here is taken from fairseq's real
parser, independently of the listing code: every option string fairseq's training parser holds after
``parse_args_and_arch`` has parsed a ``normpos_iwslt_de_en`` command line (which adds the model's options to
it) and does not hold after parsing one for fairseq's own ``transformer_iwslt_de_en``.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}/plugins:{REPO}/scripts"}
HEADER = "options of the normpos_transformer model"
OPTION = re.compile(r"^  (--[a-z0-9-]+)", re.M)


def registered_by_fairseq() -> set:
    """Options (as ``--name``) that fairseq's parser adds for our model and not for its built-in one."""
    from fairseq import options

    from normpos.plugin import PLUGIN_DIR
    from normpos.precision import parse_args_and_arch

    def parsed(arch):
        parser = options.get_training_parser()
        parse_args_and_arch(parser, ["data", "--arch", arch, "--user-dir", str(PLUGIN_DIR), "--task", "translation"])
        return {s for action in parser._actions for s in action.option_strings}

    return parsed("normpos_iwslt_de_en") - parsed("transformer_iwslt_de_en")


@pytest.fixture(scope="module")
def expected() -> set:
    found = registered_by_fairseq()
    # the named options, so a parser that registered none of them would fail here too
    assert {"--norm-scheme", "--ffn-init", "--decoder-ngram-window", "--xskip-lambda", "--rskip-depth",
            "--admin-profile", "--adanorm-sites"} <= found
    return found


def listed(text: str) -> set:
    assert HEADER in text, text[-2000:]
    return set(OPTION.findall(text.split(HEADER, 1)[1]))


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_list_options_equals_what_the_model_registers(expected):
    done = run("normpos.plugin", "--list-options")
    assert done.returncode == 0, done.stderr
    assert listed(done.stdout) == expected


def test_fairseq_run_train_help_shows_fairseqs_help_then_the_plugin_options(expected):
    # no data folder needed for --help, as with fairseq-train itself
    done = run("normpos.fairseq_run", "train", "no-such-data", "--arch", "normpos_iwslt_de_en_pre_ln", "--help")
    assert done.returncode == 0, done.stderr
    fairseq_part, _ = done.stdout.split(HEADER, 1)
    assert "usage:" in fairseq_part and "--max-update" in fairseq_part  # fairseq's own help came first
    assert "--norm-scheme" not in fairseq_part  # what fairseq alone cannot show, hence this test
    assert listed(done.stdout) == expected
