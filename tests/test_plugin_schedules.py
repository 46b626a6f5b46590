"""Each learning-rate schedule gives, at chosen updates/epochs, the rate its formula says.

Schedulers and optimizers are built by fairseq's own builders from a fairseq-train command line.
"""

import math

import pytest

from fairseq_entry import build_scheduler

LR = 1e-3


def lrs_at(scheduler, optimizer, updates):
    """Rate used by update t (1-based) = rate set after update t - 1, as fairseq's Trainer does it."""
    out = {}
    for t in updates:
        scheduler.step_update(t - 1)
        out[t] = optimizer.get_lr()
    return out


def warmup_args(warmup, *extra):
    return ("--lr-scheduler", "normpos_warmup_inverse_sqrt", "--lr", str(LR),
            "--warmup-updates", str(warmup), "--optimizer", "adam", *extra)


@pytest.mark.parametrize("warmup", [1, 500, 4000])
def test_warmup_then_inverse_sqrt_anchored_at_warmup(dict_dir, warmup):
    optimizer, scheduler = build_scheduler(dict_dir, *warmup_args(warmup))
    got = lrs_at(scheduler, optimizer, [1, 2, warmup // 2 or 1, warmup, warmup + 1, 10_000, 40_000])
    for t, lr in got.items():
        want = LR * t / warmup if t <= warmup else LR * math.sqrt(warmup / t)
        assert lr == pytest.approx(want, rel=1e-12), t
    assert got[1] == pytest.approx(LR / warmup)  # W = 1: the first update already runs at lr_max
    if warmup == 1:
        # fairseq's reading: the tail is tied to W, so with W = 1 the rate is lr/10 at update 100
        assert lrs_at(scheduler, optimizer, [100])[100] == pytest.approx(LR / 10)


@pytest.mark.parametrize("warmup", [1, 500, 4000])
def test_warmup_then_inverse_sqrt_anchored_at_fixed_update(dict_dir, warmup):
    optimizer, scheduler = build_scheduler(
        dict_dir, *warmup_args(warmup, "--decay-anchor", "fixed", "--decay-anchor-updates", "4000")
    )
    got = lrs_at(scheduler, optimizer, [1, warmup, 2000, 4000, 4001, 16_000])
    for t in (2000, 4000):
        if t > warmup:
            assert got[t] == pytest.approx(LR), t  # flat between the ramp and the anchor
    assert got[warmup] == pytest.approx(LR)
    # the tail is the same for every W: only the ramp changes
    assert got[16_000] == pytest.approx(LR * math.sqrt(4000 / 16_000))
    assert got[4001] == pytest.approx(LR * math.sqrt(4000 / 4001))


@pytest.mark.parametrize("bad, message", [
    (warmup_args(0), "--warmup-updates must be >= 1"),
    (warmup_args(-5), "--warmup-updates must be >= 1"),
    (warmup_args(500, "--decay-anchor", "nowhere"), "unknown --decay-anchor"),
    (warmup_args(8000, "--decay-anchor", "fixed", "--decay-anchor-updates", "4000"), "must be >= --warmup-updates"),
    (("--lr-scheduler", "normpos_warmup_inverse_sqrt", "--lr", "0", "--optimizer", "adam"), "--lr must be > 0"),
    (("--lr-scheduler", "normpos_step_once", "--lr=-1e-3", "--optimizer", "adam"), "--lr must be > 0"),
])
def test_bad_schedule_values_are_refused(dict_dir, bad, message):
    with pytest.raises(ValueError, match=message):
        build_scheduler(dict_dir, *bad)


def test_step_once_shrinks_once_at_epoch_8(dict_dir):
    optimizer, scheduler = build_scheduler(
        dict_dir, "--lr-scheduler", "normpos_step_once", "--lr", "5e-4", "--optimizer", "adam",
        "--anneal-epoch", "8", "--lr-shrink", "0.1",
    )
    got = {}
    for epoch in range(1, 13):
        scheduler.step_begin_epoch(epoch)
        scheduler.step_update(epoch * 100)  # per-update calls leave the epoch's rate alone
        got[epoch] = optimizer.get_lr()
        scheduler.step(epoch, val_loss=5.0)
    for epoch, lr in got.items():
        assert lr == pytest.approx(5e-4 if epoch < 8 else 5e-5), epoch  # once, not 0.1 ** (epoch - 7)


def test_constant_then_inverse_sqrt_and_resume(dict_dir):
    argv = ("--lr-scheduler", "normpos_constant_then_inverse_sqrt", "--lr", "7e-4", "--optimizer", "adam",
            "--decay-epoch", "6")
    optimizer, scheduler = build_scheduler(dict_dir, *argv)
    per_epoch = 1000
    for epoch in range(1, 6):
        scheduler.step_begin_epoch(epoch)
        scheduler.step_update(epoch * per_epoch)
        assert optimizer.get_lr() == pytest.approx(7e-4)
    scheduler.step_begin_epoch(6)  # 5000 updates done when epoch 6 starts
    assert optimizer.get_lr() == pytest.approx(7e-4)  # continuous (lr_shrink = 1)
    scheduler.step_update(20_000)
    assert optimizer.get_lr() == pytest.approx(7e-4 * math.sqrt(5000 / 20_000))
    # a resumed run restores where the decay started
    state = scheduler.state_dict()
    optimizer2, resumed = build_scheduler(dict_dir, *argv)
    resumed.load_state_dict(state)
    resumed.step_begin_epoch(9)
    resumed.step_update(20_000)
    assert optimizer2.get_lr() == pytest.approx(optimizer.get_lr())


def test_constant_then_inverse_sqrt_with_step(dict_dir):
    optimizer, scheduler = build_scheduler(
        dict_dir, "--lr-scheduler", "normpos_constant_then_inverse_sqrt", "--lr", "1.5e-3",
        "--optimizer", "adam", "--decay-epoch", "6", "--lr-shrink", "0.1",
    )
    scheduler.step_update(5000)  # updates done when epoch 6 starts
    scheduler.step_begin_epoch(6)
    assert optimizer.get_lr() == pytest.approx(1.5e-4)
    scheduler.step_update(45_000)
    assert optimizer.get_lr() == pytest.approx(1.5e-4 / 3)


def test_linear_decay_without_warmup_is_fairseqs_polynomial_decay(dict_dir):
    """The paper's RAdam runs: linear decay from lr to 0, no warm-up (fairseq's own scheduler)."""
    optimizer, scheduler = build_scheduler(
        dict_dir, "--lr-scheduler", "polynomial_decay", "--lr", "5e-4", "--optimizer", "normpos_radam",
        "--power", "1", "--warmup-updates", "0", "--total-num-update", "10000", "--end-learning-rate", "0",
    )
    for done in (0, 2500, 5000, 9999):
        scheduler.step_update(done)
        assert optimizer.get_lr() == pytest.approx(5e-4 * (1 - done / 10000)), done
