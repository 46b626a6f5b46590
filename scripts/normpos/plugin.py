"""Where the fairseq plugin lives, for command lines (``--user-dir``), and which options its model adds.

    python -m normpos.plugin --list-options

lists the options of the ``normpos_transformer`` model (``--norm-scheme``, ``--ffn-init``,
``--decoder-ngram-window`` and every scheme's own), with their help. ``fairseq-train --arch normpos_... --help``
cannot show them: fairseq prints ``--help`` while it parses the model name, before the model's ``add_args``
has run. ``python -m normpos.fairseq_run train ... --help`` appends this same list to fairseq's help.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import normpos_fairseq

PLUGIN_DIR = Path(normpos_fairseq.__file__).resolve().parent


def plugin_actions() -> List[argparse.Action]:
    """The options the plugin's model registers beyond fairseq's ``TransformerModel``, in registration order:
    found by running both models' real ``add_args`` and keeping what only ours added, so this list cannot
    drift from the code."""
    from fairseq.models.transformer import TransformerModel

    from normpos_fairseq.architectures.transformer_normpos import NormPosTransformerModel

    ours, theirs = argparse.ArgumentParser(add_help=False), argparse.ArgumentParser(add_help=False)
    NormPosTransformerModel.add_args(ours)
    TransformerModel.add_args(theirs)
    fairseq_options = {s for action in theirs._actions for s in action.option_strings}
    return [a for a in ours._actions if not fairseq_options.intersection(a.option_strings)]


def options_help() -> str:
    """The plugin's options formatted as argparse prints a help section."""
    shown = argparse.ArgumentParser(prog="normpos_transformer", add_help=False, usage=argparse.SUPPRESS)
    group = shown.add_argument_group(
        "options of the normpos_transformer model (--arch normpos_*; fairseq's --help cannot list them)"
    )
    for action in plugin_actions():
        group._add_action(action)  # argparse's own formatter, so the text reads like fairseq's help
    return shown.format_help()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normpos.plugin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list-options", action="store_true", help="list the model's options and their help")
    args = parser.parse_args(argv)
    if not args.list_options:
        print(PLUGIN_DIR)  # the --user-dir to give fairseq
        return 0
    print(options_help(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
