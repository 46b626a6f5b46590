"""Build the models of Xiong et al. 2020, sec. 3.4 / Fig. 3 the way ``fairseq-train`` builds them.

The command line goes through fairseq's own training parser (``options.get_training_parser`` and
``parse_args_and_arch`` with our ``--user-dir``), then ``tasks.setup_task`` and ``task.build_model``, as
``fairseq_cli.train.main`` does; so the model, the criterion and the batches are the trainer's.

``theory_assumptions=True`` turns the model into the one Lemma 2 and Theorem 1 are proved for (sec. 3.3
and the proofs in its appendix): FFN width d (fairseq's IWSLT shape has 2d), every weight of the attention
and FFN sub-layers Xavier-*Gaussian* with zero bias, W^Q = W^K = 0 (so attention averages the values
uniformly), no dropout. LayerNorm gain 1 and bias 0 and the embeddings stay as fairseq builds them.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fairseq import checkpoint_utils, options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.modules import MultiheadAttention
from torch import nn

from normpos.plugin import PLUGIN_DIR
from normpos_fairseq.checkpoint_compat import refusal

# The paper's IWSLT14 model (App. A.1); the shape itself lives in the plugin's architecture.
ARCH = "normpos_iwslt_de_en"
PAPER_DROPOUT = 0.1  # Xiong et al. 2020, App. A.1 (fairseq's own IWSLT recipe uses 0.3)
LABEL_SMOOTHING = 0.1  # App. A.1
MAX_TOKENS = 4096  # App. A.1: "batch 4096 tokens"
# The theory tool trains and keeps nothing, so its models get a save dir that can never exist (a path below
# the null device, which is a file): without one fairseq's default is ./checkpoints of the working directory,
# and Admin would take its omegas from a ./checkpoints/admin_profile.json left there by another model, or
# skip profiling when ./checkpoints/checkpoint_last.pt exists (schemes/admin.py); with it every seed
# profiles its own batches and nothing is written.
NO_SAVE_DIR = os.path.join(os.devnull, "normpos-theory-saves-nothing")


@dataclass(frozen=True)
class Setting:
    """One model variant to measure. ``model_args`` are extra fairseq options (the tests shrink d with them)."""

    scheme: str
    ffn_init: str = "xavier"
    theory_assumptions: bool = False
    dropout: float = PAPER_DROPOUT
    model_args: tuple = ()

    @property
    def effective_dropout(self) -> float:
        return 0.0 if self.theory_assumptions else self.dropout


def train_argv(data_dir: Path, setting: Setting, depth: int) -> list[str]:
    """The fairseq-train command line (without the program name and ``--seed``) that builds this model."""
    argv = [
        str(data_dir), "--user-dir", str(PLUGIN_DIR), "--task", "translation", "-s", "de", "-t", "en",
        "--arch", ARCH, "--norm-scheme", setting.scheme, "--ffn-init", setting.ffn_init,
        "--encoder-layers", str(depth), "--decoder-layers", str(depth),
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", str(LABEL_SMOOTHING),
        "--max-tokens", str(MAX_TOKENS), "--save-dir", NO_SAVE_DIR,
        "--dropout", str(setting.effective_dropout), "--attention-dropout", "0", "--activation-dropout", "0",
        *setting.model_args,
    ]
    if setting.theory_assumptions:
        d = options.parse_args_and_arch(options.get_training_parser(), argv).encoder_embed_dim
        argv += ["--encoder-ffn-embed-dim", str(d), "--decoder-ffn-embed-dim", str(d)]
    return argv


@functools.lru_cache(maxsize=None)
def _cfg_and_task(data_dir: Path, setting: Setting, depth: int):
    # fairseq composes its config through Hydra, about a second each time; the seed is not part of it, so
    # all seeds of one (setting, depth) share the config and the task (dictionaries, dataset)
    args = options.parse_args_and_arch(options.get_training_parser(), train_argv(data_dir, setting, depth))
    cfg = convert_namespace_to_omegaconf(args)
    return cfg, tasks.setup_task(cfg.task)


def build(data_dir: Path, setting: Setting, depth: int, seed: int):
    """(cfg, task, model, criterion) exactly as ``fairseq-train ... --seed seed`` builds them."""
    cfg, task = _cfg_and_task(Path(data_dir), setting, depth)
    # fairseq_cli.train.main: np.random.seed + utils.set_torch_seed(cfg.common.seed), then build_model
    np.random.seed(seed)
    utils.set_torch_seed(seed)
    model = task.build_model(cfg.model)
    if setting.theory_assumptions:
        apply_theory_init(model)
    return cfg, task, model, task.build_criterion(cfg.criterion)


def load_checkpoint(data_dir: Path, path: Path):
    """(cfg, task, model, criterion) from a fairseq checkpoint, e.g. a Post-LN model after warm-up (Fig. 3a)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:  # fairseq's loader (it upgrades old states), under torch's weights_only protection
        state = checkpoint_utils.load_checkpoint_to_cpu(str(path), arg_overrides={"data": str(data_dir)})
    except pickle.UnpicklingError as err:
        raise refusal(err, path) from None  # one line; a ValueError, which the CLI reports as such
    cfg = state["cfg"]
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    try:
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {path} does not fit the dictionary of {data_dir} (pass --data with the data folder "
            f"it was trained on): {str(err).splitlines()[0]}"
        ) from None
    return cfg, task, model, task.build_criterion(cfg.criterion)


def describe(cfg) -> dict:
    """Scheme, FFN init and dropout of a built or loaded model (a checkpoint may be plain fairseq's)."""
    m = cfg.model  # an argparse Namespace for fairseq's legacy architectures, a DictConfig when loaded
    pre = getattr(m, "encoder_normalize_before", False)
    return {
        "scheme": getattr(m, "norm_scheme", None) or ("pre_ln" if pre else "post_ln"),
        "ffn_init": getattr(m, "ffn_init", None) or "torch_default",  # plain fairseq >= 0.10 builds nn.Linear
        "dropout": float(getattr(m, "dropout", 0.0)),
    }


def apply_theory_init(model: nn.Module) -> None:
    """Xavier-Gaussian weights, zero biases and W^Q = W^K = 0 in every attention and FFN sub-layer."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, MultiheadAttention):
                for proj in (module.q_proj, module.k_proj):
                    # zero queries and keys make every attention score 0: a uniform average of the values
                    proj.weight.zero_()
                    proj.bias.zero_()
                for proj in (module.v_proj, module.out_proj):
                    nn.init.xavier_normal_(proj.weight)
                    proj.bias.zero_()
            elif isinstance(module, nn.Linear) and name.split(".")[-1] in ("fc1", "fc2"):
                nn.init.xavier_normal_(module.weight)
                module.bias.zero_()
