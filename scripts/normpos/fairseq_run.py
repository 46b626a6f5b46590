"""Run a fairseq command-line tool with our plugin loaded and configuration errors as one line.

    python -m normpos.fairseq_run train DATA_DIR [fairseq-train options]
    python -m normpos.fairseq_run generate DATA_DIR [fairseq-generate options]

It is fairseq's own ``cli_main`` (same parser, same training loop), plus: ``--user-dir`` pointing at
``plugins/normpos_fairseq`` is added; a missing data folder and bad optimizer/schedule values are reported
before fairseq loads anything; and a ``ValueError``/``FileNotFoundError`` (a bad option value, a missing file) is printed as one line
``normpos: error: ...`` with exit code 2 instead of a traceback. Set ``NORMPOS_TRACEBACK=1`` to see it.
CPU numerics are pinned (``normpos.numerics``; ``NORMPOS_NUMERICS=native`` lets the libraries choose
for the host). ``--bf16`` trains in bfloat16 on CPU and CUDA rather than asking for a TPU (``normpos.precision``).
A checkpoint that torch's weights_only loader refuses (``pickle.UnpicklingError``: it asks for types a
fairseq checkpoint does not hold, see ``normpos_fairseq.checkpoint_compat``) is reported the same way, with
the checkpoint the command named and how to opt in for a trusted file.
``train ... --help`` prints fairseq's help followed by the plugin model's options (``normpos.plugin``), which
fairseq's own help cannot list: it exits while parsing ``--arch``, before any model adds its options.
"""

import importlib
import os
import pickle
import sys
from pathlib import Path
from typing import List, Optional

from normpos import numerics

if __name__ == "__main__":
    # before torch loads (the imports below load it): the same floats on any AVX2 host (normpos.numerics)
    numerics.pin_process()

from normpos.plugin import PLUGIN_DIR  # noqa: E402
from normpos.precision import fairseq_parses_bf16_without_tpu, parse_args_and_arch  # noqa: E402

TOOLS = {"train": "fairseq_cli.train", "generate": "fairseq_cli.generate", "preprocess": "fairseq_cli.preprocess"}


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


def with_plugin(argv: List[str]) -> List[str]:
    return argv if "--user-dir" in argv else [*argv, "--user-dir", str(PLUGIN_DIR)]


def check_data_dir(tool: str, argv: List[str]) -> None:
    if tool == "preprocess":
        return
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"fairseq-{tool} needs the binarized data folder as its first argument")
    data = Path(argv[0].split(":")[0])  # fairseq accepts data shards as dir1:dir2
    if not data.is_dir():
        raise UsageError(f"data folder {data} does not exist (prepare it first, e.g. make data-multi30k)")


def optimizer_and_scheduler(argv: List[str]):
    """fairseq's optimizer and lr scheduler for a fairseq-train command line, built on a dummy parameter."""
    import torch
    from fairseq import optim, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim.lr_scheduler import build_lr_scheduler

    args = parse_args_and_arch(options.get_training_parser(), with_plugin(argv))
    cfg = convert_namespace_to_omegaconf(args)
    optimizer = optim.build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    return optimizer, build_lr_scheduler(cfg.lr_scheduler, optimizer)


def check_train_options(argv: List[str]) -> None:
    """Build the optimizer and lr scheduler from the command line, so that a bad value (warm-up < 1,
    lr <= 0, ...) is refused in a second, before fairseq loads data and builds the model."""
    optimizer_and_scheduler(argv)


def option_value(argv: List[str], flag: str, default: Optional[str] = None) -> Optional[str]:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in a command line (the last one, as argparse keeps)."""
    value = default
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def checkpoint_named(tool: str, argv: List[str]) -> str:
    """The checkpoint(s) the command loads, as fairseq resolves them: ``--path`` for generate; for train the
    ``--restore-file``, whose default ``checkpoint_last.pt`` lives in ``--save-dir``."""
    if tool != "train":
        return option_value(argv, "--path", "(--path)")
    restore = option_value(argv, "--restore-file", "checkpoint_last.pt")
    if restore == "checkpoint_last.pt":
        return os.path.join(option_value(argv, "--save-dir", "checkpoints"), restore)
    return restore


def train_help(argv: List[str]) -> int:
    """fairseq-train's help, then the options our model adds (no data folder needed, as for fairseq's)."""
    from fairseq import options

    from normpos.plugin import options_help

    try:
        parse_args_and_arch(options.get_training_parser(), with_plugin(argv))
    except SystemExit as done:  # argparse exits after printing the help
        if done.code not in (0, None):
            return int(done.code)
    sys.stdout.flush()
    print("\n" + options_help(), end="")
    return 0


def run(tool: str, argv: List[str]) -> int:
    if tool not in TOOLS:
        raise UsageError(f"unknown tool {tool!r}; valid: {', '.join(TOOLS)}")
    if tool == "train" and ("-h" in argv or "--help" in argv):
        return train_help(argv)
    check_data_dir(tool, argv)
    if tool == "train":
        check_train_options(argv)
    module = importlib.import_module(TOOLS[tool])
    sys.argv = [f"fairseq-{tool}", *with_plugin(argv)]
    # cli_main parses sys.argv itself; the context makes its parse keep --bf16 off the TPU (normpos.precision)
    with fairseq_parses_bf16_without_tpu():
        module.cli_main()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return run(argv[0], argv[1:])
    except (UsageError, ValueError, FileNotFoundError, pickle.UnpicklingError) as err:
        if os.environ.get("NORMPOS_TRACEBACK"):
            raise
        if isinstance(err, pickle.UnpicklingError):
            from normpos_fairseq.checkpoint_compat import CheckpointRefused, refusal

            if not isinstance(err, CheckpointRefused):  # torch's many-line message, from fairseq's own torch.load
                err = refusal(err, checkpoint_named(argv[0], argv[1:]))
        print(f"normpos: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
