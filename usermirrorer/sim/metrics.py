"""Fidelity metrics of a choice model against real choices (DESIGN.md §8). Pure numpy.

Every function takes ``probs``: a list of per-scene probability vectors (scenes may have
different numbers of options K) and ``targets``: the index of the real chosen item per scene.

- **Accuracy**: for each scene, draw R behaviours from its distribution (seeded generator) and
  count matches with the real item; per-scene accuracy = hits / R. The reported accuracy is
  the mean over scenes, with a 95% confidence interval from the normal approximation over
  *scenes* (mean ± 1.96 · sd / sqrt(n), sd with ddof=1): scenes are the independent units,
  the R draws of one scene are not. Its expectation is the mean probability of the real item.
- **Top-1 accuracy**: share of scenes whose most likely option is the real item (ties split:
  a scene whose top probability is shared by m options counts 1/m if the real item is one).
- **Log-loss**: mean of ``-ln p(real item)`` in **nats** (``base=2`` gives bits);
  probabilities are clipped at 1e-12 so a zero does not give infinity.
- **ECE** (expected calibration error): confidence = the top probability of a scene, correct =
  the top option is the real item; 10 equal-width confidence bins on [0, 1];
  ECE = sum over bins of (bin size / n) · |accuracy(bin) - mean confidence(bin)|.
- **Choice share per letter** (position bias): mean probability mass on each position A, B, ...
  over scenes (sums to 1). The real item's position is uniform in well-built scenes, so a
  skewed share is a bias of the model, comparable with :func:`target_share`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from usermirrorer.sim.prompts import LETTERS

__all__ = [
    "fit_temperature",
    "fit_prior_weight",
    "softmax_nll",
    "pad_probs",
    "sample_choices",
    "sampled_hits",
    "mean_ci",
    "log_loss",
    "top1_accuracy",
    "expected_calibration_error",
    "choice_share",
    "target_share",
    "FidelitySummary",
    "summarize",
    "summarize_by_group",
]

_Z95 = 1.959963984540054
_EPS = 1e-12


def pad_probs(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Stack vectors of different lengths into ``(n, K_max)``, zero-padded on the right."""
    if len(probs) == 0:
        return np.zeros((0, 0))
    width = max(len(p) for p in probs)
    out = np.zeros((len(probs), width), dtype=np.float64)
    for i, p in enumerate(probs):
        out[i, : len(p)] = p
    return out


