"""Reference recommenders that act in :class:`~usermirrorer.envs.RecEnv`: yardsticks for agents.

Every recommender has ``recommend(obs, info) -> slate`` (K distinct item indices) and
``update(obs, slate, reward, info)`` (a no-op except for learning agents). ``info`` is the one
returned by the env's last ``reset``/``step`` (it carries the current ``timestamp``).

- :class:`RandomRecommender`: K distinct items uniformly at random.
- :class:`PopularityRecommender`: the K items with most interactions before the current time
  that the user has not consumed.
- :class:`CollaborativeRecommender`: the K unseen items with the highest collaborative score
  ``r_u V V^T`` of the user's observed history (spectral item embedding, DESIGN.md §3).
- :class:`LinUCBRecommender`: a contextual bandit (linear UCB, Li et al. 2010) over item
  features of the (user, item) pair, learning online from the simulated user's picks.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from usermirrorer.data_pipeline.embeddings import collaborative_embedding
from usermirrorer.data_pipeline.popularity import CausalCounts
from usermirrorer.data_pipeline.raw import RawDataset, parse_time
from usermirrorer.errors import ConfigError

__all__ = [
    "Recommender",
    "RandomRecommender",
    "PopularityRecommender",
    "CollaborativeRecommender",
    "LinUCBRecommender",
    "RECOMMENDERS",
    "make_recommender",
]


class Recommender(Protocol):
    name: str

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray: ...

    def update(
        self, obs: dict[str, Any], slate: np.ndarray, reward: float, info: dict[str, Any]
    ) -> None: ...


def _seen(obs: dict[str, Any]) -> np.ndarray:
    history = np.asarray(obs["history"])
    return history[history >= 0]


def _top_k_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    scores = scores.astype(np.float64, copy=True)
    scores[seen] = -np.inf
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


class RandomRecommender:
    """K distinct items uniformly at random (a floor every recommender should beat)."""

    name = "random"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0):
        self.n_items, self.k = ds.n_items, slate_size
        self.rng = np.random.default_rng(seed)

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        return self.rng.choice(self.n_items, self.k, replace=False).astype(np.int64)

    def update(self, obs, slate, reward, info) -> None:
        pass


class PopularityRecommender:
    """The K most popular items (interactions before now) the user has not consumed."""

    name = "popularity"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0):
        self.counts = CausalCounts(ds)
        self.k = slate_size

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        return _top_k_unseen(self.counts.at(parse_time(info["timestamp"])), _seen(obs), self.k)

    def update(self, obs, slate, reward, info) -> None:
        pass


class CollaborativeRecommender:
    """The K unseen items with the highest ``r_u V V^T`` for the observed history."""

    name = "collaborative"

    def __init__(
        self,
        ds: RawDataset,
        slate_size: int,
        seed: int = 0,
        embedding: np.ndarray | None = None,
        project_path: str | None = None,
    ):
        if embedding is None:
            embedding = collaborative_embedding(ds, project_path)
        self.embedding = np.asarray(embedding, dtype=np.float32)
        self.k = slate_size

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        seen = _seen(obs)
        user_vec = self.embedding[np.unique(seen)].sum(axis=0)
        return _top_k_unseen(self.embedding @ user_vec, seen, self.k)

    def update(self, obs, slate, reward, info) -> None:
        pass


class LinUCBRecommender:
    """Linear UCB over (user, item) features, one shared model, learning from every pick.

    Features of item *i* for the current user: a bias, ``log(1 + count_i(now))`` scaled to
    [0, 1], the cosine between the item's and the user's spectral embedding (the mean of their
    history items'), and the element-wise product of the two unit vectors (first
    ``n_factors`` dimensions). The slate is the K unseen items with the highest
    ``theta.x + alpha * sqrt(x^T A^-1 x)``; after the step every shown item is an observation
    with target ``reward`` for the picked one and 0 for the others (a skip gives all 0).

    Args:
        ds: the dataset (embedding and counts).
        slate_size: K.
        alpha: exploration weight.
        n_factors: embedding dimensions used as interaction features.
        ridge: prior precision (``A`` starts at ``ridge * I``).
    """

    name = "linucb"

    def __init__(
        self,
        ds: RawDataset,
        slate_size: int,
        seed: int = 0,
        alpha: float = 0.5,
        n_factors: int = 16,
        ridge: float = 1.0,
        embedding: np.ndarray | None = None,
        project_path: str | None = None,
    ):
        if embedding is None:
            embedding = collaborative_embedding(ds, project_path)
        emb = np.asarray(embedding, dtype=np.float64)[:, :n_factors]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        self.counts = CausalCounts(ds)
        self.k = slate_size
        self.alpha = float(alpha)
        self.dim = 3 + self.unit.shape[1]
        self.A = ridge * np.eye(self.dim)
        self.b = np.zeros(self.dim)
        self._last_features: np.ndarray | None = None

    def _features(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        seen = _seen(obs)
        user = self.unit[seen].mean(axis=0) if seen.size else np.zeros(self.unit.shape[1])
        norm = np.linalg.norm(user)
        user = user / norm if norm > 0 else user
        pop = np.log1p(self.counts.at(parse_time(info["timestamp"])).astype(np.float64))
        pop = pop / pop.max() if pop.max() > 0 else pop
        return np.column_stack([np.ones(len(pop)), pop, self.unit @ user, self.unit * user])

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        X = self._features(obs, info)
        A_inv = np.linalg.inv(self.A)
        theta = A_inv @ self.b
        ucb = X @ theta + self.alpha * np.sqrt(np.einsum("ij,jk,ik->i", X, A_inv, X))
        slate = _top_k_unseen(ucb, _seen(obs), self.k)
        self._last_features = X[slate]
        return slate

    def update(
        self, obs: dict[str, Any], slate: np.ndarray, reward: float, info: dict[str, Any]
    ) -> None:
        if self._last_features is None:
            return
        targets = np.zeros(len(slate))
        if not info.get("skipped", False):
            targets[int(info["choice"])] = reward
        X = self._last_features
        self.A += X.T @ X
        self.b += X.T @ targets
        self._last_features = None


RECOMMENDERS = {
    "random": RandomRecommender,
    "popularity": PopularityRecommender,
    "collaborative": CollaborativeRecommender,
    "linucb": LinUCBRecommender,
}


def make_recommender(
    name: str, ds: RawDataset, slate_size: int, seed: int = 0, **kwargs: Any
) -> Recommender:
    """A reference recommender by name (``random``, ``popularity``, ``collaborative``, ``linucb``)."""
    if name not in RECOMMENDERS:
        raise ConfigError(f"unknown recommender {name!r}; expected one of {sorted(RECOMMENDERS)}")
    cls = RECOMMENDERS[name]
    if name in ("random", "popularity"):
        kwargs.pop("embedding", None)
        kwargs.pop("project_path", None)
    return cls(ds, slate_size, seed=seed, **kwargs)
