"""Non-LLM choice models: instant baselines with the simulator's ``choice_probs`` interface.

They answer the same question as :class:`~usermirrorer.sim.UserSimulator` — "which option of
this exposure list does the user pick?" — from the log alone, so the environment, evaluation
and benchmarks take either. They are the yardsticks an LLM simulator must beat (DESIGN.md §8)
and make env smoke runs take milliseconds.

Each model turns a per-option score into probabilities with a softmax at ``temperature``:
``p_j = exp(s_j / T) / sum_k exp(s_k / T)``.

- ``random``: every option equally likely (1/K).
- ``popularity``: ``s_j = log(1 + c_j(t))`` with ``c_j(t)`` the item's interaction count
  strictly before the scene time (causal: no future counts). At ``T = 1``, ``p_j`` is
  proportional to ``1 + c_j(t)``.
- ``most-popular``: all the probability on the option with the most interactions strictly before
  the scene time, split evenly among options tied for the top (no temperature, no outside
  option).
- ``collaborative``: ``s_j`` = the user's collaborative score ``r_u V V^T`` (degree-normalised
  spectral item embedding, :func:`~usermirrorer.data_pipeline.sampling.scorers.spectral_item_embedding`,
  fitted on ``fit_rows``), standardised over the whole catalog for that user (z-score), so one
  temperature means the same for every user. ``r_u`` is the scene's ``history_item_ids`` when
  given (the env passes the live session history), else the user's log before the scene time.

**Outside option.** A scene with ``outside_option: true`` has one more option, last ("none of
these"). Its score is the ``skip_quantile`` quantile (default 0.9) of the same scores over the
whole catalog: the user skips about as readily as they would take an item at that rank, so a
slate of strong items is rarely skipped and a random slate often is.

**Rating queries.** A scene with ``rating_query: {"item_id", "levels"}`` (the env's ``rating``
reward) asks for a 1-5 rating of one item; these models answer with the item's rating
histogram before the scene time (``rating`` behaviour feature, add-one smoothed over the
levels); uniform when the dataset has no ratings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.embeddings import collaborative_embedding
from usermirrorer.data_pipeline.popularity import CausalCounts
from usermirrorer.data_pipeline.raw import RawDataset, parse_time
from usermirrorer.data_pipeline.sampling.scorers import collaborative_scores_for_items
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim.simulator import ChoiceResult

__all__ = [
    "CHOICE_MODELS",
    "RandomChoiceModel",
    "PopularityChoiceModel",
    "MostPopularChooser",
    "CollaborativeChoiceModel",
    "make_baseline",
]

_RATING_KEY = "rating"


class _BaselineChoiceModel:
    """Shared plumbing: scene parsing, softmax, outside option, rating queries."""

    name = "baseline"

    def __init__(self, ds: RawDataset, temperature: float = 1.0, skip_quantile: float = 0.9):
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= skip_quantile <= 1.0:
            raise ConfigError(f"skip_quantile must be in [0, 1], got {skip_quantile}")
        self.ds = ds
        self.temperature = float(temperature)
        self.skip_quantile = float(skip_quantile)
        self._counts = CausalCounts(ds)
        # Interactions ordered by (item, time): an item's ratings before t are one slice.
        order = np.lexsort((ds.inter_time, ds.inter_item))
        self._item_sorted_time = ds.inter_time[order]
        self._item_ptr = np.concatenate(
            [[0], np.cumsum(np.bincount(ds.inter_item, minlength=ds.n_items))]
        )
        ratings = ds.behavior.get(_RATING_KEY)
        self._ratings = None
        if ratings is not None and ratings.dtype.kind == "f":
            self._ratings = ratings[order]

    # -------------------------------------------------------------------------------------
    def choice_probs(
        self, scenes: dict | Sequence[dict], **_ignored: Any
    ) -> ChoiceResult | list[ChoiceResult]:
        """Choice distribution per scene (one scene in -> one result out; a list -> a list).

        Extra keyword arguments of ``UserSimulator.choice_probs`` (``mode``, ``n_thoughts``,
        ``seed``) are accepted and ignored: these models have no thoughts.
        """
        single = isinstance(scenes, dict)
        batch = [scenes] if single else list(scenes)
        results = [ChoiceResult(probs=self._probs(scene)) for scene in batch]
        return results[0] if single else results

    def _probs(self, scene: dict) -> np.ndarray:
        try:
            options = scene["text"]["action_list"]
            shown = scene["impression_list"]
            time = scene["timestamp"]
        except (KeyError, TypeError) as exc:
            raise DataError(
                f"scene {scene.get('scene_id') if isinstance(scene, dict) else scene!r} lacks {exc}; "
                f"{self.name} choice model needs impression_list, timestamp and text.action_list"
            ) from exc
        now = parse_time(time) if isinstance(time, str) else int(time)
        if scene.get("rating_query"):
            return self._rating_probs(scene["rating_query"], now)
        index = self.ds.item_index
        try:
            items = np.array([index[str(i)] for i in shown], dtype=np.int64)
        except KeyError as exc:
            raise DataError(f"scene item {exc} is not in dataset {self.ds.name!r}") from exc
        outside = bool(scene.get("outside_option"))
        if len(options) != len(items) + int(outside):
            raise DataError(
                f"scene has {len(options)} options for {len(items)} items"
                f"{' + outside option' if outside else ''}; they must match"
            )
        catalog = self._catalog_scores(scene, now)
        scores = catalog[items]
        if outside:
            scores = np.append(scores, np.quantile(catalog, self.skip_quantile))
        return _softmax(scores / self.temperature)

    def _catalog_scores(self, scene: dict, now: int) -> np.ndarray:
        raise NotImplementedError

    def counts_before(self, now: int) -> np.ndarray:
        """Interactions per item strictly before ``now`` (int64, all items; a new array)."""
        return self._counts.at(now).copy()

    def _rating_probs(self, query: dict, now: int) -> np.ndarray:
        levels = [int(x) for x in query["levels"]]
        hist = np.ones(len(levels), dtype=np.float64)  # add-one smoothing
        item = self.ds.item_index.get(str(query["item_id"]))
        if self._ratings is not None and item is not None:
            start = int(self._item_ptr[item])
            stop = start + int(
                np.searchsorted(self._item_sorted_time[start : self._item_ptr[item + 1]], now)
            )
            values = np.rint(self._ratings[start:stop])
            for position, level in enumerate(levels):
                hist[position] += np.count_nonzero(values == level)
        return hist / hist.sum()

    def _history_items(self, scene: dict, now: int) -> np.ndarray:
        if "history_item_ids" in scene:
            index = self.ds.item_index
            return np.array(
                [index[str(i)] for i in scene["history_item_ids"] if str(i) in index],
                dtype=np.int64,
            )
        user = self.ds.user_index.get(str(scene.get("user_id")))
        if user is None:
            raise DataError(
                f"scene {scene.get('scene_id')} has user_id {scene.get('user_id')!r}, not in dataset "
                f"{self.ds.name!r}, and no history_item_ids"
            )
        return self.ds.inter_item[self.ds.rows_before(user, now)].astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dataset={self.ds.name!r}, temperature={self.temperature}, "
            f"skip_quantile={self.skip_quantile})"
        )


class RandomChoiceModel(_BaselineChoiceModel):
    """Every option (outside option included) equally likely."""

    name = "random"

    def _catalog_scores(self, scene: dict, now: int) -> np.ndarray:
        return np.zeros(self.ds.n_items)

    def _probs(self, scene: dict) -> np.ndarray:
        if scene.get("rating_query"):
            return super()._probs(scene)
        n = len(scene["text"]["action_list"])
        return np.full(n, 1.0 / n)


class PopularityChoiceModel(_BaselineChoiceModel):
    """``p_j ~ exp(log(1 + count_j before t) / T)``: the crowd's choice at that time."""

    name = "popularity"

    def _catalog_scores(self, scene: dict, now: int) -> np.ndarray:
        return np.log1p(self._counts.at(now).astype(np.float64))


