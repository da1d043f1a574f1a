"""Candidate scorers: who would a recommender have shown this user at this time? (DESIGN.md §3.2)

Scene sampling scores the whole catalog for a batch of scenes with several scorers, turns each
score row into a ranked list (top-k or multinomial, see :mod:`usermirrorer.data_pipeline.sampling.sampler`)
and merges the lists into the synthetic exposure.

Scorer protocol
---------------
A scorer is any object with a ``name`` (str), a ``default_mode`` (``"topk"`` or
``"multinomial"``) and a method ``scores(batch: SceneBatch) -> np.ndarray`` returning a float32
array of shape ``(len(batch), n_items)``: higher means "more likely shown". In multinomial mode
the list is drawn without replacement with probability proportional to
``exp(scores / temperature)``, so a scorer whose scores are log-weights (``log(1 + count)``)
gives weights proportional to those counts at temperature 1. Scores must be deterministic:
all randomness is added by the sampler from the caller's generator. Scene sampling masks items
that may not be shown (already interacted, unreleased, the real item) itself. A scorer whose
scores are the same for every scene may expose them as ``static_scores`` (1-D, ``n_items``):
multinomial lists are then drawn from one distribution without scoring the catalog per scene.
A scorer whose scores are a product ``q_j . f_i`` may expose it (see :class:`FactorScorer`): its
top-k lists then come from a blocked neighbour search
(:mod:`~usermirrorer.data_pipeline.sampling.neighbours`), exact or approximate, instead of a
scenes x catalog score matrix.

Scorers are built by factories registered by name with :func:`register_scorer`::

    @register_scorer("lastfm-social")
    def social_scorer(ds: RawDataset, ctx: ScorerContext) -> Scorer:
        return SocialScorer(...)

A :class:`~usermirrorer.data_pipeline.sampling.strategies.DomainStrategy` names extra scorers in
``extra_scorers()``; scene sampling builds them with :func:`make_scorer`. A module that
registers scorers must be imported before sampling (e.g. by the strategy module that names
them).

Built-ins: ``random``, ``popularity``, ``collaborative`` (degree-normalised spectral embedding,
:func:`~usermirrorer.data_pipeline.embeddings.spectral_item_embedding` + :func:`collaborative_scores`), ``content`` (cosine similarity of
item text embeddings to the real item; embeddings from :mod:`usermirrorer.data_pipeline.embeddings`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from usermirrorer.data_pipeline.embeddings import collaborative_embedding, content_embedding
from usermirrorer.errors import ConfigError

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.embeddings import Embedder
    from usermirrorer.data_pipeline.raw import RawDataset

__all__ = [
    "SceneBatch",
    "Scorer",
    "FactorScorer",
    "ScorerContext",
    "ScorerFactory",
    "register_scorer",
    "make_scorer",
    "scorer_names",
    "collaborative_scores",
    "collaborative_scores_for_items",
    "RandomScorer",
    "PopularityScorer",
    "CollaborativeScorer",
    "ContentScorer",
]



@dataclass(frozen=True)
class SceneBatch:
    """The scenes a scorer scores at once (a bounded chunk of the sample).

    Attributes:
        users: int array, user index per scene.
        times: int64 array, scene time (unix seconds) per scene.
        targets: int array, the real item per scene.
        history_ptr: int64 CSR offsets (``len(batch) + 1``) into ``history_rows``.
        history_rows: interaction rows (into the dataset arrays) strictly before each scene's
            time, concatenated; scene ``j`` has ``history_rows[history_ptr[j]:history_ptr[j+1]]``.
    """

    users: np.ndarray
    times: np.ndarray
    targets: np.ndarray
    history_ptr: np.ndarray
    history_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def history_of(self, j: int) -> np.ndarray:
        """Interaction rows of scene ``j`` strictly before its time."""
        return self.history_rows[self.history_ptr[j]: self.history_ptr[j + 1]]

    def __repr__(self) -> str:
        return f"SceneBatch({len(self)} scenes, {len(self.history_rows)} history rows)"


@runtime_checkable
class Scorer(Protocol):
    """What scene sampling needs from a scorer (see the module docstring)."""

    name: str
    default_mode: str

    def scores(self, batch: SceneBatch) -> np.ndarray:
        """Float32 ``(len(batch), n_items)`` scores; higher = more likely shown."""
        ...


@runtime_checkable
class FactorScorer(Protocol):
    """A scorer whose scores are ``queries(batch) @ item_factors.T``, each row divided by its
    largest absolute value when ``normalise`` (what ``scores`` returns, computed the same way)."""

    name: str
    default_mode: str
    item_factors: np.ndarray
    normalise: bool

    def queries(self, batch: SceneBatch) -> np.ndarray:
        """Float32 ``(len(batch), dim)`` query vectors."""
        ...

    def scores(self, batch: SceneBatch) -> np.ndarray:
        ...


@dataclass
class ScorerContext:
    """What scorer factories may use besides the dataset.

    Attributes:
        project_path: working directory (embedding caches live in ``embeddings/``); None: no cache.
        embedder: text embedder for the content scorer (name or object); None disables it.
        fit_rows: interaction rows the data-driven scorers are fitted on (None: all).
        dim: spectral embedding size.
        seed: seed for randomized fits (randomized SVD on large catalogs).
        options: free-form options for domain scorers.
    """

    project_path: str | os.PathLike | None = None
    embedder: str | Embedder | None = None
    fit_rows: np.ndarray | None = None
    dim: int = 64
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


ScorerFactory = Callable[["RawDataset", ScorerContext], Scorer]
_SCORERS: dict[str, ScorerFactory] = {}


def register_scorer(name: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Decorator: register a scorer factory ``(ds, ctx) -> Scorer`` under ``name``.

    Registering an existing name replaces it (a domain module may override a built-in).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a scorer name must be a non-empty string, got {name!r}")

    def wrap(factory: ScorerFactory) -> ScorerFactory:
        _SCORERS[name] = factory
        return factory

    return wrap


def scorer_names() -> list[str]:
    """Names of the registered scorers."""
    return sorted(_SCORERS)


def make_scorer(name: str, ds: RawDataset, ctx: ScorerContext | None = None) -> Scorer:
    """Build the scorer registered as ``name`` for ``ds``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in _SCORERS:
        raise ConfigError(
            f"unknown scorer {name!r}; registered scorers: {', '.join(scorer_names())}. "
            "A domain scorer must be registered with register_scorer() in a module that is "
            "imported before scene sampling (e.g. the strategy module naming it)."
        )
    scorer = _SCORERS[name](ds, ctx or ScorerContext())
    if not isinstance(scorer, Scorer):
        raise ConfigError(
            f"the factory of scorer {name!r} returned {type(scorer).__name__}, which lacks "
            "name / default_mode / scores(batch)"
        )
    return scorer


