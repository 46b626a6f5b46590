"""Build fairseq objects from a fairseq-train command line, the way ``fairseq_cli.train.main`` does.

Used by the tests, the benchmark and the theory tool, so that what they measure is what training builds
(not a model assembled by hand, which can differ: see fairseq issue #4675).
"""

from typing import Sequence

import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from normpos.plugin import PLUGIN_DIR
from normpos.precision import parse_args_and_arch


def train_cfg(data_dir, *argv: str, langs: Sequence[str] = ("de", "en")):
    """Parse ``fairseq-train DATA_DIR ARGV`` (plus our --user-dir and -s/-t) into fairseq's config, with
    ``--bf16`` meaning bfloat16 on CPU/CUDA as in ``normpos.fairseq_run`` (``normpos.precision``)."""
    parser = options.get_training_parser()
    args = parse_args_and_arch(
        parser, [str(data_dir), "--user-dir", str(PLUGIN_DIR), "-s", langs[0], "-t", langs[1], *argv]
    )
    return convert_namespace_to_omegaconf(args)


def build_task_and_model(data_dir, *argv: str, seed: int = 1, langs: Sequence[str] = ("de", "en")):
    """fairseq_cli.train.main's construction: setup_task(cfg.task), then task.build_model(cfg.model)."""
    cfg = train_cfg(data_dir, *argv, langs=langs)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    return cfg, task, task.build_model(cfg.model)
