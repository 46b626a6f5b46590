"""What a frontier map trains: the preset (``configs/frontier/<name>.yaml``), its cells, and which runs come next.

A preset names the Hydra experiment each run is composed from (model, data, batch, N updates: one
``configs/experiment/*.yaml``) and the map around it:

- ``schemes`` (``all``: every registered scheme) x ``depths`` (encoder = decoder layers) are the *columns*;
- ``lrs``, ascending, a log grid: each column runs up it, seed ``seeds[0]`` first;
- ``skip_after``: a column stops after that many lrs in a row that did not train (stalled or diverged). The
  frontier is decided by the first lr that does not train above the lowest training ones, so the runs
  above two such lrs cannot move it; they could only show a column that trains again higher up, which a
  second failure in a row makes unlikely. The table marks the lrs left out;
- the other ``seeds`` run only next to the frontier of seed 1 (its last training lr and the first that does
  not train), and go on down (up) while they fail (train), so that the band between "every seed trains" and
  "some seed trains" is bounded by runs of every seed;
- ``warmup``: for ``schemes`` at ``depth``, rows of ``lrs`` (a subset of the map's; null: all) x warm-up
  ``updates`` (one row per W, seed 1, the same skip rule); the W = 1 row is the map's own column there;
- ``margin_bits``: how far below the unigram bar the valid loss must be (``classify.py``);
- ``jobs``: runs at once (null: as ``make sweep`` packs GPUs, ``normpos.experiment.devices``).

Which runs come next is a pure function of the outcomes so far (:func:`wanted`), so a resumed map makes the
same choices, and the choices are tested without training anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

REPO = Path(__file__).resolve().parents[3]
PRESETS = REPO / "configs" / "frontier"
TRAINS = "trains"  # the one outcome that continues a column (classify.py has the others)


class PlanError(ValueError):
    """A preset or restriction that cannot be run; the message is one line."""


@dataclass
class WarmupAxis:
    schemes: List[str] = field(default_factory=lambda: ["post_ln", "pre_ln"])
    depth: int = 4
    updates: List[int] = field(default_factory=lambda: [1, 10, 50])
    lrs: Optional[List[float]] = None  # null: the map's lrs


@dataclass
class Preset:
    name: str = ""           # the file's name (set when loaded)
    experiment: str = "???"
    schemes: Any = "all"     # "all" or a list of scheme names
    depths: List[int] = field(default_factory=list)
    lrs: List[float] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [1, 2])
    skip_after: int = 2
    margin_bits: float = 0.5
    jobs: Optional[int] = None
    warmup: WarmupAxis = field(default_factory=WarmupAxis)


@dataclass(frozen=True)
class Key:
    """One run of the map: its folder is the experiment's run for these values."""
    scheme: str
    depth: int
    lr: float
    seed: int
    warmup: int = 1

    def overrides(self) -> Dict[str, object]:
        return {"model.scheme": self.scheme, "model.layers": self.depth, "optim.lr": self.lr, "seed": self.seed,
                "schedule.warmup_updates": self.warmup}

    def words(self) -> str:
        from normpos.experiment.command import format_number

        warm = f" W {self.warmup}" if self.warmup > 1 else ""
        return f"{self.scheme} L{self.depth} lr {format_number(self.lr)}{warm} seed {self.seed}"


@dataclass(frozen=True)
class Column:
    """A sequence of runs up the lr grid: a (scheme, depth) column of the map, or a warm-up row."""
    scheme: str
    depth: int
    warmup: int
    lrs: Tuple[float, ...]
    seeds: Tuple[int, ...]

    def key(self, index: int, seed: int) -> Key:
        return Key(self.scheme, self.depth, self.lrs[index], seed, self.warmup)


def split_list(text: Optional[str]) -> Optional[List[str]]:
    """'a,b c' -> ['a', 'b', 'c'] (Make variables come either way); None or blank -> None."""
    if text is None or not text.strip():
        return None
    return [part for part in text.replace(",", " ").split() if part]


