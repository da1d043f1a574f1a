"""How well one ranking of recommenders agrees with another (the policy-ranking benchmark).

- :func:`spearman`: Spearman's rho (Pearson correlation of the ranks, ties get their mean rank);
- :func:`kendall_tau_b`: Kendall's tau-b (concordant minus discordant pairs, tie-corrected);
- :func:`pairwise_order_accuracy`: the share of pairs a simulator orders as the logs do;
- :func:`bootstrap_agreement`: the three over users resampled with replacement (percentile CI).

With a handful of recommenders (here 7: 21 pairs) these are computed exactly in O(n^2);
both correlations equal ``scipy.stats`` to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError

__all__ = ["spearman", "kendall_tau_b", "pairwise_order_accuracy", "wrong_pairs", "Agreement", "bootstrap_agreement",
           "paired_spearman_difference"]


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ConfigError(f"need two 1-D score vectors of the same length >= 2, got shapes {x.shape} and {y.shape}")
    return x, y


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side has all scores tied."""
    x, y = _check(x, y)
    rx, ry = _ranks(x) - (len(x) + 1) / 2.0, _ranks(y) - (len(y) + 1) / 2.0
    denom = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def _pair_signs(x: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(x), k=1)
    return np.sign(x[i] - x[j])


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b: ``(C - D) / sqrt((n0 - n1)(n0 - n2))`` with tie counts ``n1``, ``n2``."""
    x, y = _check(x, y)
    sx, sy = _pair_signs(x), _pair_signs(y)
    denom = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


def pairwise_order_accuracy(sim: np.ndarray, real: np.ndarray) -> float:
    """Share of the pairs the logs order (not tied there) that ``sim`` orders the same way;
    a pair ``sim`` ties counts one half."""
    sim, real = _check(sim, real)
    ss, sr = _pair_signs(sim), _pair_signs(real)
    judged = sr != 0
    if not judged.any():
        return float("nan")
    agree = np.where(ss[judged] == 0, 0.5, (ss[judged] == sr[judged]).astype(np.float64))
    return float(agree.mean())


def wrong_pairs(sim: np.ndarray, real: np.ndarray, names: list[str]) -> list[tuple[str, str]]:
    """The pairs ``(a, b)`` the logs rank ``a`` above ``b`` but ``sim`` ranks ``b`` above (or ties)."""
    sim, real = _check(sim, real)
    out = []
    for i in range(len(names)):
        for j in range(len(names)):
            if real[i] > real[j] and sim[i] <= sim[j]:
                out.append((names[i], names[j]))
    return out


@dataclass(frozen=True)
class Agreement:
    """Agreement of a simulator's ranking with the real-log ranking, with 95% bootstrap CIs."""

    spearman: float
    spearman_ci: tuple[float, float]
    kendall: float
    kendall_ci: tuple[float, float]
    pairwise_accuracy: float
    pairwise_ci: tuple[float, float]
    n_groups: int
    n_bootstrap: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("spearman_ci", "kendall_ci", "pairwise_ci"):
            out[key] = list(out[key])
        return out


def bootstrap_agreement(sim_scores: np.ndarray, real_scores: np.ndarray, groups: np.ndarray,
                        n_bootstrap: int = 1000, seed: int = 0,
                        aggregate: Callable[[np.ndarray], np.ndarray] | None = None) -> Agreement:
    """Agreement of per-agent mean scores, resampling groups (users) with replacement.

    Args:
        sim_scores: ``(n_episodes, n_agents)`` the simulator's score of each agent per episode.
        real_scores: ``(n_episodes, n_agents)`` the real-log score of each agent per episode
            (the same episodes: a resample draws both from the same users).
        groups: ``(n_episodes,)`` the user of each episode (episodes of one user stay together).
        n_bootstrap: resamples.
        seed: resampling seed.
        aggregate: episodes -> per-agent score (default: the mean over episodes).
    """
    sim_scores, real_scores = np.asarray(sim_scores, dtype=np.float64), np.asarray(real_scores, dtype=np.float64)
    if sim_scores.shape != real_scores.shape or sim_scores.ndim != 2:
        raise ConfigError(f"sim and real scores must both be (episodes, agents), got {sim_scores.shape} "
                          f"and {real_scores.shape}")
    mean = aggregate or (lambda m: m.mean(axis=0))
    groups = np.asarray(groups)
    labels, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]

    def stats(rows: np.ndarray) -> tuple[float, float, float]:
        s, r = mean(sim_scores[rows]), mean(real_scores[rows])
        return spearman(s, r), kendall_tau_b(s, r), pairwise_order_accuracy(s, r)

    point = stats(np.arange(len(sim_scores)))
    rng = np.random.default_rng(seed)
    draws = np.empty((n_bootstrap, 3))
    for b in range(n_bootstrap):
        picked = rng.integers(0, len(members), len(members))
        draws[b] = stats(np.concatenate([members[g] for g in picked]))

    def ci(col: int) -> tuple[float, float]:
        values = draws[:, col][~np.isnan(draws[:, col])]
        if not len(values):
            return (float("nan"), float("nan"))
        return (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975)))

    return Agreement(point[0], ci(0), point[1], ci(1), point[2], ci(2), len(members), n_bootstrap)


def paired_spearman_difference(sim_a: np.ndarray, sim_b: np.ndarray, real_scores: np.ndarray, groups: np.ndarray,
                               n_bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """Spearman of simulator A minus simulator B on the same episodes, with a paired 95% CI
    (every resample of users scores both against the same real-log ranking)."""
    sim_a, sim_b, real = (np.asarray(m, dtype=np.float64) for m in (sim_a, sim_b, real_scores))
    if not sim_a.shape == sim_b.shape == real.shape:
        raise ConfigError(f"score matrices differ in shape: {sim_a.shape}, {sim_b.shape}, {real.shape}")
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]

    def diff(rows: np.ndarray) -> float:
        r = real[rows].mean(axis=0)
        return spearman(sim_a[rows].mean(axis=0), r) - spearman(sim_b[rows].mean(axis=0), r)

    rng = np.random.default_rng(seed)
    draws = np.array([diff(np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]))
                      for _ in range(n_bootstrap)])
    draws = draws[~np.isnan(draws)]
    low, high = (np.quantile(draws, [0.025, 0.975]) if len(draws) else (np.nan, np.nan))
    return {"difference": diff(np.arange(len(real))), "ci_low": float(low), "ci_high": float(high)}
