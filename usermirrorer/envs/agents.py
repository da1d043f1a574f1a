"""Reference recommenders that act in :class:`~usermirrorer.envs.RecEnv`: yardsticks for agents.

Every recommender has ``recommend(obs, info) -> slate`` (K distinct item indices) and
``update(obs, slate, reward, info)`` (a no-op except for learning agents). ``info`` is the one
returned by the env's last ``reset``/``step`` (it carries the current ``timestamp``).

- :class:`RandomRecommender`: K distinct items uniformly at random.
- :class:`PopularityRecommender`: the K items with most interactions before the current time
  that the user has not consumed.
- :class:`CollaborativeRecommender`: the K unseen items with the highest collaborative score
  ``r_u V V^T`` of the user's observed history (spectral item embedding, DESIGN.md §3).
- :class:`ItemKNNRecommender`: item-to-item cosine similarity of co-occurrence (users who
  consumed both), summed over the history.
- :class:`ContentRecommender`: cosine similarity of the item's text embedding to the mean of
  the history's.
- :class:`SequentialRecommender`: first-order transitions (which item followed which in the
  logs), from the last few history items.
- :class:`LinUCBRecommender`: a contextual bandit (linear UCB, Li et al. 2010) over item
  features of the (user, item) pair, learning online from the simulated user's picks.

Those learned from the log take ``fit_rows``: the interaction rows they may learn from (the
train users' rows in an evaluation on held-out users, so no held-out future leaks in).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import numpy as np
from scipy import sparse

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
    "ItemKNNRecommender",
    "ContentRecommender",
    "SequentialRecommender",
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
    """The ``k`` best-scored unseen items, best first; equal scores in item order.

    Why the explicit tie-break: which of several tied items ``argpartition`` returns, and in what
    order, depends on numpy's build and the CPU's SIMD (AVX-512 machines partition differently),
    so a popularity slate with two items of equal count differed between machines for one seed.
    """
    scores = scores.astype(np.float64, copy=True)
    scores[seen] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th largest score
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[: k - len(above)]
    top = np.concatenate([above, tied])
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


class RandomRecommender:
    """K distinct unseen items uniformly at random (a floor every recommender should beat)."""

    name = "random"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0):
        self.n_items, self.k = ds.n_items, slate_size
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def begin_episode(self, episode_seed: int) -> None:
        """Draw this episode's slates from a stream of its own: the same slates in every run."""
        self.rng = np.random.default_rng([self.seed, episode_seed])

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        unseen = np.ones(self.n_items, dtype=bool)
        unseen[_seen(obs)] = False
        pool = np.flatnonzero(unseen) if unseen.sum() >= self.k else np.arange(self.n_items)
        return self.rng.choice(pool, self.k, replace=False).astype(np.int64)

    def update(self, obs, slate, reward, info) -> None:
        pass


class PopularityRecommender:
    """The K most popular items (interactions before now) the user has not consumed."""

    name = "popularity"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0, fit_rows: np.ndarray | None = None):
        self.counts = CausalCounts(ds, fit_rows)
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
        fit_rows: np.ndarray | None = None,
    ):
        if embedding is None:
            embedding = collaborative_embedding(ds, project_path, rows=fit_rows)
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
        fit_rows: np.ndarray | None = None,
    ):
        if embedding is None:
            embedding = collaborative_embedding(ds, project_path, rows=fit_rows)
        emb = np.asarray(embedding, dtype=np.float64)[:, :n_factors]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        self.counts = CausalCounts(ds, fit_rows)
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

    def state_dict(self) -> dict[str, np.ndarray]:
        """What it has learned (``A``, ``b``): enough to resume a run after a crash."""
        return {"A": self.A.copy(), "b": self.b.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.A, self.b = np.array(state["A"], dtype=np.float64), np.array(state["b"], dtype=np.float64)
        self._last_features = None

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


def _rows(ds: RawDataset, fit_rows: np.ndarray | None) -> np.ndarray:
    return np.arange(len(ds.inter_item)) if fit_rows is None else np.asarray(fit_rows, dtype=np.int64)


class ItemKNNRecommender:
    """Item-to-item collaborative filtering on co-occurrence (Sarwar et al. 2001).

    ``sim(i, j) = n_ij / sqrt(n_i n_j)``: ``n_ij`` users of ``fit_rows`` consumed both items,
    ``n_i`` consumed ``i`` (cosine of the binary user columns). An unseen item scores
    ``sum_h sim(h, j)`` over the history items ``h``; the K best are shown.
    """

    name = "item-knn"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0, fit_rows: np.ndarray | None = None):
        rows = _rows(ds, fit_rows)
        users = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (ds.inter_user[rows], ds.inter_item[rows])),
            shape=(ds.n_users, ds.n_items),
        )
        users.sum_duplicates()
        users.data[:] = 1.0  # consumed at all, however often
        degree = np.asarray(users.sum(axis=0)).ravel()
        scale = sparse.diags(np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0))
        unit = users @ scale
        self.similarity = (unit.T @ unit).tocsr()
        self.similarity.setdiag(0.0)  # an item is not its own neighbour
        self.similarity.eliminate_zeros()
        self.k = slate_size

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        seen = _seen(obs)
        scores = np.asarray(self.similarity[np.unique(seen)].sum(axis=0)).ravel()
        return _top_k_unseen(scores, seen, self.k)

    def update(self, obs, slate, reward, info) -> None:
        pass