# ---------------------------------------------------------------------------------------------
# collaborative: degree-normalised spectral embedding


def collaborative_scores_for_items(
    V: np.ndarray, item_lists: Sequence[np.ndarray], n_items: int | None = None
) -> np.ndarray:
    """Collaborative scores ``r V V^T`` for users given as lists of item indices.

    ``r`` is the binary row of each list (an item listed twice counts once, as in the fit).
    Memory is ``len(item_lists) x n_items`` float32: chunk the queries for large catalogs.

    Returns:
        float32 ``(len(item_lists), n_items)``.
    """
    from scipy import sparse

    V = np.asarray(V, dtype=np.float32)
    n_items = V.shape[0] if n_items is None else n_items
    lengths = np.array([len(x) for x in item_lists], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = (np.concatenate([np.asarray(x, dtype=np.int64) for x in item_lists])
               if len(item_lists) and indptr[-1] else np.zeros(0, dtype=np.int64))
    rows = sparse.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(item_lists), n_items)
    )
    rows.sum_duplicates()
    rows.data[:] = 1.0
    user_vec = np.asarray(rows @ V, dtype=np.float32)  # (n, dim)
    return user_vec @ V.T


def collaborative_scores(
    ds: RawDataset, V: np.ndarray, user_item_rows: Sequence[np.ndarray]
) -> np.ndarray:
    """Collaborative scores ``r_u V V^T`` of users given by their interaction rows.

    Args:
        ds: the dataset the rows index into.
        V: item embedding from :func:`~usermirrorer.data_pipeline.embeddings.spectral_item_embedding` (``n_items x dim``).
        user_item_rows: per query, the interaction rows making up the user's row ``r_u`` (e.g.
            ``np.arange(ds.rows_before(u, t).start, ...stop)`` for a causal history).

    Returns:
        float32 ``(len(user_item_rows), n_items)``; chunk queries for large catalogs.
    """
    return collaborative_scores_for_items(
        V, [ds.inter_item[np.asarray(r, dtype=np.int64)] for r in user_item_rows], ds.n_items
    )


# ---------------------------------------------------------------------------------------------
# built-in scorers


