"""The frontier map's choices: which runs come next from the outcomes so far, the presets, and lr* with its band.

The scheduler (``normpos.frontier.plan.wanted``) is a pure function of the outcomes, so a whole map is played
here against outcome tables (what each (lr, seed) would do) without training; the runs it asks for are
checked one by one. Frontier extraction (``extract.column_frontier``) is checked on columns built to have
each feature: a seed band, a non-monotone column, a slow bottom, nothing training, a bound at the top.
"""

import math

import pytest

from normpos.frontier import plan as planning
from normpos.frontier.extract import column_frontier, slope
from normpos.frontier.plan import TRAINS, Column, PlanError, band_top, load_preset, wanted

S, D = "stalls", "diverges"
LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)


def play(column: Column, table, skip_after: int = 2):
    """Run the scheduler to the end against ``table`` ({seed: [outcome per lr]}); the runs asked, in order."""
    results, asked = {}, []
    while True:
        ready = [k for k in wanted(column, results, skip_after) if k not in results]
        if not ready:
            return asked, results
        for key in ready:
            asked.append((column.lrs.index(key.lr), key.seed))
            results[key] = table[key.seed][column.lrs.index(key.lr)]


def test_a_column_climbs_until_two_lrs_in_a_row_do_not_train_then_seed_2_runs_next_to_the_frontier():
    col = Column("post_ln", 4, 1, LRS, (1, 2))
    table = {1: [TRAINS, TRAINS, S, D, D, D], 2: [TRAINS, TRAINS, S, D, D, D]}
    asked, _ = play(col, table)
    # seed 1: 1e-3, 2e-3 train, 4e-3 and 8e-3 do not: 1.6e-2 and 3.2e-2 are never run
    assert asked[:4] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    # seed 2: the frontier (2e-3) and the first lr above it that does not train (4e-3), nothing else
    assert sorted(asked[4:]) == [(1, 2), (2, 2)]


def test_one_failure_between_training_lrs_does_not_stop_the_climb():
    col = Column("pre_ln", 2, 1, LRS, (1,))
    asked, _ = play(col, {1: [TRAINS, S, TRAINS, S, S, TRAINS]})
    assert asked == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]  # stops after 8e-3 and 1.6e-2; 3.2e-2 left out


def test_seed_2_goes_down_while_it_fails_and_up_while_it_trains():
    col = Column("admin", 8, 1, LRS, (1, 2))
    # seed 1's frontier is 4e-3 (index 2); seed 2 fails there and at 2e-3, trains at 1e-3
    asked, _ = play(col, {1: [TRAINS, TRAINS, TRAINS, S, S, S], 2: [TRAINS, S, S, S, S, S]})
    assert [a for a in asked if a[1] == 2] == [(2, 2), (3, 2), (1, 2), (0, 2)]
    # seed 2 trains above seed 1's frontier: it climbs until it stops training
    asked, _ = play(col, {1: [TRAINS, TRAINS, TRAINS, S, S, S], 2: [TRAINS, TRAINS, TRAINS, TRAINS, TRAINS, S]})
    assert [a for a in asked if a[1] == 2] == [(2, 2), (3, 2), (4, 2), (5, 2)]


def test_a_column_that_never_trains_gets_its_second_seed_at_the_bottom_and_one_at_the_top_only_there():
    asked, _ = play(Column("post_ln", 8, 1, LRS, (1, 2)), {1: [S] * 6, 2: [S] * 6})
    assert asked == [(0, 1), (1, 1), (0, 2)]
    asked, _ = play(Column("pre_ln", 2, 1, LRS, (1, 2)), {1: [TRAINS] * 6, 2: [TRAINS] * 6})
    assert asked == [(i, 1) for i in range(6)] + [(5, 2)]  # lr* at the top of the grid: its cell, nothing above


def test_the_run_count_only_falls_as_outcomes_come_in():
    col = Column("post_ln", 4, 1, LRS, (1, 2))
    table = {1: [TRAINS, TRAINS, S, D, D, D], 2: [TRAINS, TRAINS, S, D, D, D]}
    results, counts = {}, []
    while True:
        counts.append(planning.most_runs(col, results, 2))
        ready = [k for k in wanted(col, results, 2) if k not in results]
        if not ready:
            break
        results[ready[0]] = table[ready[0].seed][LRS.index(ready[0].lr)]
    assert counts[0] == 6 + 2 and counts[-1] == 0
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts
    assert len(results) == 6  # what it said up front was an upper bound


def test_band_top_is_the_top_of_the_lowest_band_of_training_lrs():
    assert band_top([True, True, False, True]) == 1
    assert band_top([False, True, True, None, True]) == 2  # too slow at the bottom; an unrun lr ends the band
    assert band_top([False, False]) is None and band_top([]) is None


def column(outcomes):
    """{lr index: {seed: outcome}} from per-seed lists (None: not run)."""
    out = {}
    for seed, row in outcomes.items():
        for i, kind in enumerate(row):
            if kind is not None:
                out.setdefault(i, {})[seed] = kind
    return out