class ContentRecommender:
    """The K unseen items whose text embedding is closest (cosine) to the history's mean.

    Args:
        embedding: ``(n_items, d)`` item text embeddings
            (:func:`~usermirrorer.data_pipeline.embeddings.content_embedding`, e.g. MiniLM).
    """

    name = "content"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0, content: np.ndarray | None = None):
        if content is None:
            raise ConfigError("the content recommender needs item text embeddings: pass content="
                              "content_embedding(ds, project_path, 'minilm')")
        emb = np.asarray(content, dtype=np.float32)
        if emb.shape[0] != ds.n_items:
            raise ConfigError(f"content embedding has {emb.shape[0]} rows, the dataset {ds.n_items} items")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        self.k = slate_size

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        seen = _seen(obs)
        if not seen.size:  # nothing to be similar to: no preference among items
            return _top_k_unseen(np.zeros(len(self.unit)), seen, self.k)
        return _top_k_unseen(self.unit @ self.unit[seen].mean(axis=0), seen, self.k)

    def update(self, obs, slate, reward, info) -> None:
        pass


class SequentialRecommender:
    """First-order transitions: which items followed the user's last items in the logs.

    ``T[a, b]`` counts how often a user of ``fit_rows`` consumed ``b`` right after ``a`` (time
    order), row-normalised. An unseen item scores ``sum_l decay^l T[h_{-1-l}, j]`` over the
    last ``order`` history items, plus ``1e-6 log(1 + count_j)`` so items no transition
    reaches are ranked by popularity rather than by index.
    """

    name = "sequential"

    def __init__(self, ds: RawDataset, slate_size: int, seed: int = 0, fit_rows: np.ndarray | None = None,
                 order: int = 3, decay: float = 0.5):
        rows = _rows(ds, fit_rows)
        rows = rows[np.lexsort((rows, ds.inter_time[rows], ds.inter_user[rows]))]
        users, items = ds.inter_user[rows], ds.inter_item[rows]
        same = users[1:] == users[:-1]
        counts = sparse.csr_matrix(
            (np.ones(int(same.sum()), dtype=np.float32), (items[:-1][same], items[1:][same])),
            shape=(ds.n_items, ds.n_items),
        )
        counts.sum_duplicates()
        out = np.asarray(counts.sum(axis=1)).ravel()
        self.transitions = (sparse.diags(np.divide(1.0, out, out=np.zeros_like(out), where=out > 0)) @ counts).tocsr()
        self.prior = 1e-6 * np.log1p(np.bincount(items, minlength=ds.n_items).astype(np.float64))
        self.order, self.decay, self.k = int(order), float(decay), slate_size

    def recommend(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        seen = _seen(obs)
        last = seen[::-1][: self.order]
        weights = self.decay ** np.arange(len(last))
        scores = self.prior.copy()
        if len(last):
            scores += np.asarray(self.transitions[last].T @ weights).ravel()
        return _top_k_unseen(scores, seen, self.k)

    def update(self, obs, slate, reward, info) -> None:
        pass


RECOMMENDERS = {
    "random": RandomRecommender,
    "popularity": PopularityRecommender,
    "collaborative": CollaborativeRecommender,
    "linucb": LinUCBRecommender,
    "item-knn": ItemKNNRecommender,
    "content": ContentRecommender,
    "sequential": SequentialRecommender,
}


def make_recommender(
    name: str, ds: RawDataset, slate_size: int, seed: int = 0, **kwargs: Any
) -> Recommender:
    """A reference recommender by name (see :data:`RECOMMENDERS`).

    Keyword arguments a recommender does not take are dropped, so one set (``embedding``,
    ``content``, ``fit_rows``, ``project_path``) can be passed to every name.
    """
    if name not in RECOMMENDERS:
        raise ConfigError(f"unknown recommender {name!r}; expected one of {sorted(RECOMMENDERS)}")
    cls = RECOMMENDERS[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(ds, slate_size, seed=seed, **{k: v for k, v in kwargs.items() if k in accepted})
