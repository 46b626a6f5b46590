"""Admin (adaptive model initialization): Post-LN whose residual branch is weighted by a profiled omega.

Liu, Liu, Gao, Chen and Han 2020, "Understanding the Difficulty of Training Transformers", EMNLP 2020,
arXiv:2004.08249 (the section introducing Admin). The i-th sub-layer f_i of a stack (self-attention,
cross-attention, FFN, in the order the layers run them) is joined as

    x_i = LN(x_{i-1} * omega_i + f_i(x_{i-1}))

with omega_i a per-dimension vector, trainable, initialized from a profiling pass at initialization.

The profiling recursion is the official code's (LiyuanLucasLiu/Transformer-Clinic,
``fairseq/fairseq/modules/transformer_layer.py``, ``--init-type adaptive-profiling``), run separately for
the encoder and the decoder, in one forward pass in training mode (dropout on), over the sub-layers in
forward order:

    omega_1     = 1
    omega_{i+1} = sqrt( Var[omega_i * x_{i-1}] + Var[f_i(x_{i-1})] )

where x_{i-1} is the sub-layer's input (the residual), f_i(x_{i-1}) its output after dropout, and Var the
population variance over every element of the T x B x C tensor, padding positions included (Clinic's
``np.var`` of the flattened tensor). omega_i is set (all dimensions to that one value) before sub-layer i
runs, so each LN sees the profiled omega. Since LN keeps Var[x_{i-1}] near 1, omega_i^2 is about
Var[x_0] + sum_{j<i} Var[f_j], the paper's omega_i = sqrt(sum_{j<i} Var[f_j(x_{j-1})]) measured the way
the official code measures it.

Clinic profiles on the first training batch only (its task's train_step exits after one step); here
``--admin-profile-batches K`` (default 1) runs the recursion once per batch on the first K batches of the
train split's epoch-1 iterator (same seed and batch size as training) and takes
omega_i = sqrt(mean over batches of omega_i^2). With K = 1 that is exactly Clinic's value.
Profiling runs in ``initialize``, without gradients, on the CPU, with the torch RNG forked and seeded
with ``--seed`` (reproducible, and the global RNG is left as it was).

The profile is kept with the run (Clinic writes ``profile.ratio.init`` in the working directory):
``--admin-profile PATH`` (default ``<save_dir>/admin_profile.json``, written only when the save directory
already exists, as fairseq-train creates it before building the model). If the file exists its omegas are
read instead of profiling: so a resumed run, a second seed reusing the first one's profile (Clinic's
recipe profiles once with seed 1111 and trains five seeds from it) and fairseq-generate rebuilding the model
all get the same omegas without data. It is written atomically (temp file + rename) by rank 0 only, with
the split used, the number of batches, the sentence ids of each batch, and per sub-layer the variances
and omegas. No profile file but a checkpoint that fairseq-train would resume from (``--restore-file``,
default ``<save_dir>/checkpoint_last.pt``; fairseq-generate rebuilds from the training args): no profiling,
the checkpoint's state_dict sets omega. When neither the train split nor the first valid split can be
loaded, omega stays 1 with a warning (right when a checkpoint is loaded next, wrong for training).

Schedule. Admin is meant to train with the usual Post-LN recipe, warm-up included: Clinic's recipes
(nmt-experiments/iwslt14_de-en.md, wmt14_en-de.md) use RAdam, inverse square root with linear warm-up from
1e-7: IWSLT14 De-En lr 7e-4, 6,000 warm-up updates, 100k updates; WMT14 En-De lr 1e-3, 8,000 warm-up.
Clinic also has a "No Warmup" recipe (RAdam, linear decay, warm-up 1, lr 1e-4..5e-4, beta2 0.99..0.999)
for Post-LN, Pre-LN and Admin. See ``configs/variant/admin_warmup.yaml``.
"""

import json
import logging
import math
import os
import tempfile
from typing import Dict, List, Optional, Tuple

import torch
from fairseq import utils
from torch import nn

from . import NormScheme, Site, place_norms_after, register_scheme

logger = logging.getLogger(__name__)

PROFILE_NAME = "admin_profile.json"
_MISSING = object()


class AdminResidual(nn.Module):
    """``residual * omega + x`` with a trainable per-dimension ``omega`` (Clinic's ``*_ratio_change``)."""

    def __init__(self, dim: int, site: Site):
        super().__init__()
        self.omega = nn.Parameter(torch.ones(dim))
        self.key = (site.stack, site.layer, site.sublayer)
        self.profiler: Optional["_Profiler"] = None  # set only during the profiling pass

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.profiler is not None:
            self.profiler.observe(self, x, residual)
        return residual * self.omega + x

    def extra_repr(self) -> str:
        return f"{'.'.join(map(str, self.key))}, dim={self.omega.numel()}"


