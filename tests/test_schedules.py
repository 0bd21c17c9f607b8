"""Learning-rate schedules: each rate is its formula, and PyTorch's for one-cycle."""

import math

import pytest

from numpycnn import schedules


def test_exponential_decays_once_per_epoch():
    s = schedules.Exponential(0.5)
    assert [s.lr(k, 0.1, 4, 20) for k in (0, 3, 4, 8, 19)] == [0.1, 0.1, 0.05, 0.025, 0.1 / 16]
    assert schedules.Exponential().lr(99, 0.1, 4, 100) == 0.1


def test_cosine_warms_up_linearly_then_follows_half_a_cosine():
    s = schedules.Cosine(warmup=0.1, final=0.01)
    total, base = 100, 0.2
    warm = 10
    for k in range(warm):
        assert s.lr(k, base, 10, total) == pytest.approx(base * (k + 1) / warm)
    for k in range(warm, total):
        progress = (k - warm) / (total - 1 - warm)
        low = 0.01 * base
        assert s.lr(k, base, 10, total) == pytest.approx(
            low + (base - low) * (1 + math.cos(math.pi * progress)) / 2
        )
    assert s.lr(warm, base, 10, total) == pytest.approx(base)
    assert s.lr(total - 1, base, 10, total) == pytest.approx(0.01 * base)


def test_cosine_without_warmup_starts_at_the_base_rate():
    assert schedules.Cosine().lr(0, 0.3, 5, 50) == pytest.approx(0.3)


def test_onecycle_rises_to_the_base_rate_then_falls():
    s = schedules.OneCycle(pct_start=0.3, div_factor=25, final_div_factor=1e4)
    rates = [s.lr(k, 0.01, 10, 100) for k in range(100)]
    assert rates[0] == pytest.approx(0.01 / 25)
    assert max(rates) == pytest.approx(0.01) and rates.index(max(rates)) == 29
    assert rates[-1] == pytest.approx(0.01 / 25 / 1e4)
    assert all(a <= b for a, b in zip(rates[:29], rates[1:30]))
    assert all(a >= b for a, b in zip(rates[29:], rates[30:]))


@pytest.mark.parametrize(("total", "pct"), [(100, 0.3), (37, 0.25), (10, 0.5), (1000, 0.1)])
def test_onecycle_equals_pytorchs_onecyclelr(total, pct):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=total, pct_start=pct, cycle_momentum=False
    )
    ours = schedules.OneCycle(pct_start=pct)
    for k in range(total):
        assert ours.lr(k, 0.1, 10, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        ref.step()


def test_get_and_spec_round_trip():
    s = schedules.get("cosine", warmup=0.05)
    assert s.spec() == {"name": "cosine", "warmup": 0.05, "final": 0.0}
    assert schedules.get(**s.spec()).spec() == s.spec()
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        schedules.get("step")
    with pytest.raises(ValueError, match="decay must be in"):
        schedules.Exponential(0)
