"""Which golden cases exist and how each is configured: Hydra overrides on ``experiment=golden``.

Training cases: every registered normalization scheme (with its own default options), the N-gram decoder
window, and data parallelism over two CPU ranks (gloo; dropout's draws differ per rank, so its curve is its own).
Schedule cases: each learning-rate schedule the configs can name, with lengths short enough that every phase
(warm-up, decay, the epoch-triggered steps) shows within 5 epochs of 10 updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple


@dataclass(frozen=True)
class Case:
    name: str
    kind: str                      # train | schedule
    overrides: Tuple[str, ...] = field(default_factory=tuple)


def train_cases() -> List[Case]:
    from normpos_fairseq.schemes import scheme_names

    cases = [Case(f"scheme-{name}", "train", (f"model.scheme={name}",)) for name in scheme_names()]
    # the golden model has 2 layers, where Mix-LN's default (floor(0.25 x 2) = 0 Post-LN layers) is Pre-LN
    # exactly: this case makes its first layer of each stack Post-LN, so the mixed code path has a curve too
    cases.append(Case("scheme-mix_ln-fraction-0.5", "train",
                      ("model.scheme=mix_ln", "model.scheme_args=[--mix-ln-fraction,0.5]")))
    cases.append(Case("ngram-window-4", "train", ("model.scheme=pre_ln", "model.ngram_window=4")))
    cases.append(Case("data-parallel-2-cpu-ranks", "train", ("model.scheme=pre_ln", "train.gpus=2")))
    return cases


SCHEDULE_CASES = [
    Case("schedule-warmup-inverse-sqrt", "schedule",
         ("schedule.name=warmup_inverse_sqrt", "schedule.warmup_updates=5")),
    Case("schedule-warmup-inverse-sqrt-fixed-anchor", "schedule",
         ("schedule.name=warmup_inverse_sqrt", "schedule.warmup_updates=5", "schedule.decay_anchor=fixed",
          "schedule.decay_anchor_updates=20")),
    Case("schedule-step-once", "schedule", ("schedule.name=step_once", "schedule.anneal_epoch=3")),
    Case("schedule-constant-then-inverse-sqrt", "schedule",
         ("schedule.name=constant_then_inverse_sqrt", "schedule.decay_epoch=2")),
    Case("schedule-linear-decay", "schedule",
         ("schedule.name=linear_decay", "schedule.warmup_updates=5", "schedule.total_updates=45")),
    Case("schedule-constant", "schedule", ("schedule.name=constant",)),
]


def all_cases() -> List[Case]:
    return train_cases() + SCHEDULE_CASES
