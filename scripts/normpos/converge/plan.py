"""What the converged reproduction trains (``configs/converge/<name>.yaml``), in which order, and how long it takes.

A preset names the Hydra experiment every run is composed from (model, data, batch, epoch cap, convergence
rule: ``configs/experiment/reproduce_*.yaml``) and the runs (Xiong et al. 2020):

- ``sec3``: sec. 3.2, Post-LN with Adam, every lr of ``lrs`` x warm-up of ``warmups`` (1 = none; inverse-sqrt
  decay after it, as fairseq's ``inverse_sqrt``), seed ``seed``; plus Pre-LN without warm-up (``sec4``'s
  schedule) at ``pre_ln_lrs``, seed ``seed``;
- ``sec4``: sec. 4, Pre-LN without warm-up (``pre_ln_schedule``) at ``lr``, every seed of ``seeds``, against
  Post-LN with its best warm-up at ``lr``: the W > 1 of ``sec3.warmups`` whose seed-``sec3.seed`` run has the
  lowest best valid loss, known once those runs ended; its other seeds train then;
- ``budget``: the recorded speed of the machine (updates/s, updates an epoch, validation and per-run seconds),
  from which the time is projected before anything trains, and the minutes the whole preset must fit in.

Which runs come next is a pure function of the outcomes so far (:func:`wanted`), so a resumed invocation
makes the same choices, and the choices are tested without training anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

REPO = Path(__file__).resolve().parents[3]
PRESETS = REPO / "configs" / "converge"


class PlanError(ValueError):
    """A preset that cannot be run; the message is one line."""


@dataclass
class Sec3:
    lrs: List[float] = field(default_factory=list)
    warmups: List[int] = field(default_factory=lambda: [1])
    seed: int = 1
    pre_ln_lrs: List[float] = field(default_factory=list)


@dataclass
class Sec4:
    lr: float = 0.0
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    pre_ln_schedule: str = "step_once"


@dataclass
class Budget:
    minutes: float = 150.0
    updates_per_s: float = 0.75
    updates_per_epoch: int = 121
    valid_seconds: float = 0.0
    run_seconds: float = 0.0


@dataclass
class Preset:
    name: str = ""
    experiment: str = "???"
    jobs: int = 2
    sec3: Sec3 = field(default_factory=Sec3)
    sec4: Sec4 = field(default_factory=Sec4)
    budget: Budget = field(default_factory=Budget)


@dataclass(frozen=True)
class RunKey:
    """One run: the values it sets on the experiment (``frontier.runner.run_config`` applies them)."""
    part: str          # "sec. 3.2" or "sec. 4"
    scheme: str
    schedule: str
    lr: float
    warmup: int
    seed: int

    def overrides(self) -> Dict[str, object]:
        return {"model.scheme": self.scheme, "schedule.name": self.schedule, "optim.lr": self.lr,
                "schedule.warmup_updates": self.warmup, "seed": self.seed}

    def words(self) -> str:
        from normpos.experiment.command import format_number

        warm = f"W {self.warmup}" if self.warmup > 1 else "no warm-up"
        return f"{self.part} {self.scheme} lr {format_number(self.lr)} {warm} seed {self.seed}"


def load_preset(name: str, folder: Path = PRESETS) -> Preset:
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(folder).glob("*.yaml"))
        raise PlanError(f"no preset {name!r} ({path} is absent); presets: {', '.join(known)}")
    try:
        preset: Preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Preset), OmegaConf.load(path)))
    except OmegaConfBaseException as err:
        raise PlanError(f"{path}: {str(err).splitlines()[0]}") from None
    preset.name = name
    s3, s4 = preset.sec3, preset.sec4
    if not s3.lrs or s4.lr not in s3.lrs:
        raise PlanError(f"{path}: sec4.lr ({s4.lr}) must be one of sec3.lrs ({s3.lrs})")
    if not s3.warmups or s3.warmups[0] != 1 or len(s3.warmups) < 2 or list(s3.warmups) != sorted(set(s3.warmups)):
        raise PlanError(f"{path}: sec3.warmups must start at 1 (none), ascend, and have a W > 1: {s3.warmups}")
    if s3.seed not in s4.seeds or len(set(s4.seeds)) != len(s4.seeds):
        raise PlanError(f"{path}: sec4.seeds must be distinct and include sec3.seed ({s3.seed}): {s4.seeds}")
    if preset.jobs < 1 or preset.budget.updates_per_s <= 0:
        raise PlanError(f"{path}: jobs and budget.updates_per_s must be positive")
    return preset


def fixed_runs(p: Preset) -> List[RunKey]:
    """The runs known before anything trains, in the order they start: first the sec. 3.2 runs with warm-up at
    sec. 4's lr (they decide Post-LN's best warm-up), then sec. 4's Pre-LN seeds, then the rest of sec. 3.2."""
    s3, s4 = p.sec3, p.sec4
    post = [RunKey("sec. 3.2", "post_ln", "warmup_inverse_sqrt", lr, w, s3.seed) for lr in s3.lrs for w in s3.warmups]
    deciding = [k for k in post if k.lr == s4.lr and k.warmup > 1]
    pre = [RunKey("sec. 4", "pre_ln", s4.pre_ln_schedule, s4.lr, 1, seed) for seed in s4.seeds]
    pre_other = [RunKey("sec. 3.2", "pre_ln", s4.pre_ln_schedule, lr, 1, s3.seed) for lr in s3.pre_ln_lrs
                 if lr != s4.lr]
    return deciding + pre + [k for k in post if k not in deciding] + pre_other


