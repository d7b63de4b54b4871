"""The fine-tuning learning-rate schedule: per-step linear warm-up, then cosine decay."""

from __future__ import annotations

import pytest

from edgeclass.train.callbacks import cosine_lr


def test_warm_up_ramps_linearly_per_step_to_the_base_rate():
    steps = 45
    ramp = [cosine_lr(1e-4, (b + 0.5) / steps, 10, warmup=1) for b in range(steps)]
    assert ramp[0] == pytest.approx(1e-4 * 0.5 / steps)
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    assert cosine_lr(1e-4, 1.0, 10, warmup=1) == pytest.approx(1e-4)


def test_cosine_after_warm_up_decays_to_zero_and_depends_on_position_only():
    values = [cosine_lr(1e-4, p / 10, 10, warmup=1) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(1e-4, 5.5, 10, warmup=1) == pytest.approx(5e-5)
    # Resume restarts at an epoch boundary: the same position gives the same rate.
    assert cosine_lr(1e-4, 3.2, 10, warmup=1) == cosine_lr(1e-4, 3.2, 10, warmup=1)


def test_no_warm_up_is_plain_cosine_and_a_one_epoch_run_still_reaches_the_base_rate():
    assert cosine_lr(1e-4, 0.0, 10, warmup=0) == pytest.approx(1e-4)
    assert cosine_lr(1e-4, 0.0, 1, warmup=1) == pytest.approx(1e-4)
