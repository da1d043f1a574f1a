"""A learned non-LLM choice model: a multinomial logit over per-option features (``model="mnl"``).

The honest bar for an LLM simulator (KuaiSim's users are learned models too) and a fast
simulator in its own right. For a scene of user ``u`` at time ``t`` the utility of option
``j`` is ``w . x_j`` with the features (each computed for the whole catalog, so the outside
option can be scored like the baselines'):

- ``popularity``: ``log(1 + c_j(t))``, interactions strictly before ``t``;
- ``collaborative``: the user's spectral collaborative score ``r_u V V^T``, z-scored over the
  catalog (as the ``collaborative`` baseline);
- ``content``: cosine similarity of the item's text embedding to the mean embedding of the
  user's history before ``t``;
- ``recency``: ``log(1 + months since release)`` at ``t`` (0 where the domain knows no release);
- ``genre``: the share of the item's genres (``genres`` / ``categories`` / ``tags`` item feature)
  among the genres of the user's history;
- ``cooccurrence``: how often other users interacted with the item right next to the user's
  most recent items (:class:`~usermirrorer.data_pipeline.cooccurrence.ItemCooccurrence`, built
  on ``fit_rows``; the user's own rows never count toward their own score).

``p_j = softmax(w . x)_j``; ``w`` (plus a per-feature standardisation) is fitted by maximum
likelihood with a small L2 penalty on train scenes whose real choice is known
(:meth:`MultinomialLogitChoiceModel.fit`). The outside option scores at the ``skip_quantile``
quantile of the catalog's utilities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.cooccurrence import ItemCooccurrence
from usermirrorer.data_pipeline.embeddings import collaborative_embedding, content_embedding
from usermirrorer.data_pipeline.raw import RawDataset, parse_time
from usermirrorer.data_pipeline.sampling.sampler import NEGATIVES, SceneConfig, sample_scenes
from usermirrorer.data_pipeline.sampling.scorers import collaborative_scores_for_items
from usermirrorer.data_pipeline.sampling.strategies import get_strategy
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim.baselines import _BaselineChoiceModel

__all__ = ["FEATURES", "MultinomialLogitChoiceModel", "fit_scenes_from_log", "interleave_halves", "fitted_mnl"]

FEATURES: tuple[str, ...] = ("popularity", "collaborative", "content", "recency", "genre", "cooccurrence")
_GENRE_KEYS = ("genres", "categories", "tags")
_MONTH = 30 * 86400


class MultinomialLogitChoiceModel(_BaselineChoiceModel):
    """``p_j ~ exp(w . x_j)`` over the features of :data:`FEATURES`, ``w`` fitted on train scenes.

    Args:
        ds: the dataset.
        fit_rows: interaction rows the collaborative embedding is fitted on (the train users'
            rows in an evaluation without leakage); None: all rows.
        embedder: text embedder of the ``content`` feature (``minilm``, ``hashing`` ...); None
            drops the feature.
        project_path: caches the embeddings under ``<project>/embeddings/``.
        l2: L2 penalty on the standardised weights (per scene of the fit).
        skip_quantile: see :mod:`usermirrorer.sim.baselines`.
        seed: randomized-SVD seed for large catalogs.
        features: a subset of :data:`FEATURES` (default all; ``("content",)`` is the
            content-similarity scorer with a fitted temperature).
    """

    name = "mnl"

    def __init__(
        self,
        ds: RawDataset,
        fit_rows: np.ndarray | None = None,
        embedder: str | None = "minilm",
        project_path: str | os.PathLike | None = None,
        l2: float = 1e-3,
        skip_quantile: float = 0.9,
        seed: int = 0,
        features: Sequence[str] = FEATURES,
    ):
        super().__init__(ds, 1.0, skip_quantile)
        unknown = sorted(set(features) - set(FEATURES))
        if unknown or not features:
            raise ConfigError(f"MNL features {unknown or 'none'} are not known; choose from {list(FEATURES)}")
        if "content" in features and embedder is None:
            features = [f for f in features if f != "content"]
            if not features:
                raise ConfigError("the content feature needs an embedder (minilm, hashing ...)")
        self.features = tuple(features)
        self.l2 = float(l2)
        # each feature's data is built only when that feature is used (MiniLM takes minutes on a CPU)
        self.collab = None
        if "collaborative" in self.features:
            self.collab = np.asarray(collaborative_embedding(ds, project_path, rows=fit_rows, seed=seed),
                                     dtype=np.float32)
        self.content = None
        if "content" in self.features:
            emb = np.asarray(content_embedding(ds, project_path, embedder), dtype=np.float32)
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            self.content = emb / np.where(norms > 0, norms, 1.0)
        self.cooccurrence = ItemCooccurrence(ds, fit_rows) if "cooccurrence" in self.features else None
        release = get_strategy(ds.name).release_times(ds)
        self.release = None if release is None else np.asarray(release, dtype=np.int64)
        self.genres = _genre_matrix(ds)
        self.weights: np.ndarray | None = None
        self.mean = np.zeros(len(self.features))
        self.scale = np.ones(len(self.features))
        self.fit_report: dict[str, Any] = {}

    # ------------------------------------------------------------------ features
    def catalog_features(self, history: np.ndarray, now: int, user: int | None = None) -> np.ndarray:
        """``(n_items, n_features)`` raw features of every item for a user with ``history`` at ``now``
        (``user``: their index, whose own rows the co-occurrence feature leaves out)."""
        ds = self.ds
        columns = []
        for name in self.features:
            if name == "popularity":
                col = np.log1p(self._counts.at(now).astype(np.float64))
            elif name == "collaborative":
                col = collaborative_scores_for_items(self.collab, [history], ds.n_items)[0].astype(np.float64)
                std = col.std()
                col = (col - col.mean()) / std if std > 0 else np.zeros_like(col)
            elif name == "content":
                if len(history):
                    centre = self.content[history].mean(axis=0)
                    col = (self.content @ centre).astype(np.float64) / max(float(np.linalg.norm(centre)), 1e-12)
                else:
                    col = np.zeros(ds.n_items)
            elif name == "recency":
                if self.release is None:
                    col = np.zeros(ds.n_items)
                else:
                    col = np.log1p(np.clip(now - self.release, 0, None) / _MONTH).astype(np.float64)
                    col[self.release <= np.iinfo(np.int64).min // 2] = 0.0  # unknown release dates
            elif name == "cooccurrence":
                col = self.cooccurrence.scores(history, user)
            else:  # genre
                if self.genres is None or not len(history):
                    col = np.zeros(ds.n_items)
                else:
                    taste = np.asarray(self.genres[history].sum(axis=0)).ravel()
                    taste = taste / max(taste.sum(), 1.0)
                    sizes = np.asarray(self.genres.sum(axis=1)).ravel()
                    col = np.asarray(self.genres @ taste).ravel() / np.maximum(sizes, 1.0)
            columns.append(col)
        return np.stack(columns, axis=1)

    def _catalog_scores(self, scene: dict, now: int) -> np.ndarray:
        if self.weights is None:
            raise ConfigError("the MNL choice model is not fitted yet: call fit(train_scenes) first "
                              "(make_choice_model('mnl', ds, ...) fits it on sampled train scenes)")
        x = (self.catalog_features(self._history_items(scene, now), now, self._user_of(scene)) - self.mean) / self.scale
        return x @ self.weights

    def _user_of(self, scene: dict) -> int | None:
        return self.ds.user_index.get(str(scene.get("user_id")))

    # ------------------------------------------------------------------ fitting
    def fit(self, scenes: Sequence[dict], max_iter: int = 200) -> MultinomialLogitChoiceModel:
        """Fit ``w`` by maximum likelihood on scenes whose real choice (``item_pos``) is known.

        Raises:
            DataError: no usable scene (each needs ``impression_list``, ``item_pos``, ``timestamp``
                and a user of the dataset).
        """
        from scipy.optimize import minimize

        xs, targets = [], []
        index = self.ds.item_index
        for scene in scenes:
            try:
                now = parse_time(scene["timestamp"])
                items = np.array([index[str(i)] for i in scene["impression_list"]], dtype=np.int64)
                target = int(scene["item_pos"])
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"MNL fit: scene {scene.get('scene_id', '?')!r} lacks a usable {exc}; "
                                "expected impression_list, item_pos and timestamp (DESIGN.md §2)") from exc
            xs.append(self.catalog_features(self._history_items(scene, now), now, self._user_of(scene))[items])
            targets.append(target)
        if not xs:
            raise DataError("MNL fit: no scenes to fit on")
        flat = np.concatenate(xs)
        self.mean = flat.mean(axis=0)
        self.scale = np.where(flat.std(axis=0) > 0, flat.std(axis=0), 1.0)
        xs = [(x - self.mean) / self.scale for x in xs]
        sizes = np.array([len(x) for x in xs])
        stacked = np.concatenate(xs)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        target_rows = offsets[:-1] + np.asarray(targets)
        segment = np.repeat(np.arange(len(xs)), sizes)
        n = len(xs)

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            u = stacked @ w
            top = np.maximum.reduceat(u, offsets[:-1])
            e = np.exp(u - top[segment])
            z = np.add.reduceat(e, offsets[:-1])
            p = e / z[segment]
            nll = float(np.sum(np.log(z) + top - u[target_rows])) / n + self.l2 * float(w @ w)
            grad = (stacked.T @ p - stacked[target_rows].sum(axis=0)) / n + 2 * self.l2 * w
            return nll, grad

        result = minimize(objective, np.zeros(stacked.shape[1]), jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter})
        self.weights = result.x
        self.fit_report = {"scenes": n, "nll": float(result.fun), "converged": bool(result.success),
                           "weights": dict(zip(self.features, np.round(result.x, 4).tolist()))}
        return self

    def fitted_state(self) -> dict[str, Any]:
        """What :meth:`fit` learned, JSON-ready (:meth:`set_fitted_state` restores it)."""
        if self.weights is None:
            raise ConfigError("the MNL choice model is not fitted yet: call fit(train_scenes) first")
        return {"features": list(self.features), "weights": self.weights.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "fit_report": self.fit_report}

    def set_fitted_state(self, state: dict[str, Any]) -> MultinomialLogitChoiceModel:
        """Take the weights and standardisation of :meth:`fitted_state` instead of fitting; returns self.

        Raises:
            DataError: the state is for other features or has arrays of the wrong length.
        """
        if list(state.get("features", [])) != list(self.features):
            raise DataError(f"MNL state is for features {state.get('features')}, this model has {list(self.features)} "
                            "(was it fitted with another embedder?)")
        arrays = {}
        for name in ("weights", "mean", "scale"):
            value = np.asarray(state.get(name, []), dtype=np.float64)
            if value.shape != (len(self.features),) or not np.all(np.isfinite(value)):
                raise DataError(f"MNL state field {name!r}: expected {len(self.features)} finite numbers, "
                                f"got {state.get(name)!r:.80}")
            arrays[name] = value
        self.weights, self.mean, self.scale = arrays["weights"], arrays["mean"], arrays["scale"]
        self.fit_report = dict(state.get("fit_report") or {})
        return self

    def __repr__(self) -> str:
        weights = self.fit_report.get("weights", "not fitted")
        return f"MultinomialLogitChoiceModel(dataset={self.ds.name!r}, weights={weights})"


def fit_scenes_from_log(ds: RawDataset, n_scenes: int = 1000, k: int = 5, seed: int = 0,
                        users: Sequence[str] | None = None, exclude_users: Sequence[str] | None = None,
                        embedder: str | None = "hashing",
                        project_path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Train scenes to fit an MNL on: half standard exposures, half popularity-matched.

    Both constructions, so the fitted weights do not lean on how one of them draws negatives
    (standard exposures hide the real item among popular ones; matched ones among equals).
    """
    out: list[dict[str, Any]] = []
    for tag, negatives in enumerate(NEGATIVES):
        config = SceneConfig(n_samples=n_scenes // 2 if tag == 0 else n_scenes - n_scenes // 2, min_exposure=k,
                             max_exposure=k, split="train", seed=seed * 1000 + 91 + tag, negatives=negatives,
                             embedder=embedder)
        scenes, _ = sample_scenes(ds, config, project_path=project_path, users=users, exclude_users=exclude_users)
        out.extend(scenes)
    return out


