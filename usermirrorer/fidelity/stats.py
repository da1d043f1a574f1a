"""Fidelity numbers of one model run, on top of :mod:`usermirrorer.sim.metrics`.

The shared metrics (sampled accuracy with its 95% CI, log-loss, ECE, choice share per letter)
live in :mod:`usermirrorer.sim.metrics` and are used as they are. This module adds what only
the benchmark needs:

- :func:`score_run`: one table row from a model's probabilities (sampled accuracy over ``R``
  draws per scene, expected accuracy, metrics, throughput, position bias);
- :func:`reliability_bins`: the bins behind the ECE (same binning: top probability, 10 equal
  bins, ``(i/n, (i+1)/n]``), to draw a reliability diagram;
- :func:`position_bias`: how far a model's choice share per letter is from uniform
  (total-variation distance), beside the same for the real items' positions;
- :func:`paired_difference`: accuracy of model A minus model B on the *same* scenes with a 95%
  CI over scenes, which is how "does the fine-tune beat its base / the popularity chooser?"
  is answered (a paired interval is much tighter than two separate ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError
from usermirrorer.sim import metrics
from usermirrorer.sim.evaluation import sample_hits

__all__ = [
    "RunScore",
    "score_run",
    "reliability_bins",
    "position_bias",
    "PairedDifference",
    "paired_difference",
]


@dataclass(frozen=True)
class RunScore:
    """One model on one variant: everything a table row shows.

    Accuracies are fractions. ``accuracy`` is the sampled accuracy (``repeats`` behaviours per
    scene) with its 95% CI over scenes; ``expected_accuracy`` is its expectation (mean
    probability of the real item). ``log_loss`` is in nats.
    """

    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    expected_accuracy: float
    top1_accuracy: float
    log_loss: float
    ece: float
    random_accuracy: float
    letter_share: tuple[float, ...]
    target_share: tuple[float, ...]
    position_bias_tv: float
    target_position_tv: float
    seconds: float
    scenes_per_second: float
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["letter_share"] = list(self.letter_share)
        out["target_share"] = list(self.target_share)
        return out


def score_run(probs: np.ndarray, targets: np.ndarray, seconds: float, repeats: int = 10,
              seed: int = 0) -> RunScore:
    """Every number of one table row.

    Args:
        probs: ``(n, K)`` choice probabilities.
        targets: ``(n,)`` real item positions.
        seconds: model time spent on the ``n`` scenes.
        repeats: behaviours sampled per scene for the accuracy (DESIGN.md §8).
        seed: seed of the sampling generator (one per row keeps rows reproducible): the
            ``"shared"`` scheme of :mod:`usermirrorer.sim.evaluation`.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != len(targets) or probs.shape[0] == 0:
        raise ConfigError(f"score_run needs (n, K) probs and n targets with n >= 1; got {probs.shape} and {targets.shape}")
    rows = list(probs)
    hits = sample_hits(rows, targets, repeats, seed)
    summary = metrics.summarize(rows, targets, hits, repeats)
    n = probs.shape[0]
    expected = float(probs[np.arange(n), targets].mean())
    # top-1 with ties split evenly, so a constant model scores 1/K, not "always A"
    top = probs == probs.max(axis=1, keepdims=True)
    top1 = float((top[np.arange(n), targets] / top.sum(axis=1)).mean())
    letter_share = np.asarray(summary.letter_share, dtype=np.float64)
    target = np.asarray(summary.target_share, dtype=np.float64)
    return RunScore(
        n=n, accuracy=summary.accuracy, ci_low=summary.ci_low, ci_high=summary.ci_high,
        expected_accuracy=expected, top1_accuracy=top1, log_loss=summary.log_loss, ece=summary.ece,
        random_accuracy=summary.random_accuracy, letter_share=tuple(float(x) for x in letter_share),
        target_share=tuple(float(x) for x in target), position_bias_tv=position_bias(letter_share),
        target_position_tv=position_bias(target), seconds=float(seconds),
        scenes_per_second=n / seconds if seconds > 0 else float("inf"), repeats=repeats,
    )


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per confidence bin: scenes, mean top probability, share whose top option is the real item.

    Uses the binning of :func:`usermirrorer.sim.metrics.expected_calibration_error`, so
    ``sum(count/n * |accuracy - confidence|)`` over bins equals its ECE.

    Returns:
        ``{"count", "confidence", "accuracy", "edges"}``; empty bins have NaN confidence/accuracy.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(bins, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return {"count": count, "confidence": confidence, "accuracy": accuracy,
            "edges": np.linspace(0.0, 1.0, n_bins + 1)}


def position_bias(share: np.ndarray) -> float:
    """Total-variation distance of a per-letter share from uniform (0 = no position bias).

    ``0.5 * sum |share_j - 1/K|``: the probability mass that would have to move to make the
    choices position-blind. A model that always answers "A" with K=5 scores 0.8.
    """
    share = np.asarray(share, dtype=np.float64)
    if share.size == 0:
        return float("nan")
    return float(0.5 * np.abs(share / share.sum() - 1.0 / share.size).sum())


@dataclass(frozen=True)
class PairedDifference:
    """Expected accuracy of A minus B on the same scenes, with a 95% CI over scenes.

    Per scene the difference is ``p_A(real) - p_B(real)``: the expectation of the sampled
    accuracy difference, without the sampling noise. ``significant`` is True when the interval
    excludes 0.
    """

    a: str
    b: str
    variant: str
    n: int
    difference: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return "A better"
        if self.ci_high < 0:
            return "A worse"
        return "no significant difference"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["significant"] = self.significant
        out["verdict"] = self.verdict
        return out


def paired_difference(a_label: str, a_probs: np.ndarray, b_label: str, b_probs: np.ndarray,
                      targets: np.ndarray, variant: str) -> PairedDifference:
    """Paired difference of expected accuracy of two models on the same scenes (see class)."""
    a_probs = np.asarray(a_probs, dtype=np.float64)
    b_probs = np.asarray(b_probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if a_probs.shape != b_probs.shape or a_probs.shape[0] != len(targets):
        raise ConfigError(
            f"paired_difference needs both models on the same scenes: got {a_probs.shape} for "
            f"{a_label!r}, {b_probs.shape} for {b_label!r} and {len(targets)} targets"
        )
    idx = np.arange(len(targets))
    diff = a_probs[idx, targets] - b_probs[idx, targets]
    mean, low, high = metrics.mean_ci(diff)
    return PairedDifference(a=a_label, b=b_label, variant=variant, n=len(targets),
                            difference=mean, ci_low=low, ci_high=high)