def load_preset(name: str, schemes: Optional[Sequence[str]] = None, depths: Optional[Sequence[int]] = None,
                lrs: Optional[Sequence[float]] = None, folder: Path = PRESETS) -> Preset:
    """The preset file merged onto :class:`Preset`, with SCHEMES / DEPTHS / LRS replacing its lists."""
    from normpos_fairseq.schemes import scheme_names

    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(folder).glob("*.yaml"))
        raise PlanError(f"no frontier preset {name!r} ({path} is absent); presets: {', '.join(known)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Preset), OmegaConf.load(path))
        preset: Preset = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise PlanError(f"{path}: {str(err).splitlines()[0]}") from None
    preset.name = name
    known = scheme_names()
    if preset.schemes == "all":
        preset.schemes = order_schemes(known)
    if schemes:
        preset.schemes = list(schemes)
    if depths:
        preset.depths = [int(d) for d in depths]
    if lrs:
        preset.lrs = sorted(float(x) for x in lrs)
        if preset.warmup.lrs:  # the warm-up rows keep the lrs of theirs that are still in the map
            preset.warmup.lrs = [x for x in preset.warmup.lrs if x in preset.lrs]
    check(preset, known)
    return preset


def order_schemes(names: Sequence[str]) -> List[str]:
    """Post-LN and Pre-LN first (the paper's pair), then the others by name."""
    first = [n for n in ("post_ln", "pre_ln") if n in names]
    return first + sorted(n for n in names if n not in first)


def check(preset: Preset, known: Sequence[str]) -> None:
    unknown = [s for s in list(preset.schemes) + list(preset.warmup.schemes) if s not in known]
    if unknown:
        raise PlanError(f"unknown scheme {unknown[0]!r}; valid: {', '.join(known)}")
    if not preset.schemes or not preset.depths or not preset.lrs or not preset.seeds:
        raise PlanError("a frontier needs at least one scheme, depth, lr and seed")
    if any(d < 1 for d in preset.depths):
        raise PlanError(f"depths must be >= 1, got {preset.depths}")
    if any(x <= 0 for x in preset.lrs) or list(preset.lrs) != sorted(set(preset.lrs)):
        raise PlanError(f"lrs must be positive, distinct and ascending, got {preset.lrs}")
    if len(set(preset.seeds)) != len(preset.seeds):
        raise PlanError(f"seeds must be distinct, got {preset.seeds}")
    if preset.skip_after < 1:
        raise PlanError(f"skip_after must be >= 1, got {preset.skip_after}")
    w = preset.warmup
    if not w.updates or w.updates[0] != 1 or list(w.updates) != sorted(set(w.updates)):
        raise PlanError(f"warmup.updates must start at 1 (no warm-up) and ascend, got {w.updates}")
    if w.lrs and not set(w.lrs) <= set(preset.lrs):
        raise PlanError(f"warmup.lrs must be lrs of the map ({preset.lrs}), got {w.lrs}")
    if preset.jobs is not None and preset.jobs < 1:
        raise PlanError(f"jobs must be >= 1 (or null), got {preset.jobs}")


def columns(preset: Preset) -> Tuple[List[Column], List[Column]]:
    """(the map's columns, the warm-up rows with W > 1: W = 1 is the map's column). Warm-up rows exist for the
    warm-up schemes among the chosen ones, at the warm-up depth when it is one of the chosen depths."""
    seeds = tuple(preset.seeds)
    grid = [Column(s, d, 1, tuple(preset.lrs), seeds) for s in preset.schemes for d in preset.depths]
    w = preset.warmup
    rows = []
    if w.depth in preset.depths and (w.lrs is None or w.lrs):
        lrs = tuple(sorted(w.lrs if w.lrs is not None else preset.lrs))
        rows = [Column(s, w.depth, u, lrs, seeds[:1]) for s in w.schemes if s in preset.schemes
                for u in w.updates if u > 1]
    return grid, rows


def band_top(trains: Sequence[Optional[bool]]) -> Optional[int]:
    """Index of the frontier in a column of True (trains) / False (does not) / None (not run): the top of the
    lowest band of consecutive training lrs, counted from the lowest lr that trains; None when none does.

    Lrs below that band that did not train are too slow for N updates, not unstable (instability only grows
    with the lr); when the lowest lr trains, this is "the largest lr that trains with every smaller lr
    training as well"."""
    start = next((i for i, t in enumerate(trains) if t is True), None)
    if start is None:
        return None
    top = start
    while top + 1 < len(trains) and trains[top + 1] is True:
        top += 1
    return top


def next_up(outcome: Sequence[Optional[str]], skip_after: int) -> Optional[int]:
    """The next lr index of a column's first seed, or None when its climb is over (the top was run, or
    ``skip_after`` lrs in a row did not train)."""
    misses = 0
    for i, got in enumerate(outcome):
        if got is None:
            return i
        misses = 0 if got == TRAINS else misses + 1
        if misses >= skip_after:
            return None
    return None


def wanted(column: Column, results: Dict[Key, str], skip_after: int) -> List[Key]:
    """The runs this column needs next, given the outcomes so far (``results``: Key -> outcome). The first
    seed runs up the grid one lr at a time until ``skip_after`` lrs in a row did not train; then each other
    seed runs next to the first seed's frontier (see the module docstring)."""
    first, n = column.seeds[0], len(column.lrs)
    outcome = [results.get(column.key(i, first)) for i in range(n)]
    climb = next_up(outcome, skip_after)
    if climb is not None:
        return [column.key(climb, first)]
    frontier = band_top([None if o is None else o == TRAINS for o in outcome])
    want: List[Key] = []
    for seed in column.seeds[1:]:
        mine = {i: results.get(column.key(i, seed)) for i in range(n)}
        cells = [0] if frontier is None else [frontier] + ([frontier + 1] if frontier + 1 < n else [])
        if frontier is not None:  # down while this seed fails: where does it train?
            i = frontier
            while mine[i] is not None and mine[i] != TRAINS and i > 0:
                i -= 1
                cells.append(i)
        i = 0 if frontier is None else frontier + 1  # up while this seed trains: where does it stop?
        while i < n and mine[i] == TRAINS and i + 1 < n:
            i += 1
            cells.append(i)
        want += [column.key(i, seed) for i in dict.fromkeys(cells) if mine[i] is None]
    return want


def most_runs(column: Column, results: Dict[Key, str], skip_after: int) -> int:
    """How many more runs the column needs at most on its climb (every lr left, when it is not over), plus two
    per other seed not yet run next to the frontier (more only where that seed's frontier moves): the plan's
    run count, which only falls as runs end."""
    first, n = column.seeds[0], len(column.lrs)
    outcome = [results.get(column.key(i, first)) for i in range(n)]
    left = 0 if next_up(outcome, skip_after) is None else sum(o is None for o in outcome)
    for seed in column.seeds[1:]:
        ran = sum(results.get(column.key(i, seed)) is not None for i in range(n))
        left += max(0, min(2, n) - ran)
    return left
