"""A log-linear pool of choice models (a product of experts): ``p_j ∝ prod_m p_mj ** w_m``.

Why: a trained LLM in likelihood mode reads the option *texts* against the user's history,
the collaborative model reads who watched what; on held-out popularity-matched ML-100K scenes
each alone puts 31–33 % on the real item, but they are right on different scenes (top-1: 42 %
and 46 %, at least one of them 64 %), so a pool of the two fitted on such scenes is better
calibrated and more accurate than either (36 % E[acc], ``benchmarks/results/fidelity.md``). The weights are fitted by maximum
likelihood on train scenes whose real choice is known; a weight can come out 0 or negative
where a member's signal does not carry to that construction of exposures (collaborative
scores on standard exposures, whose negatives are popular items).

Each member contributes ``log p_m`` per option, or its pre-temperature ``scores`` where it
keeps them (likelihood mode: ``probs = softmax(scores / T)``), so a member's own temperature
does not matter (the weight absorbs it) and near-zero probabilities do not underflow. A
scene's per-member constant cancels in the softmax. Scenes with an outside option or a rating
query are pooled the same way, entry by entry; every member must answer with the same number
of entries.

A *gated* pool (``gate=`` a member) lets every weight move with how unequal that member's terms
are across the scene's options: ``w_m(scene) = a_m + b_m * spread(scene)``, spread the standard
deviation of the gate member's log-terms. Why: the best weights depend on how the exposures were
built (collaborative's weight comes out -0.16 fitted on standard ML-100K scenes, whose negatives
are popular, and +0.56 on popularity-matched ones), and the popularity member's spread tells the
two apart from the slate alone, so one gated pool serves exposures of unknown construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim.simulator import ChoiceResult

__all__ = ["LogLinearPool", "member_log_terms", "log_probs", "fit_pool_weights", "pool_probs", "gated_terms",
           "pool_terms"]

_TINY = 1e-300  # log of a probability that underflowed to 0 stays finite


def log_probs(probs: Any) -> np.ndarray:
    """``log probs``, finite where a probability underflowed to 0."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), _TINY))


def member_log_terms(result: ChoiceResult) -> np.ndarray:
    """One member's ``(K,)`` log-terms for a scene: its scores if it keeps them, else ``log probs``."""
    probs = np.asarray(result.probs, dtype=np.float64)
    scores = getattr(result, "scores", None)
    if scores is not None and len(scores) == len(probs) and np.all(np.isfinite(scores)):
        return np.asarray(scores, dtype=np.float64)
    return log_probs(probs)


def _stack(terms: Sequence[np.ndarray]) -> np.ndarray:
    """``(M, n, K)`` from M members' ``(n, K)`` arrays, centred per scene (softmax-invariant)."""
    x = np.stack([np.asarray(t, dtype=np.float64) for t in terms])
    if x.ndim != 3:
        raise DataError(f"pool members must give (n_scenes, K) log-terms each, got shape {x.shape}")
    return x - x.mean(axis=2, keepdims=True)


def gated_terms(terms: Sequence[np.ndarray], gate: int) -> list[np.ndarray]:
    """The ``2M`` pseudo-members of a gated pool: the M members' ``(n, K)`` log-terms, then each
    times the per-scene spread (std over options) of member ``gate``'s terms; weights fitted on
    them are ``(a_1..a_M, b_1..b_M)``."""
    arrays = [np.asarray(t, dtype=np.float64) for t in terms]
    if not 0 <= gate < len(arrays):
        raise ConfigError(f"pool gate {gate} is not a member index (0..{len(arrays) - 1})")
    spread = arrays[gate].std(axis=1, keepdims=True)
    return arrays + [t * spread for t in arrays]


def pool_terms(terms: Sequence[np.ndarray], gate: int | None) -> list[np.ndarray]:
    """What a pool's weights multiply: the members' log-terms, or with ``gate`` the gated
    pseudo-members (:func:`gated_terms`)."""
    return list(terms) if gate is None else gated_terms(terms, gate)


