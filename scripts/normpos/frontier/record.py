"""The committed record as the map's cache: which rows of a results folder's ``runs.csv`` a rerun may reuse.

A map grows: a new scheme (issue 26), a deeper depth, lrs above the top of the grid. Each costs only its own
runs if the rows already measured count as measured, and on a fresh clone the run folders under
``results/runs`` (git-ignored) are not there: the committed ``runs.csv`` and ``plan.json`` are. So before
anything trains, the command reads them and reuses a row when it was measured under the same settings:

- **the same run**: its ``run`` folder ends in the ``<dataset>/<experiment>/<configuration>_<hash>/seed-<n>``
  that this invocation composes for the cell. The hash (``normpos.experiment.identity``) covers every value
  that reaches fairseq-train except the budget and the seed (the seed is the folder's last part), so a row
  trained with another dropout, batch, model size, scheme option or data folder does not match;
- **the same budget and rule**: ``plan.json``'s run settings (``cli.settings``: the shape, optimizer, N
  updates, device...) and unigram bar (the data's counts and the margin) equal this invocation's;
- **an outcome**: trains, stalls or diverges. A failed or unfinished run is not a measurement: it runs again.

Rows that do not qualify are neither reused nor written back (the folder is one map under one setting) and
the command says how many in one line. What the hash does not cover is the code: as for the run folders
themselves, a change to a scheme that keeps its fairseq options keeps its rows (the golden curves guard the
numerics of every scheme). The record of 429047a (``results/multi30k/frontier-cpu``) has no ``commit``
column: its rows are attributed to its plan.json's commit, which measured all of them (reused 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from normpos.experiment import command
from normpos.experiment.schema import ConfigError

from . import plan as planning
from .classify import DIVERGES, STALLS, Outcome
from .plan import Key, Preset, TRAINS

MEASURED = (TRAINS, STALLS, DIVERGES)  # the outcomes of the experiment; failed / running rows run again
BAR_EXACT = ("margin_bits", "vocab", "train_tokens", "valid_tokens", "data_bin")


@dataclass
class Reuse:
    """What the record gives this invocation."""
    found: Dict[Key, Tuple[Outcome, Path]] = field(default_factory=dict)
    commits: Dict[Key, str] = field(default_factory=dict)  # who measured each reused row
    plan: Optional[dict] = None                            # the record's plan.json (None: no record)
    left_out: int = 0                                      # measured rows not reused
    why: str = ""


def run_identity(run: str) -> str:
    """``.../<dataset>/<experiment>/<configuration>_<hash>/seed-<n>`` -> those four parts (the run root varies)."""
    return "/".join(Path(run).parts[-4:])


def settings_difference(old: dict, settings: dict, bar: dict) -> str:
    """'' when the record's plan.json was made under these run settings and this bar, else what differs."""
    changed = [f"{k} {old['settings'].get(k)!r} -> {v!r}" for k, v in settings.items() if old["settings"].get(k) != v]
    was = old.get("bar", {})
    changed += [f"bar {k} {was.get(k)!r} -> {bar.get(k)!r}" for k in BAR_EXACT if was.get(k) != bar.get(k)]
    if not math.isclose(was.get("bits", math.nan), bar["bits"], rel_tol=1e-9):
        changed.append(f"unigram bits {was.get('bits')} -> {bar['bits']}")
    return "; ".join(changed)


def read(out: Path, base, settings: dict, bar: dict) -> Reuse:
    """The rows of ``out``'s record this invocation may reuse (see the module docstring). ``base``: the
    composed experiment every run starts from (``runner.compose_base``)."""
    from .report import load_runs
    from .runner import run_config

    out = Path(out)
    if not (out / "runs.csv").is_file() or not (out / "plan.json").is_file():
        return Reuse()
    old = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    rows = [r for r in load_runs(out) if r["outcome"] in MEASURED]
    reuse = Reuse(plan=old)
    differs = settings_difference(old, settings, bar)
    if differs:
        reuse.left_out, reuse.why = len(rows), f"measured under other settings ({differs})"
        return reuse
    other = []
    for r in rows:
        key = Key(r["scheme"], r["depth"], r["lr"], r["seed"], r["warmup"])
        try:
            want = run_identity(str(command.run_dir(run_config(base, key))))
        except ConfigError:  # e.g. a scheme this checkout does not register
            want = None
        if want is None or run_identity(r["run"]) != want:
            other.append(r)
            continue
        reuse.found[key] = (Outcome(r["outcome"], r["valid_nll"], r["at_update"], r["updates"], r["wall_seconds"],
                                    r["reason"]), Path(r["run"]))
        reuse.commits[key] = r.get("commit") or old["commit"]
    if other:
        names = sorted({r["scheme"] for r in other})
        reuse.left_out = len(other)
        reuse.why = (f"another run configuration than this invocation composes (schemes {', '.join(names)}: "
                     "their run folder's identity hash differs)")
    return reuse


def merged_preset(preset: Preset, old: Optional[dict]) -> Preset:
    """The map the written folder covers: this invocation's preset plus every scheme, depth, lr and seed of
    the record (restricting SCHEMES, DEPTHS or LRS restricts what trains, never what the folder shows)."""
    import copy

    if old is None:
        return preset
    merged = copy.deepcopy(preset)
    merged.schemes = planning.order_schemes(list(dict.fromkeys([*old["schemes"], *preset.schemes])))
    merged.depths = sorted({*old["depths"], *preset.depths})
    merged.lrs = sorted({*old["lrs"], *preset.lrs})
    merged.seeds = list(dict.fromkeys([*preset.seeds, *old["seeds"]]))
    w, ow = merged.warmup, old["warmup"]
    if ow["depth"] == w.depth:
        w.schemes = list(dict.fromkeys([*ow["schemes"], *w.schemes]))
        w.updates = sorted({*ow["updates"], *w.updates})
        w.lrs = sorted({*ow["lrs"], *(w.lrs if w.lrs is not None else preset.lrs)})
    return merged


def words(reuse: Reuse, out: Path) -> List[str]:
    """The plan's lines about the record: what is reused, and what is not and why (one line)."""
    if reuse.plan is None:
        return [f"  no record in {out} (runs.csv and plan.json): every run of the plan is new unless its run "
                "folder exists"]
    by_commit: Dict[str, int] = {}
    for c in reuse.commits.values():
        by_commit[c[:7]] = by_commit.get(c[:7], 0) + 1
    lines = [f"  reused from {out}/runs.csv: {len(reuse.found)} measured rows of the same settings ("
             + (", ".join(f"{n} measured at {c}" for c, n in by_commit.items()) or "none") + ")"]
    if reuse.left_out:
        lines.append(f"frontier: not reusing {reuse.left_out} rows of {out}/runs.csv: {reuse.why}")
    return lines