def interleave_halves(scenes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`fit_scenes_from_log`'s two halves (standard, then popularity-matched) interleaved,
    so every prefix of the list holds both constructions alike."""
    half = len(scenes) // 2
    return [s for pair in zip(scenes[:half], scenes[half:]) for s in pair] + list(scenes[2 * half:])


def fitted_mnl(ds: RawDataset, fit_scenes: Sequence[dict[str, Any]] | None = None, *, n_fit: int = 1000,
               seed: int = 0, **kwargs: Any) -> MultinomialLogitChoiceModel:
    """An MNL fitted on ``fit_scenes`` (default: :func:`fit_scenes_from_log` of ``n_fit`` scenes)."""
    model = MultinomialLogitChoiceModel(ds, seed=seed, **kwargs)
    scenes = fit_scenes if fit_scenes is not None else fit_scenes_from_log(
        ds, n_fit, seed=seed, project_path=kwargs.get("project_path"))
    return model.fit(scenes)


def _genre_matrix(ds: RawDataset):
    """Sparse ``(n_items, n_genres)`` 0/1 matrix of the items' genre lists (None if none has one)."""
    from scipy import sparse

    vocab: dict[str, int] = {}
    rows, cols = [], []
    for item, features in enumerate(ds.item_features):
        values = next((features.get(k) for k in _GENRE_KEYS if isinstance(features.get(k), list)), None)
        for value in values or ():
            rows.append(item)
            cols.append(vocab.setdefault(str(value), len(vocab)))
    if not vocab:
        return None
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(ds.n_items, len(vocab)))