class _Profiler:
    """Clinic's recursion for one batch: one running ratio per stack, advanced at each residual join."""

    def __init__(self):
        self.ratio = {"encoder": 1.0, "decoder": 1.0}
        self.seen: Dict[Tuple, Dict[str, float]] = {}

    @torch.no_grad()
    def observe(self, join: AdminResidual, x: torch.Tensor, residual: torch.Tensor) -> None:
        stack = join.key[0]
        omega = self.ratio[stack]
        join.omega.fill_(omega)  # before the join uses it, so the rest of the pass sees the profiled value
        input_var = (residual * join.omega).float().var(unbiased=False).item()
        output_var = x.float().var(unbiased=False).item()
        self.ratio[stack] = math.sqrt(input_var + output_var)
        self.seen[join.key] = {"omega": omega, "input_var": input_var, "output_var": output_var}


def admin_joins(model: nn.Module) -> List[AdminResidual]:
    """Every Admin residual join of the model, encoder then decoder, layer by layer, in forward order."""
    return [m for m in model.modules() if isinstance(m, AdminResidual)]


def profile_path(args) -> Tuple[Optional[str], bool]:
    """(path of the profile file, whether it was given explicitly)."""
    given = getattr(args, "admin_profile", None)
    if given:
        return given, True
    save_dir = getattr(args, "save_dir", None)
    return (os.path.join(save_dir, PROFILE_NAME) if save_dir else None), False


def checkpoint_to_restore(args) -> Optional[str]:
    """The checkpoint fairseq-train would resume from (``--restore-file``, default
    ``<save_dir>/checkpoint_last.pt``), if it exists."""
    restore = getattr(args, "restore_file", None) or "checkpoint_last.pt"
    save_dir = getattr(args, "save_dir", None)
    suffix = getattr(args, "checkpoint_suffix", "") or ""
    if restore == "checkpoint_last.pt":  # as fairseq's checkpoint_utils.load_checkpoint resolves it
        if not save_dir:
            return None
        restore = os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
    else:
        restore = restore.replace(".pt", f"{suffix}.pt")
    return restore if os.path.isfile(restore) else None


def is_first_rank() -> bool:
    """Whether this process is rank 0 of its torch.distributed group (or the only process).

    Not ``args.distributed_rank``: the model's args are the parse-time copy, where fairseq leaves it at 0 on
    every rank; the real rank lives in ``cfg.distributed_training`` and in torch.distributed, which
    fairseq's ``distributed_utils.call_main`` initializes before ``fairseq_cli.train.main`` builds the model.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def write_json_atomic(path: str, data) -> None:
    """Write ``data`` as JSON to a temp file beside ``path``, then rename: never a half-written profile."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _split_names(args) -> Tuple[str, str]:
    """fairseq's training split and its first validation split."""
    return (getattr(args, "train_subset", None) or "train",
            (getattr(args, "valid_subset", None) or "valid").split(",")[0])


def _load_split(task, args) -> Tuple[Optional[str], Optional[str]]:
    """Load the train split, else the first valid split, into the task; (split, why train was not used)."""
    train, valid = _split_names(args)
    reason = None
    for split in (train, valid):
        try:
            task.load_dataset(split, epoch=1, combine=split == train)
            return split, reason
        except (FileNotFoundError, OSError) as e:
            reason = reason or f"{split} split not loadable: {e}"
    return None, reason


def _batches(task, model, split: str, args, count: int):
    """The first ``count`` batches of ``split``'s epoch-1 iterator, batched and shuffled as training does."""
    max_tokens = getattr(args, "max_tokens", None)
    max_sentences = getattr(args, "batch_size", None)
    if max_tokens is None and max_sentences is None:
        max_tokens = 4096  # fairseq-train refuses this case; a bounded batch for other entry points
    itr = task.get_batch_iterator(
        dataset=task.dataset(split),
        max_tokens=max_tokens,
        max_sentences=max_sentences,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=getattr(args, "required_batch_size_multiple", 8),
        seed=getattr(args, "seed", 1),
        num_shards=1,
        shard_id=0,
        num_workers=0,
        epoch=1,
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=True)
    out = []
    for sample in itr:
        if sample:
            out.append(sample)
        if len(out) == count:
            break
    return out


