"""`make bench` says how far to trust its ratio: each model's spread over the rounds, the ratio's range over the
rounds, and a warning when the rounds disagree by more than the 2% the verdict needs (issue 27). The statistics
are checked on built timings with a known answer; the printed lines and the JSON on a real tiny benchmark."""

import json

import pytest

from normpos import bench_models
from normpos.bench_models import PAIRS, Memory, summarize, verdict_lines

TOKENS = 1000
OURS, REF = PAIRS[0]
OURS_PRE, REF_PRE = PAIRS[1]


def timings(ours_rounds):
    """Every built-in round takes 1 s; the Post-LN pair's ours takes ``ours_rounds``; Pre-LN's equals its built-in."""
    n = len(ours_rounds)
    return {REF: [1.0] * n, OURS: list(ours_rounds), REF_PRE: [2.0] * n, OURS_PRE: [2.0] * n}


def test_rounds_that_agree_give_no_warning():
    found = summarize(timings([1.0, 1.0, 1.0]), TOKENS, Memory("cpu"))
    assert found["ratio_range"][OURS] == [1.0, 1.0]
    assert found["rounds_agree"] == {OURS: True, OURS_PRE: True}
    assert found["models"][OURS]["spread"] == 0
    assert not any("WARNING" in line for line in verdict_lines(found))


def test_a_slow_round_is_flagged_with_the_ratio_range():
    # round 2 of ours took 10% longer: the median ratio is still 1.000, the rounds span 0.909..1.000
    found = summarize(timings([1.0, 1.1, 1.0]), TOKENS, Memory("cpu"))
    assert found["ratios"][OURS] == 1.0
    assert found["ratio_range"][OURS] == [round(1 / 1.1, 4), 1.0]
    assert found["models"][OURS]["spread"] == pytest.approx((1000 - 1000 / 1.1) / 1000, abs=1e-4)
    assert found["rounds_agree"] == {OURS: False, OURS_PRE: True}
    lines = verdict_lines(found)
    assert f"  ratio {OURS} / built-in: 1.000 (median round), 0.909..1.000 over 3 rounds" in lines
    warnings = [line for line in lines if "WARNING" in line]
    assert len(warnings) == 1 and "disagree by 9.1% (> the 2%" in warnings[0]


def test_a_spread_just_inside_the_margin_passes():
    found = summarize(timings([1.0, 1.0 / 0.985, 1.0]), TOKENS, Memory("cpu"))
    assert found["rounds_agree"][OURS] is True


def test_a_real_tiny_benchmark_prints_spread_and_range(tiny_bin, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench_models.main(["--data", str(tiny_bin), "--device", "cpu", "--rounds", "2", "--updates", "2",
                       "--max-tokens", "400", "--json", str(out), "--model-args",
                       "--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 16 --decoder-embed-dim 16 "
                       "--encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2 "
                       "--decoder-attention-heads 2"])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    for ours, ref in PAIRS:
        seconds = {name: record["models"][name]["round_seconds"] for name in (ours, ref)}
        expected = [round(r / o, 4) for o, r in zip(seconds[ours], seconds[ref])]
        assert record["ratio_rounds"][ours] == pytest.approx(expected, abs=2e-4)
        low, high = record["ratio_range"][ours]
        assert f"{low:.3f}..{high:.3f} over 2 rounds" in printed
        assert ("WARNING" in printed) == (not all(record["rounds_agree"].values()))
    assert printed.count("spread") == len(record["models"])