def _targets(targets: Sequence[int], probs: np.ndarray) -> np.ndarray:
    t = np.asarray(targets, dtype=np.int64)
    if t.shape != (probs.shape[0],):
        raise ValueError(f"expected {probs.shape[0]} targets, got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= probs.shape[1]):
        raise ValueError(f"targets must index the options (0..{probs.shape[1] - 1}), got {t.min()}..{t.max()}")
    return t


def sample_choices(probs: Sequence[np.ndarray], repeats: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``repeats`` option indices per scene by inverse CDF; ``(n, repeats)`` int array."""
    p = pad_probs(probs)
    if p.size == 0:
        return np.zeros((0, repeats), dtype=np.int64)
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((p.shape[0], repeats))
    choice = (u[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    # rounding can leave the last cdf value a hair below u; stay on a real option
    k = np.array([len(x) for x in probs])
    return np.minimum(choice, (k - 1)[:, None])


def sampled_hits(probs: Sequence[np.ndarray], targets: Sequence[int], repeats: int, rng: np.random.Generator) -> np.ndarray:
    """Number of the ``repeats`` sampled behaviours equal to the real item, per scene."""
    choices = sample_choices(probs, repeats, rng)
    t = np.asarray(targets, dtype=np.int64)
    return (choices == t[:, None]).sum(axis=1)


def mean_ci(values: Sequence[float], confidence_z: float = _Z95) -> tuple[float, float, float]:
    """``(mean, low, high)``: normal-approximation interval (default 95%) of the mean.

    With fewer than two values the interval is ``(nan, nan)`` around the mean.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = confidence_z * float(v.std(ddof=1)) / np.sqrt(v.size)
    return m, m - half, m + half


def log_loss(probs: Sequence[np.ndarray], targets: Sequence[int], base: float = np.e) -> float:
    """Mean negative log-probability of the real item (nats by default, ``base=2`` for bits)."""
    p = pad_probs(probs)
    if p.shape[0] == 0:
        return float("nan")
    t = _targets(targets, p)
    picked = np.clip(p[np.arange(len(t)), t], _EPS, 1.0)
    return float(-np.log(picked).mean() / np.log(base))


def top1_accuracy(probs: Sequence[np.ndarray], targets: Sequence[int]) -> float:
    """Share of scenes whose most likely option is the real item; ties share the credit."""
    p = pad_probs(probs)
    if p.shape[0] == 0:
        return float("nan")
    t = _targets(targets, p)
    top = p.max(axis=1, keepdims=True)
    is_top = np.isclose(p, top, rtol=0.0, atol=1e-12) & (p > 0)
    credit = is_top[np.arange(len(t)), t] / is_top.sum(axis=1)
    return float(credit.mean())


def softmax_nll(scores: Sequence[np.ndarray], targets: Sequence[int], temperature: float) -> float:
    """Mean negative log-likelihood (nats) of the real options under ``softmax(scores / T)``."""
    total = 0.0
    for row, target in zip(scores, targets):
        z = np.asarray(row, dtype=np.float64) / temperature
        m = z.max()
        total += m + np.log(np.exp(z - m).sum()) - z[int(target)]
    return total / max(len(scores), 1)


def fit_temperature(scores: Sequence[np.ndarray], targets: Sequence[int],
                    bounds: tuple[float, float] = (1e-3, 1e3)) -> float:
    """The temperature ``T`` that minimises :func:`softmax_nll` of ``softmax(scores / T)``.

    One parameter fitted on train scenes, so a scoring rule's log-loss and calibration are
    compared fairly with other models' (its accuracy in the argmax sense does not move).
    Golden-section search on ``log T`` (the NLL is unimodal there for these problems).
    """
    if len(scores) != len(targets) or not len(scores):
        raise ValueError(f"need one target per score row and at least one row; got {len(scores)} and {len(targets)}")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = softmax_nll(scores, targets, np.exp(a)), softmax_nll(scores, targets, np.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = softmax_nll(scores, targets, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = softmax_nll(scores, targets, np.exp(b))
    return float(np.exp((lo + hi) / 2.0))


def fit_prior_weight(logprobs: Sequence[np.ndarray], priors: Sequence[np.ndarray], targets: Sequence[int],
                     weights: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))) -> tuple[float, float]:
    """The prior weight ``w`` and temperature ``T`` of ``softmax((logprob - w * prior) / T)`` with the
    lowest log-loss on the given scenes (``w`` on a grid, ``T`` by :func:`fit_temperature`).

    ``w = 1`` divides each option text's prior out completely (PMI), ``w = 0`` keeps it: the
    best mix depends on how the exposures were drawn (popularity-matched negatives favour PMI).

    Returns:
        ``(w, T)``.
    """
    best = (np.inf, 1.0, 1.0)
    for w in weights:
        scores = [np.asarray(lp) - w * np.asarray(pr) for lp, pr in zip(logprobs, priors)]
        t = fit_temperature(scores, targets)
        nll = softmax_nll(scores, targets, t)
        if nll < best[0]:
            best = (nll, float(w), t)
    return best[1], best[2]


def expected_calibration_error(probs: Sequence[np.ndarray], targets: Sequence[int], n_bins: int = 10) -> float:
    """ECE of the top-probability prediction over ``n_bins`` equal-width bins (see module doc)."""
    p = pad_probs(probs)
    if p.shape[0] == 0:
        return float("nan")
    t = _targets(targets, p)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(np.float64)
    # bin i holds confidences in (i/n, (i+1)/n]; 0 joins the first bin
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    used = counts > 0
    gaps = np.abs(acc_sum[used] - conf_sum[used]) / counts[used]
    return float((counts[used] / p.shape[0] * gaps).sum())


def choice_share(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean probability mass per option position (A, B, ...) over scenes; sums to 1."""
    p = pad_probs(probs)
    if p.shape[0] == 0:
        return np.zeros(0)
    return (p / p.sum(axis=1, keepdims=True)).mean(axis=0)


def target_share(targets: Sequence[int], n_positions: int) -> np.ndarray:
    """Share of scenes whose real item sits at each position."""
    t = np.asarray(targets, dtype=np.int64)
    if t.size == 0:
        return np.zeros(n_positions)
    return np.bincount(t, minlength=n_positions)[:n_positions] / t.size


@dataclass
class FidelitySummary:
    """Metrics of one group of scenes (one dataset, or all).

    Attributes:
        n: scenes.
        accuracy, ci_low, ci_high: sampled accuracy and its 95% CI (fractions, not %).
        top1_accuracy: share of scenes whose top option is the real item (ties split).
        log_loss: nats.
        ece: expected calibration error (10 bins).
        random_accuracy: mean 1/K, the accuracy of a uniform guess.
        letter_share: mean probability per position A, B, ...
        target_share: share of real items per position.
        repeats: R, sampled behaviours per scene.
    """

    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    top1_accuracy: float
    log_loss: float
    ece: float
    random_accuracy: float
    letter_share: np.ndarray = field(repr=False)
    target_share: np.ndarray = field(repr=False)
    repeats: int = 1

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("n", "accuracy", "ci_low", "ci_high", "top1_accuracy", "log_loss", "ece", "random_accuracy", "repeats")}
        letters = LETTERS
        d["letter_share"] = {letters[i]: float(x) for i, x in enumerate(self.letter_share)}
        d["target_share"] = {letters[i]: float(x) for i, x in enumerate(self.target_share)}
        return d


def summarize(probs: Sequence[np.ndarray], targets: Sequence[int], hits: Sequence[int], repeats: int) -> FidelitySummary:
    """All metrics of one group, given each scene's sampled ``hits`` out of ``repeats``."""
    p = pad_probs(probs)
    acc, lo, hi = mean_ci(np.asarray(hits, dtype=np.float64) / repeats)
    return FidelitySummary(
        n=len(probs),
        accuracy=acc,
        ci_low=lo,
        ci_high=hi,
        top1_accuracy=top1_accuracy(probs, targets),
        log_loss=log_loss(probs, targets),
        ece=expected_calibration_error(probs, targets),
        random_accuracy=float(np.mean([1.0 / len(x) for x in probs])) if len(probs) else float("nan"),
        letter_share=choice_share(probs),
        target_share=target_share(targets, p.shape[1]),
        repeats=repeats,
    )


def summarize_by_group(
    groups: Sequence[str],
    probs: Sequence[np.ndarray],
    targets: Sequence[int],
    hits: Sequence[int],
    repeats: int,
    overall: str | None = "all",
) -> dict[str, FidelitySummary]:
    """:func:`summarize` per group (e.g. dataset), plus an ``overall`` row if there are several."""
    out: dict[str, FidelitySummary] = {}
    g = np.asarray(groups, dtype=object)
    for name in dict.fromkeys(groups):
        idx = np.flatnonzero(g == name)
        out[str(name)] = summarize([probs[i] for i in idx], [targets[i] for i in idx], [hits[i] for i in idx], repeats)
    if overall and len(out) > 1:
        out[overall] = summarize(probs, targets, hits, repeats)
    return out