def pool_probs(terms: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``(n, K)`` pooled probabilities ``softmax(sum_m w_m * terms_m)``."""
    x = _stack(terms)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(x):
        raise ConfigError(f"{len(w)} pool weights for {len(x)} members")
    z = np.tensordot(w, x, axes=1)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_pool_weights(terms: Sequence[np.ndarray], item_pos: Sequence[int], l2: float = 1e-4) -> np.ndarray:
    """Weights maximising the log-likelihood of the real choices (a small L2 penalty keeps a
    member that carries nothing near 0).

    Args:
        terms: per member, ``(n, K)`` log-terms on the fit scenes (:func:`member_log_terms`).
        item_pos: ``(n,)`` the real option's index per scene.
        l2: penalty per scene on ``|w|^2``.
    """
    from scipy.optimize import minimize

    x = _stack(terms)
    y = np.asarray(item_pos, dtype=np.int64)
    n = x.shape[1]
    if n == 0 or len(y) != n:
        raise DataError(f"pool fit: {n} scenes of log-terms but {len(y)} real choices")
    if y.min() < 0 or y.max() >= x.shape[2]:
        raise DataError(f"pool fit: a real choice index is outside 0..{x.shape[2] - 1}")
    rows = np.arange(n)
    # scale each member to unit spread so the optimiser sees comparable coordinates
    scale = np.array([max(float(m.std()), 1e-12) for m in x])
    xs = x / scale[:, None, None]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.tensordot(w, xs, axes=1)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        nll = float(-np.log(p[rows, y]).mean()) + l2 * float(w @ w)
        expected = np.einsum("mnk,nk->m", xs, p)
        grad = (expected - xs[:, rows, y].sum(axis=1)) / n + 2 * l2 * w
        return nll, grad

    result = minimize(objective, np.zeros(len(x)), jac=True, method="L-BFGS-B")
    return result.x / scale


class LogLinearPool:
    """A choice model pooling other choice models: ``p_j ∝ prod_m p_mj ** w_m``.

    Args:
        members: choice models (anything with ``choice_probs(scenes)``: a likelihood-mode
            :class:`~usermirrorer.sim.UserSimulator`, a baseline of
            :mod:`usermirrorer.sim.baselines`, the MNL ...).
        weights: one per member; None: call :meth:`fit` before :meth:`choice_probs`.
        names: how the members are called in ``repr`` and :attr:`fit_report`.
        gate: a member (index or name) whose log-term spread per scene moves every weight
            (module docstring); then ``weights`` are ``2M``: the M base weights, then M slopes.
            The popularity baseline is the natural gate.

    >>> pool = LogLinearPool([llm_sim, collaborative]).fit(train_scenes)   # doctest: +SKIP
    >>> pool.choice_probs(scenes)[0].probs                                 # doctest: +SKIP
    """

    def __init__(self, members: Sequence[Any], weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None, gate: int | str | None = None):
        if len(members) < 1:
            raise ConfigError("a pool needs at least one member choice model")
        for m in members:
            if not callable(getattr(m, "choice_probs", None)):
                raise ConfigError(f"pool member {type(m).__name__} has no choice_probs(scenes)")
        self.members = list(members)
        self.names = list(names) if names is not None else [type(m).__name__ for m in members]
        if len(self.names) != len(self.members):
            raise ConfigError(f"{len(self.names)} names for {len(self.members)} pool members")
        if isinstance(gate, str):
            if gate not in self.names:
                raise ConfigError(f"pool gate {gate!r} is not a member name (names: {self.names})")
            gate = self.names.index(gate)
        if gate is not None and not 0 <= gate < len(self.members):
            raise ConfigError(f"pool gate {gate} is not a member index (0..{len(self.members) - 1})")
        self.gate = gate
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights is not None and len(self.weights) != self._n_weights:
            raise ConfigError(f"{len(self.weights)} weights for {len(self.members)} pool members"
                              + (" (a gated pool takes 2 per member: base weights, then slopes)" if gate is not None else ""))
        self.fit_report: dict[str, Any] = {}
        self.source: str | None = None  # the pool file it was loaded from, if any

    @property
    def _n_weights(self) -> int:
        return len(self.members) * (1 if self.gate is None else 2)

    def _weight_names(self) -> list[str]:
        if self.gate is None:
            return self.names
        return self.names + [f"{n} × spread({self.names[self.gate]})" for n in self.names]

    def _terms(self, scenes: list[dict], chunk_size: int | None = None,
               on_chunk: Callable[[int], None] | None = None) -> list[list[np.ndarray]]:
        """Per member, the scenes' log-terms (a list: scenes may differ in K); ``chunk_size``
        scenes at a time, ``on_chunk(n)`` after each chunk (a progress bar)."""
        out: list[list[np.ndarray]] = [[] for _ in self.members]
        size = chunk_size or max(len(scenes), 1)
        for start in range(0, len(scenes), size):
            chunk = scenes[start : start + size]
            for terms, member in zip(out, self.members):
                terms.extend(member_log_terms(r) for r in member.choice_probs(chunk))
            if on_chunk is not None:
                on_chunk(len(chunk))
        widths = [[len(t) for t in member] for member in out]
        if any(w != widths[0] for w in widths):
            raise DataError(f"pool members {self.names} answer with different numbers of options "
                            "(each must score the same options, outside option included)")
        return out

    def fit(self, scenes: Sequence[dict], l2: float = 1e-4, chunk_size: int | None = None,
            on_chunk: Callable[[int], None] | None = None) -> LogLinearPool:
        """Fit the weights on scenes whose real choice (``item_pos``) is known; returns self.

        ``chunk_size`` / ``on_chunk``: the members answer that many scenes at a time and
        ``on_chunk(n_scenes)`` is called after each chunk (progress of an LLM member).

        Raises:
            DataError: no scenes; a scene without ``item_pos``; members disagreeing on the options.
        """
        batch = list(scenes)
        if not batch:
            raise DataError("pool fit: no fit scenes (pass train-user scenes whose item_pos is the real choice)")
        try:
            item_pos = [int(s["item_pos"]) for s in batch]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"pool fit: every scene needs an integer item_pos (the real choice); {exc}") from exc
        raw = self._terms(batch, chunk_size, on_chunk)
        if len({len(t) for t in raw[0]}) > 1:
            raise DataError("pool fit: the fit scenes must all show the same number of options")
        terms = pool_terms([np.stack(t) for t in raw], self.gate)
        self.weights = fit_pool_weights(terms, item_pos, l2=l2)
        nll = -np.mean(np.log(pool_probs(terms, self.weights)[np.arange(len(batch)), item_pos]))
        self.fit_report = {"scenes": len(batch), "nll": float(nll),
                           "weights": dict(zip(self._weight_names(), np.round(self.weights, 4).tolist()))}
        return self

    def choice_probs(self, scenes: dict | Sequence[dict], **_ignored: Any) -> ChoiceResult | list[ChoiceResult]:
        """Pooled choice distribution per scene (one scene in -> one result out; a list -> a list)."""
        if self.weights is None:
            raise ConfigError("the pool is not fitted: call fit(train_scenes) or pass weights=")
        single = isinstance(scenes, dict)
        batch = [scenes] if single else list(scenes)
        terms = self._terms(batch)
        results = []
        for i in range(len(batch)):
            p = pool_probs(pool_terms([m[i][None, :] for m in terms], self.gate), self.weights)[0]
            results.append(ChoiceResult(probs=p))
        return results[0] if single else results

    def __repr__(self) -> str:
        weights = ("not fitted" if self.weights is None
                   else dict(zip(self._weight_names(), np.round(self.weights, 4).tolist())))
        gate = "" if self.gate is None else f", gate={self.names[self.gate]!r}"
        source = "" if self.source is None else f", source={self.source!r}"
        return f"LogLinearPool(members={self.names}{gate}, weights={weights}{source})"