def test_seeds_that_disagree_give_a_band_not_a_point():
    f = column_frontier(LRS, column({1: [TRAINS, TRAINS, TRAINS, S, S, None],
                                     2: [None, TRAINS, S, TRAINS, S, None]}), first_seed=1)
    # every seed trains up to 2e-3 (seed 2 stalls at 4e-3); some seed trains up to 8e-3 (seed 2 there)
    assert (f.lr_star, f.band_top) == (2e-3, 8e-3)
    assert f.skipped == [3.2e-2] and not f.at_top and f.inside


def test_a_non_monotone_column_keeps_the_lower_frontier_and_says_where_it_trains_again():
    f = column_frontier(LRS, column({1: [TRAINS, TRAINS, S, TRAINS, S, S]}), first_seed=1)
    assert (f.lr_star, f.band_top) == (2e-3, 2e-3)
    assert f.trains_again == [8e-3]


def test_slow_bottom_below_grid_and_top_bound():
    slow = column_frontier(LRS, column({1: [S, TRAINS, TRAINS, S, S, None]}), first_seed=1)
    assert slow.lr_star == 4e-3 and slow.slow_bottom == [1e-3]
    none = column_frontier(LRS, column({1: [S, S, None, None, None, None]}), first_seed=1)
    assert none.below_grid and not none.inside and none.skipped == list(LRS[2:])
    top = column_frontier(LRS, column({1: [TRAINS] * 6}), first_seed=1)
    assert top.lr_star == LRS[-1] and top.at_top and not top.inside


def test_the_slope_uses_only_depths_whose_frontier_is_inside_the_grid():
    fronts = {d: column_frontier(LRS, column({1: [TRAINS] * (i + 1) + [S]}), 1)
              for i, d in enumerate((2, 4, 8))}  # lr* 1e-3, 2e-3, 4e-3: x2 per doubling of depth
    value, used = slope([(d, fronts[d]) for d in (2, 4, 8)])
    assert value == pytest.approx(1.0) and used == [2, 4, 8]
    fronts[16] = column_frontier(LRS, column({1: [TRAINS] * 6}), 1)  # at the top: a bound, left out
    fronts[1] = column_frontier(LRS, column({1: [S, S]}), 1)  # nothing trains: left out
    value, used = slope([(d, fronts[d]) for d in (1, 2, 4, 8, 16)])
    assert value == pytest.approx(1.0) and used == [2, 4, 8]
    assert slope([(2, fronts[2]), (16, fronts[16])]) == (None, [2])
    assert math.isclose(slope([(2, fronts[2]), (8, fronts[2])])[0], 0.0, abs_tol=1e-12)


def test_equal_depth_patterns_at_other_lrs_give_equal_slopes_and_tie_in_the_rank_test():
    from normpos.frontier.theory_link import spearman

    def halving(top):  # lr* halves per doubling of depth, starting from the top-th lr of the grid
        return slope([(d, column_frontier(LRS, column({1: [TRAINS] * (top - i) + [S]}), 1))
                      for i, d in enumerate((2, 4, 8))])[0]

    def flat(top):
        return slope([(d, column_frontier(LRS, column({1: [TRAINS] * top + [S]}), 1)) for d in (2, 4, 8)])[0]

    # unrounded, these fits come out as -1.0000000000000009, -0.9999999999999996, 4e-16, 1e-15, ...
    assert {halving(3), halving(4), halving(5)} == {-1.0} and {flat(1), flat(3), flat(5)} == {0.0}
    # tied frontier slopes share one average rank (1.5, 1.5, 3.5, 3.5 against 1, 2, 3, 4): rho = 4 / sqrt(5 * 4),
    # by hand; ties broken by float noise would give 0.8 or 1.0
    grads, fronts = [0.1, 0.2, 0.3, 0.4], [halving(3), halving(5), flat(2), flat(4)]
    assert spearman(grads, fronts)["rho"] == pytest.approx(4 / math.sqrt(20))


def test_every_preset_loads_and_names_an_experiment_that_exists():
    from conftest import REPO

    for path in sorted((REPO / "configs" / "frontier").glob("*.yaml")):
        preset = load_preset(path.stem)
        assert (REPO / "configs" / "experiment" / f"{preset.experiment}.yaml").is_file()
        grid, rows = planning.columns(preset)
        assert len(grid) == len(preset.schemes) * len(preset.depths)
        assert all(r.warmup > 1 and r.depth == preset.warmup.depth for r in rows)
    cpu = load_preset("cpu")
    assert cpu.schemes[:2] == ["post_ln", "pre_ln"] and len(cpu.schemes) >= 14 and len(cpu.depths) >= 3


def test_restrictions_replace_the_presets_lists_and_bad_values_are_one_line():
    preset = load_preset("cpu", schemes=["pre_ln", "deepnorm"], depths=["8"], lrs=["4e-3", "1e-3"])
    assert preset.schemes == ["pre_ln", "deepnorm"] and preset.depths == [8] and preset.lrs == [1e-3, 4e-3]
    grid, rows = planning.columns(preset)
    assert [c.scheme for c in grid] == ["pre_ln", "deepnorm"] and rows == []  # the warm-up depth is 4
    for kwargs, words in (({"schemes": ["nope"]}, "unknown scheme 'nope'"), ({"depths": ["0"]}, "depths must be >= 1")):
        with pytest.raises(PlanError, match=words):
            load_preset("cpu", **kwargs)
    with pytest.raises(PlanError, match="no frontier preset 'huge'"):
        load_preset("huge")