def best_warmup(p: Preset, best_loss: Dict[RunKey, Optional[float]]) -> Optional[int]:
    """Post-LN's best warm-up at sec. 4's lr from the seed-1 runs' best valid losses (None: diverged or no
    valid loss), or None while one of them has not ended. When none has a loss, the longest warm-up."""
    deciding = [k for k in fixed_runs(p) if k.scheme == "post_ln" and k.lr == p.sec4.lr and k.warmup > 1]
    if any(k not in best_loss for k in deciding):
        return None
    scored = [(best_loss[k], k.warmup) for k in deciding if best_loss[k] is not None]
    return min(scored)[1] if scored else max(k.warmup for k in deciding)


def wanted(p: Preset, best_loss: Dict[RunKey, Optional[float]]) -> List[RunKey]:
    """Every run the preset needs given the runs ended so far (``best_loss``: key -> its best valid loss), in
    start order: the fixed runs, then Post-LN's other seeds at its best warm-up once that is known."""
    runs = fixed_runs(p)
    w = best_warmup(p, best_loss)
    if w is not None:
        runs += [RunKey("sec. 4", "post_ln", "warmup_inverse_sqrt", p.sec4.lr, w, seed)
                 for seed in p.sec4.seeds if seed != p.sec3.seed]
    return runs


def run_count(p: Preset) -> int:
    """Runs the preset trains in all (the Post-LN seeds included before their warm-up is known)."""
    return len(fixed_runs(p)) + len(p.sec4.seeds) - 1


def epoch_seconds(b: Budget) -> float:
    return b.updates_per_epoch / b.updates_per_s + b.valid_seconds


def projected_seconds(p: Preset, max_epoch: int, epochs_left: Optional[List[int]] = None,
                      per_epoch: Optional[float] = None, per_run: Optional[float] = None) -> float:
    """Wall seconds for runs with these epochs left (default: every run, every epoch up to the cap), ``jobs`` at
    once, at ``per_epoch`` seconds an epoch and ``per_run`` seconds of start-up and test scoring (default: the
    preset's recorded figures). An upper bound: runs that converge stop before the cap."""
    left = [max_epoch] * run_count(p) if epochs_left is None else epochs_left
    e = epoch_seconds(p.budget) if per_epoch is None else per_epoch
    r = p.budget.run_seconds if per_run is None else per_run
    return sum(n * e + r for n in left) / p.jobs
