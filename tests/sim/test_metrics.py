"""Metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usermirrorer.sim.metrics import (
    choice_share,
    expected_calibration_error,
    log_loss,
    mean_ci,
    sample_choices,
    sampled_hits,
    summarize_by_group,
    target_share,
    top1_accuracy,
)


def test_sampled_accuracy_extremes_and_rate():
    rng = np.random.default_rng(0)
    probs = [np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.25, 0.25, 0.25, 0.25])]
    hits = sampled_hits(probs, [1, 1, 3], repeats=4000, rng=rng)
    assert hits[0] == 4000  # all mass on the real item
    assert hits[1] == 0  # no mass on it
    assert abs(hits[2] / 4000 - 0.25) < 0.03
    choices = sample_choices([np.array([0.2, 0.8])], 20000, np.random.default_rng(1))
    assert abs(choices.mean() - 0.8) < 0.01
    # same seed -> same draws
    again = sample_choices([np.array([0.2, 0.8])], 20000, np.random.default_rng(1))
    assert np.array_equal(choices, again)


def test_mean_ci_normal_approximation():
    m, lo, hi = mean_ci([0.0, 1.0, 0.0, 1.0])
    half = 1.959963984540054 * math.sqrt(1 / 3) / 2  # sd (ddof=1) of 0,1,0,1 is sqrt(1/3)
    assert m == 0.5 and lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    m, lo, hi = mean_ci([0.3])
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([0.4, 0.4, 0.4])[1:] == pytest.approx((0.4, 0.4))


def test_log_loss_nats_and_bits():
    probs = [np.array([0.5, 0.5]), np.array([0.25, 0.25, 0.5])]
    assert log_loss(probs, [0, 2]) == pytest.approx(math.log(2))
    assert log_loss(probs, [0, 2], base=2) == pytest.approx(1.0)
    assert log_loss([np.array([0.25, 0.75])], [0]) == pytest.approx(math.log(4))
    # a zero probability is clipped, not infinite
    assert math.isfinite(log_loss([np.array([1.0, 0.0])], [1]))


def test_expected_calibration_error_hand_cases():
    # conf 0.9 right (bin 0.8-0.9): gap 0.1, weight 1/3; conf 0.6 right+wrong (bin 0.5-0.6): acc 0.5, gap 0.1, weight 2/3
    probs = [np.array([0.9, 0.1]), np.array([0.6, 0.4]), np.array([0.6, 0.4])]
    assert expected_calibration_error(probs, [0, 1, 0]) == pytest.approx(0.1)
    # confidently wrong: ECE 1
    assert expected_calibration_error([np.array([1.0, 0.0])], [1]) == pytest.approx(1.0)
    # calibrated: conf 0.75, right 3 of 4
    probs = [np.array([0.75, 0.25])] * 4
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.0)
    # two bins with opposite gaps do not cancel
    probs = [np.array([0.3, 0.3, 0.4])] * 2 + [np.array([0.95, 0.05])] * 2
    # bin (0.3,0.4]: conf 0.4, acc 1 -> 0.6; bin (0.9,1]: conf 0.95, acc 0 -> 0.95
    assert expected_calibration_error(probs, [2, 2, 1, 1]) == pytest.approx(0.5 * 0.6 + 0.5 * 0.95)


def test_choice_share_and_target_share():
    share = choice_share([np.array([1.0, 0.0]), np.array([0.5, 0.5]), np.array([0.0, 0.0, 1.0])])
    assert share == pytest.approx([0.5, 1 / 6, 1 / 3])
    assert share.sum() == pytest.approx(1.0)
    assert target_share([0, 0, 2, 1], 4) == pytest.approx([0.5, 0.25, 0.25, 0.0])


def test_summarize_by_group():
    probs = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5])]
    out = summarize_by_group(["a", "a", "b"], probs, [0, 0, 1], hits=[10, 0, 5], repeats=10)
    assert list(out) == ["a", "b", "all"]
    assert out["a"].n == 2 and out["a"].accuracy == pytest.approx(0.5)
    assert out["b"].accuracy == pytest.approx(0.5) and out["b"].log_loss == pytest.approx(math.log(2))
    assert out["all"].n == 3 and out["all"].random_accuracy == pytest.approx(0.5)
    assert out["a"].to_dict()["letter_share"] == {"A": 0.5, "B": 0.5}
    assert list(summarize_by_group(["x"], probs[:1], [0], [3], 10)) == ["x"]  # no "all" row for one group


def test_top1_accuracy_splits_ties():
    probs = [np.array([0.7, 0.3]), np.array([0.2, 0.8]), np.array([0.5, 0.5]), np.array([1 / 3] * 3)]
    # right, wrong, tie of 2 containing the target (1/2), tie of 3 containing it (1/3)
    assert top1_accuracy(probs, [0, 0, 1, 2]) == pytest.approx((1 + 0 + 0.5 + 1 / 3) / 4)