def profile(model: nn.Module, task, args) -> Optional[dict]:
    """Run Clinic's profiling pass(es); set every omega; return the profile (None when no data loads)."""
    joins = admin_joins(model)
    had = {name: task.datasets.get(name, _MISSING) for name in _split_names(args)}
    split, reason = _load_split(task, args)
    if split is None:
        logger.warning(
            "Admin: no data to profile (%s; the valid split neither): omegas left at 1. Fine when a "
            "checkpoint is loaded next (its state_dict holds the omegas), wrong for training.", reason,
        )
        return None
    if reason:
        logger.warning("Admin: profiling on the %r split instead of train (%s)", split, reason)
    count = max(1, int(getattr(args, "admin_profile_batches", 1) or 1))
    try:
        samples = _batches(task, model, split, args, count)
    finally:
        # leave the task as fairseq left it: training loads its own copy of the splits later
        for name, old in had.items():
            if old is _MISSING:
                task.datasets.pop(name, None)
            else:
                task.datasets[name] = old
    if not samples:
        raise ValueError(f"Admin: the {split!r} split gave no batch to profile")

    per_batch: List[Dict[Tuple, Dict[str, float]]] = []
    was_training = model.training
    model.train()  # Clinic profiles inside a training step: dropout on
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(getattr(args, "seed", 1))
            for sample in samples:
                profiler = _Profiler()
                for join in joins:
                    join.profiler = profiler
                model(**sample["net_input"])
                per_batch.append(profiler.seen)
    finally:
        for join in joins:
            join.profiler = None
        model.train(was_training)

    entries = []
    for join in joins:
        seen = [batch[join.key] for batch in per_batch if join.key in batch]
        if not seen:
            raise ValueError(f"Admin: residual join {join.key} was not used in the profiling pass")
        omega = math.sqrt(sum(s["omega"] ** 2 for s in seen) / len(seen))
        with torch.no_grad():
            join.omega.fill_(omega)
        stack, layer, sublayer = join.key
        entries.append({
            "stack": stack, "layer": layer, "sublayer": sublayer, "omega": omega,
            "omega_per_batch": [s["omega"] for s in seen],
            "input_var": [s["input_var"] for s in seen],
            "output_var": [s["output_var"] for s in seen],
        })
    return {
        "scheme": "admin",
        "recursion": "per stack: omega_1 = 1; omega_{i+1} = sqrt(Var[omega_i * x_{i-1}] + Var[f_i(x_{i-1})]); "
                     "input_var = Var[omega_i * x_{i-1}], output_var = Var[f_i(x_{i-1})] (after dropout); "
                     "omega = sqrt(mean over batches of omega_per_batch^2) (Transformer-Clinic, adaptive-profiling)",
        "split": split,
        "fell_back": reason is not None,
        "fallback_reason": reason,
        "batches": len(samples),
        "seed": getattr(args, "seed", 1),
        "batch_ids": [sample["id"].tolist() for sample in samples],
        "batch_tokens": [int(sample["ntokens"]) for sample in samples],
        "sublayers": entries,
    }


def apply_profile(model: nn.Module, data: dict, path: str) -> None:
    """Set every omega from a profile file; refuse a file made for another model."""
    omegas = {(e["stack"], e["layer"], e["sublayer"]): float(e["omega"]) for e in data.get("sublayers", [])}
    joins = admin_joins(model)
    keys = {join.key for join in joins}
    if keys != set(omegas):
        raise ValueError(
            f"Admin profile {path} does not match this model ({len(omegas)} sub-layers in the file, "
            f"{len(keys)} in the model; missing {sorted(keys - set(omegas))[:3]}); delete it or pass "
            "--admin-profile with another path"
        )
    with torch.no_grad():
        for join in joins:
            join.omega.fill_(omegas[join.key])


@register_scheme
class Admin(NormScheme):
    name = "admin"
    summary = "x_i = LN(omega_i x_{i-1} + f_i(x_{i-1})); omega trainable, profiled at init (Clinic)"
    paper = 'Liu et al. 2020, "Understanding the Difficulty of Training Transformers" (arXiv:2004.08249)'

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--admin-profile", metavar="PATH", default=None,
            help="Admin's profile (omegas): read if it exists, else profile and write it here "
                 f"(default <save-dir>/{PROFILE_NAME})",
        )
        parser.add_argument(
            "--admin-profile-batches", type=int, metavar="K", default=1,
            help="profile on the first K training batches (default 1, as Transformer-Clinic)",
        )

    def configure(self, args) -> None:
        # Admin is a Post-LN variant: the LayerNorm follows each residual join
        place_norms_after(args, "--norm-scheme admin is Post-LN (x = LN(omega*x + f(x))); it contradicts "
                                "--encoder/decoder-normalize-before")
        if (getattr(args, "admin_profile_batches", 1) or 1) < 1:
            raise ValueError("--admin-profile-batches must be >= 1")

    def build_residual(self, site: Site, args) -> nn.Module:
        dim = args.encoder_embed_dim if site.stack == "encoder" else args.decoder_embed_dim
        return AdminResidual(dim, site)

    def initialize(self, model: nn.Module, args, task) -> None:
        path, explicit = profile_path(args)
        if path and os.path.isfile(path):
            with open(path) as f:
                data = json.load(f)
            apply_profile(model, data, path)
            logger.info("Admin: omegas read from %s (profiled on %s, %s batch(es))",
                        path, data.get("split"), data.get("batches"))
            return
        checkpoint = checkpoint_to_restore(args)
        if checkpoint:
            # fairseq-train resumes from it (and fairseq-generate loads a checkpoint): its state_dict sets omega
            logger.info("Admin: no profile at %s but %s exists: omegas come from its state_dict", path, checkpoint)
            return
        data = profile(model, task, args)
        if data is None or not path:
            return
        if not is_first_rank():
            return  # every rank profiles the same batches; rank 0 keeps the file
        folder = os.path.dirname(os.path.abspath(path))
        if explicit:
            os.makedirs(folder, exist_ok=True)
        elif not os.path.isdir(folder):
            logger.info("Admin: save dir %s does not exist, profile not written", folder)
            return
        write_json_atomic(path, data)
        logger.info("Admin: profiled on %d %s batch(es), omegas written to %s", data["batches"], data["split"], path)