class MostPopularChooser(_BaselineChoiceModel):
    """Picks the option with the most interactions strictly before the scene time.

    The chooser of the issue's warning (51% on standard ML-100K exposures, K=5): all the
    probability on the most popular option, split evenly among options tied for the top.
    """

    name = "most-popular"

    def _probs(self, scene: dict) -> np.ndarray:
        index = self.ds.item_index
        items = np.array([index[str(i)] for i in scene["impression_list"]], dtype=np.int64)
        counts = self._counts.at(parse_time(scene["timestamp"]))[items]
        top = (counts == counts.max()).astype(np.float64)
        return top / top.sum()

    def __repr__(self) -> str:
        return f"MostPopularChooser(dataset={self.ds.name!r})"


class CollaborativeChoiceModel(_BaselineChoiceModel):
    """``p_j ~ exp(z_j / T)``, ``z`` = the user's spectral collaborative scores, standardised.

    Args:
        ds: the dataset.
        fit_rows: interaction rows the embedding is fitted on (e.g. the train rows for an
            evaluation without leakage); None: all rows.
        dim: embedding size (DESIGN.md §3: 64).
        temperature, skip_quantile: see the module docstring.
        seed: randomized-SVD seed for large catalogs.
        project_path: when given, the embedding is cached in
            ``<project>/embeddings/<D>.collaborative.safetensors`` (fitting takes seconds).
        embedding: a ready ``(n_items, dim)`` item embedding (skips the fit).
    """

    name = "collaborative"

    def __init__(
        self,
        ds: RawDataset,
        temperature: float = 1.0,
        skip_quantile: float = 0.9,
        fit_rows: np.ndarray | None = None,
        dim: int = 64,
        seed: int = 0,
        project_path: str | os.PathLike | None = None,
        embedding: np.ndarray | None = None,
    ):
        super().__init__(ds, temperature, skip_quantile)
        if embedding is None:
            embedding = collaborative_embedding(ds, project_path, rows=fit_rows, dim=dim, seed=seed)
        embedding = np.asarray(embedding, dtype=np.float32)
        if embedding.ndim != 2 or embedding.shape[0] != ds.n_items:
            raise ConfigError(
                f"embedding has shape {embedding.shape}, expected ({ds.n_items}, dim) for dataset {ds.name!r}"
            )
        self.embedding = embedding

    def _catalog_scores(self, scene: dict, now: int) -> np.ndarray:
        history = self._history_items(scene, now)
        scores = collaborative_scores_for_items(self.embedding, [history], self.ds.n_items)[
            0
        ].astype(np.float64)
        std = scores.std()
        return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


CHOICE_MODELS: dict[str, type[_BaselineChoiceModel]] = {
    "random": RandomChoiceModel,
    "popularity": PopularityChoiceModel,
    "most-popular": MostPopularChooser,
    "collaborative": CollaborativeChoiceModel,
}


def make_baseline(name: str, raw_dataset: RawDataset, **kwargs: Any) -> _BaselineChoiceModel:
    """A non-LLM choice model by name: ``"random"``, ``"popularity"``, ``"most-popular"`` or
    ``"collaborative"`` (any choice model, LLM included: :func:`usermirrorer.sim.make_choice_model`).

    Args:
        name: model name.
        raw_dataset: the dataset it reads counts / fits embeddings from.
        **kwargs: ``temperature``, ``skip_quantile``; collaborative also ``fit_rows``, ``dim``,
            ``seed``, ``project_path`` (embedding cache), ``embedding``.

    Raises:
        ConfigError: an unknown name or option.
    """
    if name not in CHOICE_MODELS:
        raise ConfigError(f"unknown choice model {name!r}; expected one of {sorted(CHOICE_MODELS)}")
    try:
        return CHOICE_MODELS[name](raw_dataset, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"choice model {name!r}: {exc}") from exc


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()
