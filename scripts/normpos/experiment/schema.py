"""The shape of a composed experiment config, and its validation.

Hydra composes ``configs/train.yaml`` with a dataset, an experiment and variants; before anything runs, the
result is merged onto these dataclasses (an unknown key or a wrong type is an error) and the values are
checked (warm-up >= 1, lr > 0, known scheme, ...). Every problem is reported as one line.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normpos.numerics import MODES as NUMERICS_MODES
from normpos.plugin_names import plugin_names

SCHEDULES = ("warmup_inverse_sqrt", "step_once", "constant_then_inverse_sqrt", "linear_decay", "constant")
OPTIMIZERS = ("adam", "sgd", "radam")


class ConfigError(ValueError):
    """A composed config that must not run."""


@dataclass
class DatasetCfg:
    name: str = "???"
    data_bin: str = "???"          # fairseq-preprocess output
    ref_dir: str = "???"           # untokenized valid/test references, for sacreBLEU
    source_lang: str = "de"
    target_lang: str = "en"
    subword: str = "bpe"           # bpe (subword-nmt) | sentencepiece
    prepare: str = "???"           # the make target that prepares it, for error messages
    share_all_embeddings: bool = False


@dataclass
class ModelCfg:
    shape: str = "iwslt_de_en"     # normpos_<shape>_<scheme> in the plugin
    scheme: str = "post_ln"
    ffn_init: str = "xavier"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layers: Optional[int] = None   # null: the shape's own
    embed_dim: Optional[int] = None
    ffn_embed_dim: Optional[int] = None
    attention_heads: Optional[int] = None
    scheme_args: List[str] = field(default_factory=list)  # the scheme's own options, e.g. [--admin-profile-batches, "4"]
    ngram_window: Optional[int] = None  # N-gram masked decoder self-attention (Chelba et al. 2020); null = full


@dataclass
class OptimCfg:
    optimizer: str = "adam"
    lr: float = 5e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip_norm: float = 0.0


@dataclass
class ScheduleCfg:
    name: str = "warmup_inverse_sqrt"
    warmup_updates: int = 4000
    decay_anchor: str = "warmup"
    decay_anchor_updates: int = 4000
    anneal_epoch: int = 8
    decay_epoch: int = 6
    lr_shrink: float = 0.1
    total_updates: int = 0         # linear_decay: updates to reach 0 (required there)


@dataclass
class TrainCfg:
    max_tokens: int = 4096
    update_freq: int = 1
    max_epoch: int = 30
    max_update: int = 0
    label_smoothing: float = 0.1
    valid_bleu: bool = True        # valid BLEU every epoch, with the test decoding settings
    log_interval: int = 50
    fp16: bool = False
    bf16: bool = False
    cpu: bool = False
    gpus: int = 1                  # > 1: data parallel over this many GPUs (nccl) or, with cpu, CPU processes (gloo)
    num_workers: int = 1
    tensorboard: bool = False      # fairseq's TensorBoard logs into <run dir>/tensorboard
    numerics: str = "pinned"       # pinned: the same CPU floats on any AVX2 host (normpos.numerics) | native
    threads: Optional[int] = None  # CPU threads a run pins (NORMPOS_NUMERICS_THREADS); null: the caller's, default 2
    # stop at convergence (normpos.experiment.convergence): best valid loss improved < converge_min_bits over the
    # last converge_window epochs; 0 = off (train to max_epoch / max_update). A stopping rule like the budget:
    # not part of the run's identity
    converge_window: int = 0
    converge_min_bits: float = 0.02
    extra_args: List[str] = field(default_factory=list)


@dataclass
class EvalCfg:
    beam: int = 5
    lenpen: float = 1.2
    avg_last_n: int = 0            # average the last N epoch checkpoints for the test score
    compound_split: bool = False   # WMT14: also report compound-split BLEU
    max_len_b: int = 200           # longest hypothesis (fairseq-generate's default 200)
    score: bool = True


@dataclass
class RunCfg:
    root: str = "results/runs"
    dry_run: bool = False
    divergence_factor: float = 1.5  # train loss above this x its first logged value = diverged
    gpu_ids: List[int] = field(default_factory=list)  # spread jobs over these GPUs (job k -> gpu_ids[k % n])
    keep_last: bool = True         # a finished run keeps checkpoint_last.pt, so a larger budget can continue it


@dataclass
class ExperimentCfg:
    experiment: str = "adhoc"      # the results folder and table this run belongs to
    section: str = ""              # which part of the paper it reproduces
    label: str = ""                # legend/table label of the configuration (default: built from values)
    seed: int = 1
    paper: Optional[Any] = None    # the paper's number(s) for this configuration, e.g. {test_bleu: 34.0}
    dataset: DatasetCfg = field(default_factory=DatasetCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    run: RunCfg = field(default_factory=RunCfg)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg) -> ExperimentCfg:
    """Merge onto the schema (unknown keys, wrong types) and check the values; return a typed copy."""
    names = plugin_names()  # the plugin's registered names, from a cache keyed by its source (no fairseq import)
    schemes, shapes, ffn_inits = names["schemes"], names["shapes"], names["ffn_inits"]

    if OmegaConf.is_config(cfg):  # Hydra's own node (launcher, dirs) is not ours to check, nor resolvable here
        raw = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    else:
        raw = {k: v for k, v in dict(cfg).items() if k != "hydra"}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(ExperimentCfg), raw)
        OmegaConf.to_container(typed, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0] + f" (key: {getattr(err, 'full_key', '?')})") from None
    m, o, s, t = typed.model, typed.optim, typed.schedule, typed.train
    _check(m.scheme in schemes, f"unknown model.scheme {m.scheme!r}; valid: {', '.join(schemes)}")
    _check(m.shape in shapes, f"unknown model.shape {m.shape!r}; valid: {', '.join(shapes)}")
    _check(m.ffn_init in ffn_inits, f"unknown model.ffn_init {m.ffn_init!r}; valid: {', '.join(ffn_inits)}")
    _check(o.optimizer in OPTIMIZERS, f"unknown optim.optimizer {o.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(s.name in SCHEDULES, f"unknown schedule.name {s.name!r}; valid: {', '.join(SCHEDULES)}")
    _check(s.warmup_updates >= 1, f"schedule.warmup_updates must be >= 1 (1 = no warm-up), got {s.warmup_updates}")
    _check(s.decay_anchor in ("warmup", "fixed"), f"schedule.decay_anchor must be warmup or fixed, got {s.decay_anchor!r}")
    _check(s.name != "linear_decay" or s.total_updates > 0, "schedule.total_updates must be > 0 for linear_decay")
    _check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    _check(m.ngram_window is None or m.ngram_window >= 1,
           f"model.ngram_window must be >= 1 (null = full self-attention), got {m.ngram_window}")
    _check(t.max_tokens > 0 and t.update_freq >= 1 and t.gpus >= 1, "train.max_tokens, update_freq and gpus must be positive")
    _check(t.max_epoch > 0 or t.max_update > 0, "set train.max_epoch or train.max_update")
    _check(t.converge_window >= 0 and t.converge_min_bits >= 0,
           "train.converge_window and train.converge_min_bits must be >= 0")
    _check(not (t.fp16 and t.bf16), "train.fp16 and train.bf16 exclude each other")
    _check(t.threads is None or t.threads >= 1, f"train.threads must be >= 1 (or null), got {t.threads}")
    _check(t.numerics in NUMERICS_MODES, f"unknown train.numerics {t.numerics!r}; valid: {', '.join(NUMERICS_MODES)}")
    _check(typed.eval.beam >= 1, f"eval.beam must be >= 1, got {typed.eval.beam}")
    _check(typed.seed >= 0, f"seed must be >= 0, got {typed.seed}")
    return typed