class RandomScorer:
    """Every item equally likely: zero scores (the sampler's noise makes the list)."""

    name = "random"
    default_mode = "multinomial"

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.static_scores = np.zeros(n_items, dtype=np.float32)

    def scores(self, batch: SceneBatch) -> np.ndarray:
        return np.zeros((len(batch), self.n_items), dtype=np.float32)

    def __repr__(self) -> str:
        return f"RandomScorer(n_items={self.n_items})"


class PopularityScorer:
    """``log(1 + count)``: multinomial lists draw items in proportion to ``count + 1``."""

    name = "popularity"
    default_mode = "multinomial"

    def __init__(self, counts: np.ndarray):
        self.log_counts = np.log1p(np.asarray(counts, dtype=np.float64)).astype(np.float32)
        self.static_scores = self.log_counts

    def scores(self, batch: SceneBatch) -> np.ndarray:
        return np.broadcast_to(self.log_counts, (len(batch), len(self.log_counts))).copy()

    def __repr__(self) -> str:
        return f"PopularityScorer(n_items={len(self.log_counts)})"


class CollaborativeScorer:
    """``r_u V V^T`` over the user's interactions strictly before the scene time.

    Rows are divided by their largest absolute value, so a multinomial temperature means the
    same for every user (scores lie in [-1, 1]).
    """

    name = "collaborative"
    default_mode = "topk"

    normalise = True

    def __init__(self, ds: RawDataset, embedding: np.ndarray):
        self.item_of_row = ds.inter_item
        self.embedding = np.asarray(embedding, dtype=np.float32)
        self.item_factors = self.embedding

    def queries(self, batch: SceneBatch) -> np.ndarray:
        """Float32 ``(len(batch), dim)``: ``r_u V``, the user's binary history row times ``V``."""
        from scipy import sparse

        items = self.item_of_row[batch.history_rows]
        rows = sparse.csr_matrix(
            (np.ones(len(items), dtype=np.float32), items, batch.history_ptr),
            shape=(len(batch), self.embedding.shape[0]),
        )
        rows.sum_duplicates()
        rows.data[:] = 1.0
        return np.asarray(rows @ self.embedding, dtype=np.float32)

    def scores(self, batch: SceneBatch) -> np.ndarray:
        out = self.queries(batch) @ self.embedding.T
        scale = np.maximum(out.max(axis=1), -out.min(axis=1))[:, None]
        np.divide(out, scale, out=out, where=scale > 0)
        return out

    def __repr__(self) -> str:
        return f"CollaborativeScorer(n_items={self.embedding.shape[0]}, dim={self.embedding.shape[1]})"


class ContentScorer:
    """Cosine similarity of every item's text embedding to the real item's."""

    name = "content"
    default_mode = "topk"
    normalise = False

    def __init__(self, embedding: np.ndarray):
        emb = np.asarray(embedding, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        self.item_factors = self.unit

    def queries(self, batch: SceneBatch) -> np.ndarray:
        """Float32 ``(len(batch), dim)``: the real items' unit text embeddings."""
        return self.unit[batch.targets]

    def scores(self, batch: SceneBatch) -> np.ndarray:
        return self.queries(batch) @ self.unit.T

    def __repr__(self) -> str:
        return f"ContentScorer(n_items={self.unit.shape[0]}, dim={self.unit.shape[1]})"


def _fit_counts(ds: RawDataset, rows: np.ndarray | None) -> np.ndarray:
    items = ds.inter_item if rows is None else ds.inter_item[np.asarray(rows)]
    return np.bincount(items, minlength=ds.n_items)


@register_scorer("random")
def _random(ds: RawDataset, ctx: ScorerContext) -> Scorer:
    return RandomScorer(ds.n_items)


@register_scorer("popularity")
def _popularity(ds: RawDataset, ctx: ScorerContext) -> Scorer:
    return PopularityScorer(_fit_counts(ds, ctx.fit_rows))


@register_scorer("collaborative")
def _collaborative(ds: RawDataset, ctx: ScorerContext) -> Scorer:
    embedding = collaborative_embedding(
        ds, ctx.project_path, rows=ctx.fit_rows, dim=ctx.dim, seed=ctx.seed
    )
    return CollaborativeScorer(ds, embedding)


@register_scorer("content")
def _content(ds: RawDataset, ctx: ScorerContext) -> Scorer:
    if ctx.embedder is None:
        raise ConfigError(
            "the content scorer needs a text embedder; pass embedder='minilm' (default model), "
            "another embedder, or drop 'content' from the scorers (--embedder none)"
        )
    return ContentScorer(content_embedding(ds, ctx.project_path, ctx.embedder))

