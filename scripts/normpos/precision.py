"""Precision handling around fairseq: ``--bf16`` means bfloat16 mixed precision on CPU and CUDA, not TPU.

fairseq 0.12 (ve-fairseq 0.12.3, ``fairseq/options.py``, ``parse_args_and_arch``) post-processes the parsed
arguments with ``if args.bf16: args.tpu = True`` (its help text: "use bfloat16; implies --tpu"). The
Trainer then asks torch_xla for a device (``fairseq.utils.get_tpu_device``), so ``--bf16`` (our
``train.bf16=true``) can never train on a CPU or a GPU. Nothing else in fairseq's bf16 path needs a TPU:
the Trainer casts the model and criterion to ``torch.bfloat16`` and wraps the optimizer in its
``FP16Optimizer``, which keeps fp32 master weights and, for bf16, no loss scaler (bf16 has fp32's exponent
range, so gradients do not underflow the way fp16's do). Clearing ``tpu`` again after parsing, unless
``--tpu`` itself was on the command line, gives exactly that path on CPU and CUDA (paper-notes, "Traps
seen on the landed pipeline"; ``tests/test_precision.py``).

``--tpu`` is recognised only as that exact token: fairseq's parser is built with ``allow_abbrev=False``
(``options.get_parser``), so no abbreviation of it can reach fairseq either.
"""

import sys
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

from fairseq import options

TPU_FLAG = "--tpu"
#: fairseq's own function, kept before anything wraps it (the wrapper below calls this one)
FAIRSEQ_PARSE_ARGS_AND_ARCH = options.parse_args_and_arch


def bf16_without_implied_tpu(args, argv: Sequence[str]):
    """Undo fairseq's "--bf16 implies --tpu" on parsed ``args`` unless ``--tpu`` is in ``argv``; returns ``args``."""
    if getattr(args, "bf16", False) and getattr(args, "tpu", False) and TPU_FLAG not in argv:
        args.tpu = False
    return args


def parse_args_and_arch(parser, input_args: Optional[List[str]] = None, parse_known: bool = False, **kwargs):
    """fairseq's ``options.parse_args_and_arch`` (same signature and result), then
    :func:`bf16_without_implied_tpu` on what it parsed."""
    result = FAIRSEQ_PARSE_ARGS_AND_ARCH(parser, input_args, parse_known=parse_known, **kwargs)
    argv = sys.argv[1:] if input_args is None else input_args  # argparse reads sys.argv[1:] when given None
    args = result[0] if parse_known else result
    bf16_without_implied_tpu(args, argv)
    return result


@contextmanager
def fairseq_parses_bf16_without_tpu() -> Iterator[None]:
    """While active, ``fairseq.options.parse_args_and_arch`` is :func:`parse_args_and_arch`.

    For fairseq's own ``cli_main`` (``fairseq_cli.train``/``generate``): it parses with
    ``options.parse_args_and_arch(parser, ...)`` looked up on the module at call time and hands the result
    straight to its ``main``, with no hook in between. Replacing that module attribute inside our wrapper
    process (``normpos.fairseq_run``, one fairseq tool per process) is the one place the fix can go without
    copying ``cli_main``; it is restored on exit, so nothing else in the process sees the change.
    """
    saved = options.parse_args_and_arch
    options.parse_args_and_arch = parse_args_and_arch
    try:
        yield
    finally:
        options.parse_args_and_arch = saved
