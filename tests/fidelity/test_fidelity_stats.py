"""The fidelity benchmark's numbers on hand-made cases worked out by hand.

The shared metrics (sampled hits, CI, log-loss, ECE, letter share) are tested in
tests/sim/test_metrics.py; these tests check what the benchmark adds on top: one row's score,
the reliability bins behind the ECE, position bias and paired differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from usermirrorer.errors import ConfigError
from usermirrorer.fidelity.stats import paired_difference, position_bias, reliability_bins, score_run
from usermirrorer.sim.metrics import expected_calibration_error

Z95 = 1.959963984540054


def one_hot(index: int, k: int = 5) -> np.ndarray:
    p = np.zeros(k)
    p[index] = 1.0
    return p


def test_perfect_model_scores_one_with_zero_loss_and_ece():
    targets = np.array([0, 1, 2, 3, 4, 2])
    probs = np.stack([one_hot(t) for t in targets])
    s = score_run(probs, targets, seconds=2.0, repeats=7)
    assert s.accuracy == 1.0 and s.expected_accuracy == 1.0 and s.top1_accuracy == 1.0
    assert s.ci_low == pytest.approx(1.0) and s.ci_high == pytest.approx(1.0)  # no spread
    assert s.log_loss == pytest.approx(0.0, abs=1e-9)
    assert s.ece == pytest.approx(0.0)
    assert s.scenes_per_second == pytest.approx(3.0)
    assert s.n == 6 and s.repeats == 7 and s.random_accuracy == pytest.approx(0.2)


def test_half_right_deterministic_model_gives_exact_accuracy_and_ci():
    # one-hot answers: sampling is deterministic, so per-scene accuracy is exactly 1 or 0
    n = 10
    targets = np.zeros(n, dtype=int)
    probs = np.stack([one_hot(0) if i % 2 == 0 else one_hot(3) for i in range(n)])
    s = score_run(probs, targets, seconds=1.0, repeats=3)
    half = Z95 * math.sqrt(0.25 * n / (n - 1)) / math.sqrt(n)  # sd with ddof=1 of five 1s and five 0s
    assert s.accuracy == pytest.approx(0.5)
    assert s.ci_low == pytest.approx(0.5 - half) and s.ci_high == pytest.approx(0.5 + half)
    # half the scenes put probability 0 on the real item: log-loss = ln(1e12) / 2 (clipped at 1e-12)
    assert s.log_loss == pytest.approx(0.5 * -math.log(1e-12))
    # confidence 1 everywhere, right half the time: ECE 0.5
    assert s.ece == pytest.approx(0.5)
    # letter share: half on A, half on D; TV from uniform = 0.5 * (0.3 + 0.2 + 0.2 + 0.3 + 0.2)
    assert s.letter_share == pytest.approx((0.5, 0.0, 0.0, 0.5, 0.0))
    assert s.position_bias_tv == pytest.approx(0.6)
    assert s.target_share == pytest.approx((1.0, 0.0, 0.0, 0.0, 0.0))


def test_uniform_model_is_chance_with_log_k_loss_and_split_ties():
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 5, size=4000)
    probs = np.full((4000, 5), 0.2)
    s = score_run(probs, targets, seconds=0.0, repeats=10, seed=1)
    assert s.expected_accuracy == pytest.approx(0.2)
    assert s.top1_accuracy == pytest.approx(0.2)  # a five-way tie counts 1/5, not "always A"
    assert s.log_loss == pytest.approx(math.log(5))
    assert s.ci_low < 0.2 < s.ci_high  # the sampled accuracy's CI covers its expectation
    assert s.position_bias_tv == pytest.approx(0.0)
    assert math.isinf(s.scenes_per_second)


def test_expected_accuracy_is_mean_real_item_probability():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    targets = np.array([0, 0, 1])
    s = score_run(probs, targets, seconds=1.0, repeats=20000, seed=5)
    assert s.expected_accuracy == pytest.approx((0.7 + 0.4 + 0.5) / 3)
    assert abs(s.accuracy - s.expected_accuracy) < 0.01  # many draws: sampled ~ expected
    assert s.top1_accuracy == pytest.approx((1 + 0 + 0.5) / 3)


def test_reliability_bins_reproduce_the_shared_ece():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5) * 0.7, size=500)
    targets = rng.integers(0, 5, size=500)
    bins = reliability_bins(probs, targets)
    used = bins["count"] > 0
    ece = float((bins["count"][used] / 500 * np.abs(bins["accuracy"][used] - bins["confidence"][used])).sum())
    assert ece == pytest.approx(expected_calibration_error(list(probs), targets))
    assert bins["count"].sum() == 500 and len(bins["edges"]) == 11
    # a hand case: conf 0.9 right and conf 0.6 wrong land in bins 9 and 6
    hand = reliability_bins(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]))
    assert hand["count"][8] == 1 and hand["accuracy"][8] == 1.0 and hand["confidence"][8] == pytest.approx(0.9)
    assert hand["count"][5] == 1 and hand["accuracy"][5] == 0.0
    assert np.isnan(hand["accuracy"][0])


def test_position_bias_extremes():
    assert position_bias(np.array([1.0, 0, 0, 0, 0])) == pytest.approx(0.8)
    assert position_bias(np.full(5, 0.2)) == pytest.approx(0.0)
    assert position_bias(np.array([0.5, 0.5])) == pytest.approx(0.0)


def test_paired_difference_sign_ci_and_verdict():
    targets = np.array([0, 1, 2, 3] * 25)
    base = np.full((100, 5), 0.2)
    better = np.full((100, 5), 0.1)
    better[np.arange(100), targets] = 0.6  # +0.4 on every scene
    d = paired_difference("ft", better, "base", base, targets, "standard")
    assert d.difference == pytest.approx(0.4)
    assert d.ci_low == pytest.approx(0.4) and d.ci_high == pytest.approx(0.4)  # constant difference
    assert d.significant and d.verdict == "A better"
    same = paired_difference("a", base, "b", base, targets, "standard")
    assert same.difference == 0.0 and not same.significant
    assert same.verdict == "no significant difference"
    worse = paired_difference("base", base, "ft", better, targets, "popularity-matched")
    assert worse.verdict == "A worse" and worse.as_dict()["significant"] is True
    # noisy difference straddling zero
    noisy = base.copy()
    noisy[np.arange(100), targets] = np.where(np.arange(100) % 2 == 0, 0.3, 0.1)
    noisy = noisy / noisy.sum(axis=1, keepdims=True)
    mixed = paired_difference("n", noisy, "base", base, targets, "standard")
    assert mixed.ci_low < mixed.difference < mixed.ci_high


def test_bad_shapes_raise_config_errors():
    with pytest.raises(ConfigError, match="same scenes"):
        paired_difference("a", np.full((3, 5), 0.2), "b", np.full((4, 5), 0.2), np.zeros(3, int), "standard")
    with pytest.raises(ConfigError, match="n >= 1"):
        score_run(np.zeros((0, 5)), np.zeros(0, int), seconds=1.0)
