"""Scene sampling: turning interaction logs into simulation scenes (DESIGN.md §3).

A scene is a user's profile, their history strictly before time ``t`` and an exposure list of
``K`` items that holds the item they really chose at ``t``. For each sampled interaction:

1. *Candidates*: interactions with at least ``min_history`` interactions of the same user
   strictly before them (optionally restricted / excluding users or interactions).
2. *Scoring*: every scorer (:mod:`usermirrorer.data_pipeline.sampling.scorers`) scores the whole catalog
   for a bounded chunk of scenes; items that may not be shown are masked first (already
   interacted with before or at ``t``, released after ``t``, the real item).
3. *Ranked lists*: from each scorer a list of ``max_exposure - 1`` items, by top-k or by
   multinomial sampling without replacement (Gumbel-top-k: ``argsort(scores/T + Gumbel)``).
4. *Merge*: random interleaving that keeps each list's internal order, then de-duplication,
   the domain filter (``strategy.exclude_candidates``), and a cut to ``K - 1`` items; a
   uniform random list is appended behind the merge only to top up scenes that run short.
5. The real item is inserted at a position drawn uniformly from all ``K`` positions.
6. *Text* through the domain strategy: profile, the last ``h`` history items before ``t``
   (``h`` uniform in ``strategy.history_range`` for train, its maximum for eval), the options.
7. Optional length filter: scenes whose chat-formatted prompt exceeds ``max_tokens`` tokens are
   dropped and replaced by further candidates.

``negatives="popularity-matched"`` replaces steps 2-4: the ``K - 1`` other options are the
available items nearest to the real item in *causal* popularity (interactions strictly before
``t``, :func:`causal_popularity`), drawn so that the number of options more popular than the real
item is uniform on ``0..K-1``: popularity alone cannot find the real item. Domains with logged impressions
(``strategy.logged_exposure_key``, e.g. MIND) use the logged list instead of steps 2-4.

Everything is vectorised over a chunk of scenes. All randomness comes from one
``np.random.Generator`` seeded by ``(seed, split, negatives)``: the same inputs and seed give
byte-identical output.

Two paths give the same scenes. Small catalogs (below :data:`SPARSE_MIN_ITEMS` items, e.g.
ML-100K) build dense ``chunk x catalog`` masks and scores, a chunk holding at most
``chunk_bytes`` of them. Large catalogs never do: showable items are a sparse complement
(:mod:`~usermirrorer.data_pipeline.sampling.availability`); random and popularity lists are
drawn from one CDF per distribution with rejection of unshowable items; collaborative and
content top-k lists come from a blocked neighbour search over many scenes at once
(:mod:`~usermirrorer.data_pipeline.sampling.neighbours`) that reads only the tie-breaking noise
of the items near the cut — the same lists, byte for byte, as the dense computation with the
same chunks. Two options trade that for speed and promise the same law instead of the same
bytes: ``neighbours="faiss"`` (approximate content neighbours) and, on large catalogs,
popularity-matched negatives drawn from the count levels next to the real item's
(:mod:`~usermirrorer.data_pipeline.sampling.matched`); both use chunks of 1,024 scenes.
"""

from __future__ import annotations

import math
import os
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from usermirrorer.data_pipeline.jsonl import read_jsonl, write_jsonl
from usermirrorer.data_pipeline.popularity import (  # causal_popularity & co: re-exported
    CausalCounts,
    causal_popularity,
    iter_causal_popularity,
    popularity_bins,
)
from usermirrorer.data_pipeline.raw import RawDataset, format_time, load_raws, parse_time, raw_paths
from usermirrorer.data_pipeline.ray_engine import RayEngine, in_process
from usermirrorer.data_pipeline.sampling.availability import Availability, ReleaseIndex
from usermirrorer.data_pipeline.sampling.draws import (
    ItemDistribution,
    check_seed,
    first_occurrence,
    gumbel,
    successive_draws,
    topk_desc,
)
from usermirrorer.data_pipeline.sampling.matched import LevelIndex, MatchedDraws
from usermirrorer.data_pipeline.sampling.neighbours import (
    Candidates,
    ExactNeighbours,
    FaissNeighbours,
    dense_product_is_small,
    select_topk,
)
from usermirrorer.data_pipeline.sampling.scorers import (
    FactorScorer,
    SceneBatch,
    Scorer,
    ScorerContext,
    make_scorer,
)
from usermirrorer.data_pipeline.sampling.strategies import DomainStrategy, get_strategy
from usermirrorer.data_pipeline.scene import Scene, render_scene
from usermirrorer.errors import ConfigError, DataError

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.embeddings import Embedder

__all__ = [
    "SceneConfig",
    "SceneReport",
    "SceneSampler",
    "SPLITS",
    "NEGATIVES",
    "HISTORY_LENGTHS",
    "DEFAULT_SCORERS",
    "eligible_rows",
    "causal_popularity",
    "iter_causal_popularity",
    "popularity_bins",
    "interaction_rows",
    "sample_scenes",
    "sample_train_eval",
    "build_scene_file",
    "scenes_path",
    "LengthFilter",
    "SceneShards",
    "shard_rng",
]

SPLITS = ("train", "eval")
NEGATIVES = ("standard", "popularity-matched")
HISTORY_LENGTHS = ("uniform", "longest")
LIST_MODES = ("topk", "multinomial")
NEIGHBOURS = ("exact", "faiss")
# Scenes whose neighbour lists are searched together: one matrix product per item block.
_NEIGHBOUR_GROUP = 512
# Below this many items a chunk's dense masks and score matrices are cheap (ML-100K: 1,682):
# they are built as they always were; above it the sparse masks and the neighbour search take
# over. Both give the same scenes.
SPARSE_MIN_ITEMS = 16_384
# Scenes per chunk where no scenes x catalog array exists and the output is promised in law,
# not byte for byte (FAISS neighbours, popularity-matched negatives from count levels).
_SPARSE_CHUNK = 1024
DEFAULT_SCORERS = ("random", "popularity", "collaborative", "content")
_NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class SceneConfig:
    """How to sample scenes.

    Attributes:
        n_samples: scenes wanted (fewer if fewer candidates exist).
        min_exposure, max_exposure: ``K`` is uniform in this inclusive range (1..26).
        split: ``"train"`` (random history length) or ``"eval"`` (fixed, the longest).
        history_length: train scenes' history: ``"uniform"`` in the strategy's ``history_range``
            (the paper's rule) or ``"longest"``, the eval split's length (for a model trained to
            be scored on eval prompts). ``"longest"`` still makes the uniform draw, so the scenes
            are the same but for their history. Eval scenes always get the longest.
        seed: seed of everything random.
        min_history: interactions needed strictly before a candidate.
        scorers: scorer names; None: random, popularity, collaborative, content (content only
            with an embedder) plus the strategy's ``extra_scorers()``.
        list_mode: ``"topk"``/``"multinomial"`` for every scorer; None: each scorer's default.
        temperature: multinomial temperature (scores / T).
        negatives: ``"standard"`` or ``"popularity-matched"``.
        popularity_window: popularity-matched negatives come from the ``window * (K - 1)``
            available items nearest to the real item's causal popularity, above and below.
        embedder: text embedder of the content scorer (name or object); None: no content scorer.
        collaborative_dim: spectral embedding size.
        max_tokens: drop scenes whose chat prompt exceeds this many tokens (needs ``tokenizer``).
        tokenizer: tokenizer name (model registry name, folder or hub id) for ``max_tokens``.
        length_mode: prompt mode measured by the length filter (``"decision"`` is the longest).
        chunk_bytes: bound on the score arrays held at once (dense scorers); it also sets how
            many scenes share one draw of the random numbers, so it is part of what a seed gives.
        neighbours: top-k lists of the collaborative and content scorers from an ``"exact"``
            blocked search (the same lists as scoring the whole catalog) or, for the content
            scorer, a ``"faiss"`` approximate index (``pip install 'usermirrorer[ann]'``; for
            catalogs of millions). The collaborative search stays exact: pruned by item norm it
            is as fast as the index.
        faiss_nprobe: inverted lists the FAISS index visits per query (recall vs speed).
        shard_size: None (default): one random stream over all scenes, what every published
            seed gives. An int: the candidates, in their drawn order, are cut into shards of
            this many interactions, and shard ``k`` is sampled under a generator of its own
            (``(seed, split, negatives, k)``), so shards can run anywhere, in any order
            (``--engine ray``) and give the same scenes as a single process with the same
            ``shard_size``. A different draw than None: other scenes for the same seed.
    """

    n_samples: int
    min_exposure: int = 5
    max_exposure: int = 5
    split: str = "train"
    history_length: str = "uniform"
    seed: int = 0
    min_history: int = 3
    scorers: tuple[str, ...] | None = None
    list_mode: str | None = None
    temperature: float = 1.0
    negatives: str = "standard"
    popularity_window: int = 2
    embedder: str | Embedder | None = "minilm"
    collaborative_dim: int = 64
    max_tokens: int | None = None
    tokenizer: str | None = None
    length_mode: str = "decision"
    chunk_bytes: int = 256 * 2**20
    neighbours: str = "exact"
    faiss_nprobe: int = 16
    shard_size: int | None = None

    def validate(self) -> SceneConfig:
        """Raise ConfigError naming the setting to change; returns self."""
        if self.n_samples < 1:
            raise ConfigError(f"n_samples must be >= 1, got {self.n_samples}")
        check_seed(self.seed, "seed")
        if not 1 <= self.min_exposure <= self.max_exposure <= 26:
            raise ConfigError(
                f"exposure sizes must satisfy 1 <= min_exposure <= max_exposure <= 26 (options are "
                f"lettered A-Z), got min_exposure={self.min_exposure}, max_exposure={self.max_exposure}"
            )
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if self.history_length not in HISTORY_LENGTHS:
            raise ConfigError(f"history_length must be one of {HISTORY_LENGTHS}, got {self.history_length!r}")
        if self.list_mode is not None and self.list_mode not in LIST_MODES:
            raise ConfigError(f"list_mode must be one of {LIST_MODES} or None, got {self.list_mode!r}")
        if self.min_history < 0:
            raise ConfigError(f"min_history must be >= 0, got {self.min_history}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.popularity_window < 1:
            raise ConfigError(f"popularity_window must be >= 1, got {self.popularity_window}")
        if (self.max_tokens is None) != (self.tokenizer is None):
            raise ConfigError(
                "the length filter needs both max_tokens and tokenizer "
                f"(got max_tokens={self.max_tokens}, tokenizer={self.tokenizer!r})"
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.chunk_bytes < 2**16:
            raise ConfigError(f"chunk_bytes must be >= 65536, got {self.chunk_bytes}")
        if self.neighbours not in NEIGHBOURS:
            raise ConfigError(f"neighbours must be one of {NEIGHBOURS}, got {self.neighbours!r}")
        if self.faiss_nprobe < 1:
            raise ConfigError(f"faiss_nprobe must be >= 1, got {self.faiss_nprobe}")
        if self.shard_size is not None and (not isinstance(self.shard_size, int) or self.shard_size < 1):
            raise ConfigError(f"shard_size must be an integer >= 1 (or None), got {self.shard_size!r}")
        return self


@dataclass
class SceneReport:
    """What a sampling run did (the CLI prints it)."""

    dataset: str
    split: str
    negatives: str
    requested: int
    written: int = 0
    candidates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    exposure_sizes: dict[int, int] = field(default_factory=dict)
    position_counts: list[int] = field(default_factory=list)
    scorers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    setup_seconds: float = 0.0
    path: str | None = None
    excluded_users: int = 0
    excluded_interactions: int = 0

    @property
    def scenes_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "split": self.split, "negatives": self.negatives,
            "requested": self.requested, "written": self.written, "candidates": self.candidates,
            "dropped": dict(self.dropped),
            "exposure_sizes": {int(k): v for k, v in sorted(self.exposure_sizes.items())},
            "position_counts": list(self.position_counts), "scorers": list(self.scorers),
            "seconds": round(self.seconds, 4), "setup_seconds": round(self.setup_seconds, 4),
            "scenes_per_second": round(self.scenes_per_second, 1), "path": self.path,
            "excluded_users": self.excluded_users, "excluded_interactions": self.excluded_interactions,
        }

    def __repr__(self) -> str:
        return (f"SceneReport({self.dataset!r} {self.split}/{self.negatives}: {self.written}/{self.requested} "
                f"scenes, {self.scenes_per_second:.0f} scenes/s)")


def scenes_path(project_path: str | os.PathLike, dataset: str, split: str,
                negatives: str = "standard") -> Path:
    """``datasets/<D>_<split>.jsonl`` (``<D>_<split>_popmatched.jsonl`` for matched negatives)."""
    suffix = "" if negatives == "standard" else "_popmatched"
    return Path(project_path) / "datasets" / f"{dataset}_{split}{suffix}.jsonl"


# ---------------------------------------------------------------------------------------------
# row arithmetic


def _user_time_key(ds: RawDataset) -> np.ndarray:
    """int64 key ordered like the rows (user, then time): binary search on (user, time)."""
    if ds.n_interactions == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(ds.inter_time.min())
    span = int(ds.inter_time.max()) - t0 + 2
    if span >= 2**33 or ds.n_users >= 2**29:
        raise DataError(f"{ds.name}: timestamps span more than 272 years or too many users for the row key")
    return ds.inter_user.astype(np.int64) * (2**33) + (ds.inter_time - t0 + 1)


def _concat_ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``arange(start, stop)`` over pairs; returns (values, CSR offsets)."""
    lengths = np.maximum(stops - starts, 0).astype(np.int64)
    ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    total = int(ptr[-1])
    if total == 0:
        return np.zeros(0, dtype=np.int64), ptr
    offsets = np.arange(total, dtype=np.int64) - np.repeat(ptr[:-1], lengths)
    return np.repeat(starts.astype(np.int64), lengths) + offsets, ptr


def eligible_rows(ds: RawDataset, min_history: int = 3) -> np.ndarray:
    """Rows with at least ``min_history`` interactions of the same user strictly before them."""
    if ds.n_interactions == 0:
        return np.zeros(0, dtype=np.int64)
    key = _user_time_key(ds)
    first_of_tie = np.searchsorted(key, key, side="left")
    earlier = first_of_tie - ds.user_ptr[ds.inter_user]
    return np.flatnonzero(earlier >= min_history)


def interaction_rows(ds: RawDataset, records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Rows of the interactions that scene records (``user_id``, ``item_id``, ``timestamp``) came
    from; records whose interaction is not in ``ds`` are skipped."""
    key = _user_time_key(ds)
    t0 = int(ds.inter_time.min()) if ds.n_interactions else 0
    out: list[int] = []
    for record in records:
        user = ds.user_index.get(record.get("user_id"))
        item = ds.item_index.get(record.get("item_id"))
        if user is None or item is None:
            continue
        try:
            t = parse_time(record["timestamp"])
        except (KeyError, ValueError):
            continue
        k = user * (2**33) + (t - t0 + 1)
        lo, hi = np.searchsorted(key, k, "left"), np.searchsorted(key, k, "right")
        for row in range(int(lo), int(hi)):
            if ds.inter_item[row] == item:
                out.append(row)
    return np.unique(np.asarray(out, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# the sampler


class SceneSampler:
    """Builds scenes for one dataset with one configuration.

    Scorers and embeddings are built once in ``__init__`` (embeddings are cached under
    ``<project>/embeddings/``); :meth:`sample` then turns candidate interaction rows into scene
    records. Use :func:`sample_scenes` for the whole run (candidates, length filter, report).

    Args:
        ds: the dataset.
        config: sampling options.
        strategy: the domain strategy (default: ``get_strategy(ds.name)``).
        project_path: working directory for embedding caches (None: no cache).
        fit_rows: interaction rows the collaborative/popularity scorers are fitted on (None: all).

    Attributes (besides the arguments):
        chunk: scenes drawn together (one draw of each random block).
        sparse: whether the catalog-scale path is taken (see the module docstring).
        searchers: per top-k factor scorer index, its neighbour search (sparse path only).
        matched: the count-level draws of popularity-matched negatives (sparse path only).
        stats: ``dense_recomputed_lists``: exact lists recomputed over the whole catalog because
            their cut fell inside an exact score tie.
    """

    def __init__(
        self,
        ds: RawDataset,
        config: SceneConfig,
        strategy: DomainStrategy | None = None,
        project_path: str | os.PathLike | None = None,
        fit_rows: np.ndarray | None = None,
    ):
        self.ds = ds
        self.config = config.validate()
        self.strategy = strategy if strategy is not None else get_strategy(ds.name)
        self.project_path = project_path
        self.key = _user_time_key(ds)
        release = self.strategy.release_times(ds)
        if release is not None:
            release = np.asarray(release, dtype=np.int64)
            if release.shape != (ds.n_items,):
                raise ConfigError(
                    f"{type(self.strategy).__name__}.release_times returned shape {release.shape}; "
                    f"expected one time per item ({ds.n_items},)"
                )
        self.release = release
        self.release_index = ReleaseIndex(release, ds.n_items)
        self.has_domain_filter = (
            type(self.strategy).exclude_candidates is not DomainStrategy.exclude_candidates
        )
        self.logged_key = self.strategy.logged_exposure_key
        if self.logged_key is not None and self.logged_key not in ds.behavior:
            raise DataError(
                f"{type(self.strategy).__name__} replays logged exposures from behaviour feature "
                f"{self.logged_key!r}, but the interactions of {ds.name!r} have no such field "
                f"(fields: {sorted(ds.behavior)})"
            )
        self.scorers: list[Scorer] = []
        if self.logged_key is None and config.negatives == "standard":
            self.scorers = self._build_scorers(fit_rows)
        self._profiles: dict[int, str] = {}
        # Score-sized arrays alive at once per scene: one per scorer plus masks and temporaries
        # (the matched-negatives path holds about eight).
        live = len(self.scorers) + 4 if self.scorers else 8
        per_row_bytes = max(1, ds.n_items) * 4 * live
        self.chunk = int(np.clip(config.chunk_bytes // per_row_bytes, 1, 1024))
        # Fixed draw distributions (static multinomial scorers, the uniform top-up): one CDF each.
        self._distributions: dict[tuple[int, float], ItemDistribution] = {}
        self._uniform = ItemDistribution(np.zeros(max(1, ds.n_items)))
        self.sparse = ds.n_items >= SPARSE_MIN_ITEMS or config.neighbours == "faiss"
        self.searchers = self._build_searchers() if self.sparse else {}
        self.matched = None
        if self.sparse and config.negatives == "popularity-matched" and self.logged_key is None:
            self.matched = MatchedDraws(LevelIndex(ds.inter_item, ds.inter_time, ds.n_items), release,
                                        config.popularity_window * (config.max_exposure - 1))
        if self.sparse and (self.matched is not None or (config.neighbours == "faiss" and self.searchers)):
            # Nothing here is catalog-sized per scene, and these modes do not reproduce the dense
            # draws anyway: large chunks amortise the per-chunk work.
            self.chunk = _SPARSE_CHUNK
        self.stats = {"dense_recomputed_lists": 0}

    def _build_scorers(self, fit_rows: np.ndarray | None) -> list[Scorer]:
        config = self.config
        names = list(config.scorers) if config.scorers is not None else [
            n for n in DEFAULT_SCORERS if n != "content" or config.embedder is not None
        ] + [n for n in self.strategy.extra_scorers() if n not in DEFAULT_SCORERS]
        if not names:
            raise ConfigError("no scorers selected; name at least one (e.g. 'random')")
        ctx = ScorerContext(project_path=self.project_path, embedder=config.embedder,
                            fit_rows=fit_rows, dim=config.collaborative_dim, seed=config.seed)
        return [make_scorer(name, self.ds, ctx) for name in names]

    def _build_searchers(self) -> dict[int, ExactNeighbours | FaissNeighbours]:
        """A neighbour search per top-k factor scorer (collaborative, content), by scorer index."""
        config = self.config
        out: dict[int, ExactNeighbours | FaissNeighbours] = {}
        if self.ds.n_items < 2:
            return out
        for i, scorer in enumerate(self.scorers):
            if (config.list_mode or scorer.default_mode) != "topk" or not isinstance(scorer, FactorScorer):
                continue
            factors = np.asarray(scorer.item_factors, dtype=np.float32)
            if config.neighbours == "faiss" and not scorer.normalise:
                out[i] = FaissNeighbours(factors, nprobe=config.faiss_nprobe, seed=config.seed)
            else:
                # Degree-scaled factors (collaborative) prune so well by norm that the exact search
                # is as fast as an index (and exact): it stays exact in "faiss" mode too.
                out[i] = ExactNeighbours(factors, prune=bool(scorer.normalise))
        return out

    def _distribution(self, i: int, scorer: Scorer) -> ItemDistribution:
        key = (i, self.config.temperature)  # a retargeted sampler may change the temperature
        if key not in self._distributions:
            static = np.asarray(scorer.static_scores, dtype=np.float64)
            self._distributions[key] = ItemDistribution(static / self.config.temperature)
        return self._distributions[key]

    def __repr__(self) -> str:
        return (f"SceneSampler({self.ds.name!r}, split={self.config.split!r}, "
                f"negatives={self.config.negatives!r}, scorers={[s.name for s in self.scorers]}, "
                f"chunk={self.chunk})")

    # candidates ---------------------------------------------------------------------------
    def candidate_rows(self) -> np.ndarray:
        """Rows eligible as scene targets (enough history; a logged exposure when replaying).

        Computed once per ``min_history`` and kept (read-only) on the sampler.
        """
        cache = self.__dict__.setdefault("_candidates", {})
        if self.config.min_history not in cache:
            rows = self._eligible_candidates()
            rows.setflags(write=False)
            cache[self.config.min_history] = rows
        return cache[self.config.min_history]

    def _eligible_candidates(self) -> np.ndarray:
        rows = eligible_rows(self.ds, self.config.min_history)
        if self.logged_key is not None:
            column = self.ds.behavior[self.logged_key]
            has_list = np.fromiter(
                (isinstance(column[r], (list, tuple)) and len(column[r]) > 1 for r in rows),
                dtype=bool, count=len(rows),
            )
            rows = rows[has_list]
        return rows

    # sampling -----------------------------------------------------------------------------
    def sample(self, rows: np.ndarray, rng: np.random.Generator,
               report: SceneReport | None = None, progress: Any = None) -> list[dict[str, Any]]:
        """Scene records for the interaction ``rows`` (in that order; unfillable ones dropped).

        Standard mode draws in chunks of :attr:`chunk` scenes in the given order;
        popularity-matched mode draws its chunks in time order (causal counts only move
        forward) and returns records in the given order.
        """
        rows = np.asarray(rows, dtype=np.int64)
        records: dict[int, dict[str, Any]] = {}
        if self.config.negatives == "popularity-matched" and self.logged_key is None:
            order = np.argsort(self.ds.inter_time[rows], kind="stable")
            # Matched negatives from count levels read the level index, not running counts.
            counter = None if self.matched is not None else CausalCounts(self.ds)
            for start in range(0, len(rows), self.chunk):
                idx = order[start:start + self.chunk]
                records.update(self._chunk(rows[idx], idx, rng, report, counter))
                if progress is not None:
                    progress(len(idx))
        else:
            # Neighbour candidates depend on the rows only (not on random numbers), so they are
            # searched for several chunks at once; the chunks then draw in their usual order.
            per_group = max(1, _NEIGHBOUR_GROUP // self.chunk) * self.chunk
            for group in range(0, len(rows), per_group):
                group_rows = rows[group:group + per_group]
                found = self.neighbour_candidates(group_rows)
                for start in range(group, group + len(group_rows), self.chunk):
                    idx = np.arange(start, min(start + self.chunk, len(rows)))
                    pre = {i: c.rows(start - group, idx[-1] + 1 - group) for i, c in found.items()}
                    records.update(self._chunk(rows[idx], idx, rng, report, None, pre))
                    if progress is not None:
                        progress(len(idx))
        return [records[i] for i in range(len(rows)) if i in records]

    def _scene_arrays(self, rows: np.ndarray):
        ds = self.ds
        users = ds.inter_user[rows].astype(np.int64)
        times = ds.inter_time[rows]
        targets = ds.inter_item[rows].astype(np.int64)
        user_start = ds.user_ptr[users]
        hist_stop = np.searchsorted(self.key, self.key[rows], "left")  # strictly before t
        seen_stop = np.searchsorted(self.key, self.key[rows], "right")  # before or at t
        return users, times, targets, user_start, hist_stop, seen_stop

    def _availability(self, times, targets, user_start, seen_stop) -> Availability | np.ndarray:
        """Showable items: released by t, not interacted with before or at t, not the target
        (a dense ``(m, n_items)`` mask for small catalogs)."""
        seen_rows, seen_ptr = _concat_ranges(user_start, seen_stop)
        m = len(times)
        if not self.sparse:
            if self.release is not None:
                valid = self.release[None, :] <= times[:, None]
            else:
                valid = np.ones((m, self.ds.n_items), dtype=bool)
            valid[np.repeat(np.arange(m), np.diff(seen_ptr)), self.ds.inter_item[seen_rows]] = False
            valid[np.arange(m), targets] = False
            return valid
        # Each scene's excluded items: its seen rows' items, then its target.
        items = np.empty(len(seen_rows) + m, dtype=np.int64)
        ptr = seen_ptr + np.arange(m + 1)
        slot = np.arange(len(seen_rows)) + np.repeat(np.arange(m), np.diff(seen_ptr))
        items[slot] = self.ds.inter_item[seen_rows]
        items[ptr[1:] - 1] = targets
        return Availability(self.release_index, times, ptr, items)

    def neighbour_candidates(self, rows: np.ndarray) -> dict[int, Candidates]:
        """Per searched scorer, the items that may enter each scene's top-k list."""
        if not self.searchers or self.config.max_exposure < 2:
            return {}
        users, times, targets, user_start, hist_stop, seen_stop = self._scene_arrays(rows)
        hist_rows, hist_ptr = _concat_ranges(user_start, hist_stop)
        batch = SceneBatch(users, times, targets, hist_ptr, hist_rows)
        avail = self._availability(times, targets, user_start, seen_stop)
        length = min(self.config.max_exposure - 1, self.ds.n_items)
        return {i: searcher.candidates(self.scorers[i].queries(batch), avail, length, self.scorers[i].normalise)
                for i, searcher in self.searchers.items()}

    def _chunk(self, rows: np.ndarray, idx: np.ndarray, rng: np.random.Generator,
               report: SceneReport | None, counter: CausalCounts | None,
               candidates: dict[int, Candidates] | None = None) -> dict[int, dict[str, Any]]:
        config = self.config
        m = len(rows)
        users, times, targets, user_start, hist_stop, seen_stop = self._scene_arrays(rows)
        sizes = rng.integers(config.min_exposure, config.max_exposure + 1, size=m)

        if self.logged_key is not None:
            others = self._logged_others(rows, targets, sizes, rng)
        else:
            avail = self._availability(times, targets, user_start, seen_stop)
            if self.matched is not None:
                others = self._matched_others_sparse(users, times, targets, sizes, avail, rng)
            elif counter is not None:
                dense = avail if isinstance(avail, np.ndarray) else avail.dense()
                others = self._matched_others(users, times, targets, sizes, dense, rng, counter)
            else:
                hist_rows, hist_ptr = _concat_ranges(user_start, hist_stop)
                batch = SceneBatch(users, times, targets, hist_ptr, hist_rows)
                others = self._merged_others(batch, sizes, avail, rng, candidates or {})

        # K shrinks to what is available; below min_exposure the scene is dropped.
        counts = np.array([len(o) for o in others], dtype=np.int64)
        sizes = np.minimum(sizes, counts + 1)
        keep = sizes >= config.min_exposure
        positions = rng.integers(0, sizes)  # uniform over ALL K positions
        lo, hi = self.strategy.history_range
        if config.split == "train":
            wanted = rng.integers(lo, hi + 1, size=m)  # drawn for "longest" too: the stream stays the same
            if config.history_length == "longest":
                wanted = np.full(m, hi, dtype=np.int64)
        else:
            wanted = np.full(m, hi, dtype=np.int64)
        if report is not None and (~keep).any():
            reason = "too few showable items"
            report.dropped[reason] = report.dropped.get(reason, 0) + int((~keep).sum())

        out: dict[int, dict[str, Any]] = {}
        for j in np.flatnonzero(keep):
            k = int(sizes[j])
            pos = int(positions[j])
            chosen = list(others[j][: k - 1])
            chosen.insert(pos, int(targets[j]))
            h_start = max(int(user_start[j]), int(hist_stop[j]) - int(wanted[j]))
            out[int(idx[j])] = self._render(int(users[j]), int(times[j]), int(targets[j]), chosen, pos,
                                            h_start, int(hist_stop[j]))
        return out

    def _merged_others(self, batch: SceneBatch, sizes, avail: Availability | np.ndarray, rng: np.random.Generator,
                       candidates: dict[int, Candidates]) -> list[np.ndarray]:
        config = self.config
        m = len(batch)
        n = self.ds.n_items
        length = config.max_exposure - 1
        if length == 0:
            return [np.zeros(0, dtype=np.int64) for _ in range(m)]
        lists, list_ok = [], []
        invalid = None  # the dense mask, built only for a scorer that scores the whole catalog
        queries = {}
        for i, scorer in enumerate(self.scorers):
            mode = config.list_mode or scorer.default_mode
            static = getattr(scorer, "static_scores", None)
            if mode == "multinomial" and static is not None:
                # Same weights for every scene: draw from one CDF instead of scoring the catalog.
                top, ok = successive_draws(self._distribution(i, scorer), avail, length, rng)
                lists.append(top)
                list_ok.append(ok)
                continue
            if mode == "topk" and i in candidates and (config.neighbours == "faiss" or not dense_product_is_small(
                    m, n, scorer.item_factors.shape[1])):
                # Top-k from the neighbour search; its noise is read from the same place in the
                # random stream as the dense block below would draw it.
                exact = isinstance(self.searchers[i], ExactNeighbours)

                def dense_row(scenes: np.ndarray, scorer=scorer, i=i) -> np.ndarray:
                    if i not in queries:
                        queries[i] = scorer.queries(batch)
                    return self.searchers[i].dense_rows(queries[i][scenes])

                top, ok, n_dense = select_topk(candidates[i], length, rng, avail, dense_row if exact else None,
                                               block_noise=config.neighbours == "exact")
                self.stats["dense_recomputed_lists"] += n_dense
                lists.append(top)
                list_ok.append(ok)
                continue
            if invalid is None:
                invalid = ~(avail if isinstance(avail, np.ndarray) else avail.dense())
            scores = np.asarray(scorer.scores(batch), dtype=np.float32)
            if scores.shape != invalid.shape:
                raise ConfigError(
                    f"scorer {scorer.name!r} returned shape {scores.shape}; expected {invalid.shape}"
                )
            if mode == "multinomial":
                scores = scores / np.float32(config.temperature) + gumbel(rng, scores.shape)
            else:  # top-k: random tie-breaking among equal scores
                noise = rng.random(scores.shape, dtype=np.float32)
                noise *= np.float32(1e-6)
                scores = scores + noise
                del noise
            np.copyto(scores, _NEG_INF, where=invalid)
            top = topk_desc(scores, length)
            lists.append(top)
            list_ok.append(np.isfinite(np.take_along_axis(scores, top, axis=1)))
            del scores
        # Order-preserving random interleave: shuffle the list labels, then read each list in order.
        n_lists = len(lists)
        width = lists[0].shape[1]
        stacked = np.stack(lists, axis=1)  # (m, S, L)
        stacked_ok = np.stack(list_ok, axis=1)
        labels = rng.permuted(np.tile(np.repeat(np.arange(n_lists), width), (m, 1)), axis=1)
        onehot = labels[:, :, None] == np.arange(n_lists)[None, None, :]
        occurrence = np.take_along_axis(np.cumsum(onehot, axis=1) - 1, labels[:, :, None], axis=2)[:, :, 0]
        merged = stacked[np.arange(m)[:, None], labels, occurrence]
        merged_ok = stacked_ok[np.arange(m)[:, None], labels, occurrence]
        # Behind the merge: a uniform list, used only when the merge runs short.
        fallback, fallback_ok = successive_draws(self._uniform, avail, width, rng)
        merged = np.concatenate([merged, fallback], axis=1)
        merged_ok = np.concatenate([merged_ok, fallback_ok], axis=1)
        keep = first_occurrence(merged, merged_ok)
        return self._finish(batch.users, batch.times, merged, keep, sizes)

    def _matched_others_sparse(self, users, times, targets, sizes, avail: Availability,
                               rng: np.random.Generator) -> list[np.ndarray]:
        """The same distribution as :meth:`_matched_others`, from the count levels next to the real
        item's (:class:`~usermirrorer.data_pipeline.sampling.matched.MatchedDraws`)."""
        m = len(times)
        ex_scene, ex_item = avail.excluded()
        bounds = np.searchsorted(ex_scene, np.arange(m + 1))
        sides = []
        for j in range(m):
            sides.append(self.matched.sides(int(targets[j]), int(times[j]), ex_item[bounds[j]:bounds[j + 1]], rng))
        n_above = rng.integers(0, sizes)  # options more popular than the real item: uniform 0..K-1
        width = 2 * self.matched.window
        candidates = np.zeros((m, width), dtype=np.int64)
        ok = np.zeros((m, width), dtype=bool)
        for j, (up, down) in enumerate(sides):
            need = int(sizes[j]) - 1
            b = min(need - min(int(n_above[j]), len(up)), len(down))
            a = min(len(up), need - b)
            row = np.concatenate([up[:a], down[:b], up[a:], down[b:]])
            candidates[j, : len(row)] = row
            ok[j, : len(row)] = True
        return self._finish(users, times, candidates, ok, sizes)

    def _matched_others(self, users, times, targets, sizes, valid: np.ndarray, rng: np.random.Generator,
                        counter: CausalCounts) -> list[np.ndarray]:
        """Others whose causal popularity brackets the real item's, with its rank uniform.

        Popularity is counted strictly before each scene's time. Ties are broken at random, the
        number ``a`` of options more popular than the real item is uniform on ``0..K-1``, and
        the ``a`` (resp. ``K-1-a``) others are drawn uniformly from the ``window * (K-1)``
        available items just above (resp. below) it. So neither "pick the most popular" nor
        "pick the least popular" beats chance, except at the very ends of the popularity range
        where one side runs out.
        """
        config = self.config
        m = len(times)
        key = np.empty(valid.shape, dtype=np.float32)
        for j in range(m):
            key[j] = counter.at(int(times[j]))
        key += rng.random(key.shape, dtype=np.float32) * np.float32(0.5)  # random order within ties
        diff = key - key[np.arange(m), targets][:, None]
        del key
        window = config.popularity_window * (config.max_exposure - 1)
        sides = []
        for above in (True, False):
            side = np.where(valid & ((diff > 0) if above else (diff < 0)),
                            -np.abs(diff), _NEG_INF).astype(np.float32)
            top = topk_desc(side, window)
            ok = np.isfinite(np.take_along_axis(side, top, axis=1))
            del side
            shuffle = np.argsort(np.where(ok, rng.random(ok.shape), 2.0), axis=1, kind="stable")
            sides.append((np.take_along_axis(top, shuffle, axis=1), ok.sum(axis=1)))
        (up, n_up), (down, n_down) = sides
        n_above = rng.integers(0, sizes)  # options more popular than the real item: uniform 0..K-1
        candidates = np.zeros((m, 2 * window), dtype=np.int64)
        for j in range(m):
            need = int(sizes[j]) - 1
            a = min(int(n_above[j]), int(n_up[j]))
            b = min(need - a, int(n_down[j]))
            a = min(int(n_up[j]), need - b)
            row = np.concatenate([up[j, :a], down[j, :b], up[j, a:n_up[j]], down[j, b:n_down[j]]])
            candidates[j, : len(row)] = row
            n_up[j] = len(row)  # reuse as the row's candidate count
        ok = np.arange(2 * window)[None, :] < n_up[:, None]
        return self._finish(users, times, candidates, ok, sizes)

    def _finish(self, users, times, merged: np.ndarray, keep: np.ndarray, sizes) -> list[np.ndarray]:
        """Apply the domain filter, cut each row to its ``K - 1`` first kept items."""
        out = []
        for j in range(merged.shape[0]):
            candidates = merged[j][keep[j]]
            if self.has_domain_filter and len(candidates):
                user = int(users[j])
                drop = self.strategy.exclude_candidates(self.ds, user, int(times[j]), candidates)
                if drop is not None:
                    candidates = candidates[~np.asarray(drop, dtype=bool)]
            out.append(candidates[: int(sizes[j]) - 1].astype(np.int64))
        return out

    def _logged_others(self, rows, targets, sizes, rng: np.random.Generator) -> list[np.ndarray]:
        """Other items of each interaction's logged impression, a random subset in logged order."""
        column = self.ds.behavior[self.logged_key]
        index = self.ds.item_index
        out = []
        for j, row in enumerate(rows):
            shown = [index[i] for i in dict.fromkeys(column[row]) if i in index]
            others = np.array([i for i in shown if i != targets[j]], dtype=np.int64)
            take = min(len(others), int(sizes[j]) - 1)
            pick = np.sort(rng.choice(len(others), size=take, replace=False)) if take else np.zeros(0, np.int64)
            out.append(others[pick])
        return out

    # text ---------------------------------------------------------------------------------
    def _behaviors(self, start: int, stop: int) -> list[dict[str, Any]]:
        """``ds.behavior_of`` for a run of rows, one column gather each (same values)."""
        out: list[dict[str, Any]] = [{} for _ in range(stop - start)]
        for key, column in self.ds.behavior.items():
            values = column[start:stop]
            if values.dtype.kind == "f":
                for d, v in zip(out, values.tolist()):
                    if not math.isnan(v):
                        d[key] = int(v) if v.is_integer() else v
            else:
                for d, v in zip(out, values.tolist()):
                    if v is not None and not (isinstance(v, float) and math.isnan(v)):
                        d[key] = v
        return out

    def _render(self, user: int, now: int, target: int, impression: list[int], pos: int,
                h_start: int, h_stop: int) -> Scene:
        ds, strategy = self.ds, self.strategy
        profile = self._profiles.get(user)
        if profile is None:
            profile = self._profiles[user] = strategy.profile(ds, user)
        history = strategy.history(
            ds,
            ds.inter_item[h_start:h_stop].tolist(),
            ds.inter_time[h_start:h_stop].tolist(),
            self._behaviors(h_start, h_stop),
            now,
        )
        item_ids = ds.item_ids
        return render_scene(
            dataset=ds.name,
            user_id=ds.user_ids[user],
            timestamp=format_time(now),
            impression_list=[item_ids[i] for i in impression],
            item_id=item_ids[target],
            item_pos=pos,
            profile=profile,
            history=history,
            action_list=[strategy.exposure_item(ds, i, now) for i in impression],
        )


# ---------------------------------------------------------------------------------------------
# a whole run


class LengthFilter(Protocol):
    """Keeps scenes whose prompt fits: ``keep(scenes) -> [bool, ...]`` (one per scene).

    The sampler cannot measure prompts itself (prompts and tokenizers belong to the simulator
    layer above it); :class:`usermirrorer.sim.prompt_length.PromptLengthFilter` is the one
    callers pass when ``SceneConfig.max_tokens`` is set.
    """

    def keep(self, scenes: list[dict[str, Any]]) -> list[bool]: ...


def _seed_sequence(config: SceneConfig) -> np.random.SeedSequence:
    return np.random.SeedSequence([config.seed, SPLITS.index(config.split), NEGATIVES.index(config.negatives)])


def sample_scenes(
    ds: RawDataset,
    config: SceneConfig,
    strategy: DomainStrategy | None = None,
    project_path: str | os.PathLike | None = None,
    users: Sequence[str] | None = None,
    exclude_users: Sequence[str] | None = None,
    exclude_rows: np.ndarray | None = None,
    fit_rows: np.ndarray | None = None,
    progress: bool = False,
    sampler: SceneSampler | None = None,
    length_filter: LengthFilter | None = None,
    engine: RayEngine | None = None,
) -> tuple[list[dict[str, Any]], SceneReport]:
    """Sample scene records (DESIGN.md §2 format) from ``ds``.

    Args:
        ds: the dataset.
        config: sampling options (``config.seed`` seeds everything).
        strategy: domain strategy (default: by dataset name).
        project_path: for embedding caches (None: compute in memory).
        users: restrict candidates to these user ids.
        exclude_users: user ids never used (e.g. the eval users when building train).
        exclude_rows: interaction rows never used as targets (e.g. those of an existing split).
        fit_rows: rows the collaborative/popularity scorers are fitted on (None: all).
        progress: show a rich progress bar.
        sampler: a prepared :class:`SceneSampler` (reuses its scorers; ``config`` must match).
        length_filter: measures prompts when ``config.max_tokens`` is set (required then):
            ``usermirrorer.sim.prompt_length.PromptLengthFilter.for_config(config)``.
        engine: sample the shards on Ray actors (needs ``config.shard_size``); each actor
            builds its own sampler, from ``project_path``'s raws when they hold ``ds`` (so the
            dataset is not shipped) and its embedding caches.

    Returns:
        ``(records, report)``; records in the order the candidates were drawn.

    Raises:
        ConfigError: an ``engine`` without ``config.shard_size``.
    """
    config.validate()
    if engine is not None and config.shard_size is None:
        raise ConfigError("the Ray engine samples shards, each under a seed of its own: set shard_size "
                          "(--shard-size N; the same N without --engine ray gives the same scenes)")
    setup_start = _time.perf_counter()
    if sampler is None:
        sampler = SceneSampler(ds, config, strategy, project_path, fit_rows)
    elif sampler.config != config:
        sampler = _retarget(sampler, config)
    report = SceneReport(dataset=ds.name, split=config.split, negatives=config.negatives,
                         requested=config.n_samples, scorers=[s.name for s in sampler.scorers])
    rows = sampler.candidate_rows()
    mask = np.ones(len(rows), dtype=bool)
    if users is not None:
        wanted = np.array([ds.user_index[u] for u in users if u in ds.user_index], dtype=np.int64)
        mask &= np.isin(ds.inter_user[rows], wanted)
    if exclude_users is not None:
        banned = np.array([ds.user_index[u] for u in exclude_users if u in ds.user_index], dtype=np.int64)
        mask &= ~np.isin(ds.inter_user[rows], banned)
    if exclude_rows is not None:
        excluded = np.asarray(exclude_rows)
        if excluded.dtype == bool:
            excluded = np.flatnonzero(excluded)
        mask &= ~np.isin(rows, excluded)
    rows = rows[mask]
    report.candidates = int(len(rows))
    if len(rows) == 0:
        raise DataError(
            f"{ds.name}: no candidate interactions for the {config.split} split: each needs at least "
            f"min_history={config.min_history} earlier interactions of its user"
            + (", and the excluded users/interactions of the other split remove the rest" if
               exclude_users is not None or exclude_rows is not None else "")
            + "; lower --min-history or build the other split with fewer scenes"
        )
    if config.max_tokens is not None and length_filter is None:
        raise ConfigError(
            f"max_tokens={config.max_tokens} needs a length filter to measure prompts: pass "
            "length_filter=usermirrorer.sim.prompt_length.PromptLengthFilter.for_config(config)"
        )
    if config.max_tokens is None:
        length_filter = None
    rng = np.random.default_rng(_seed_sequence(config))
    order = rng.permutation(len(rows))
    report.setup_seconds = _time.perf_counter() - setup_start

    start_time = _time.perf_counter()
    if config.shard_size is not None:
        shards = SceneShards(sampler=sampler, ds=ds, project_path=project_path, fit_rows=fit_rows)
        records = _sample_shards(shards, rows[order], config, report, length_filter, engine, progress)
    else:
        records = _sample_stream(sampler, rows, order, rng, config, report, length_filter, progress)
    report.seconds = _time.perf_counter() - start_time
    report.written = len(records)
    k_max = config.max_exposure
    positions = [0] * k_max
    for record in records:
        report.exposure_sizes[record["choice_cnt"]] = report.exposure_sizes.get(record["choice_cnt"], 0) + 1
        positions[record["item_pos"]] += 1
    report.position_counts = positions
    if len(records) < config.n_samples:
        report.dropped["not enough candidates"] = config.n_samples - len(records)
    return records, report


def _drop_long(scenes: list[dict[str, Any]], length_filter: LengthFilter | None, config: SceneConfig,
               report: SceneReport) -> list[dict[str, Any]]:
    if length_filter is None:
        return scenes
    ok = length_filter.keep(scenes)
    n_long = len(ok) - sum(ok)
    if n_long:
        reason = f"prompt longer than {config.max_tokens} tokens"
        report.dropped[reason] = report.dropped.get(reason, 0) + n_long
    return [s for s, k in zip(scenes, ok) if k]


def _with_margin(need: int, first: bool) -> int:
    """Candidates to draw for ``need`` more scenes: after the first draw some were dropped (a
    length filter, no valid options), so draw a little more than the deficit."""
    return need if first else need + need // 4 + 8


def _sample_stream(sampler: SceneSampler, rows: np.ndarray, order: np.ndarray, rng: np.random.Generator,
                   config: SceneConfig, report: SceneReport, length_filter: LengthFilter | None,
                   progress: bool) -> list[dict[str, Any]]:
    """The default scheme: one generator draws every scene, chunk after chunk."""
    records: list[dict[str, Any]] = []
    cursor = 0
    bar = _progress_bar(progress, config)
    with bar:
        task = bar.add_task("scenes", total=min(config.n_samples, len(rows)))
        while len(records) < config.n_samples and cursor < len(rows):
            need = config.n_samples - len(records)
            take = _with_margin(need, first=cursor == 0)
            batch_rows = rows[order[cursor:cursor + take]]
            cursor += len(batch_rows)
            scenes = _drop_long(sampler.sample(batch_rows, rng, report), length_filter, config, report)
            scenes = scenes[:need]
            records.extend(scenes)
            bar.update(task, advance=len(scenes))
    return records


def shard_rng(config: SceneConfig, shard: int) -> np.random.Generator:
    """The generator of shard ``shard`` (``config.shard_size`` set): seed, split, negatives, shard."""
    return np.random.default_rng(np.random.SeedSequence(
        [config.seed, SPLITS.index(config.split), NEGATIVES.index(config.negatives), 1, int(shard)]))


def _sample_shards(shards: SceneShards, ordered: np.ndarray, config: SceneConfig, report: SceneReport,
                   length_filter: LengthFilter | None, engine: RayEngine | None,
                   progress: bool) -> list[dict[str, Any]]:
    """Shards of ``config.shard_size`` candidates (in drawn order), each under its own generator.

    The shards needed for the missing scenes are sampled (in process or on Ray actors, in any
    order) and their scenes kept in shard order, so the result depends on neither.
    """
    size = int(config.shard_size)
    total = -(-len(ordered) // size)
    records: list[dict[str, Any]] = []
    next_shard = 0
    bar = _progress_bar(progress, config)
    with bar:
        task = bar.add_task("scenes", total=min(config.n_samples, len(ordered)))
        while len(records) < config.n_samples and next_shard < total:
            need = config.n_samples - len(records)
            wanted = _with_margin(need, first=next_shard == 0)
            todo = [(k, [{"row": int(r)} for r in ordered[k * size:(k + 1) * size]])
                    for k in range(next_shard, min(total, next_shard + -(-wanted // size)))]
            next_shard = todo[-1][0] + 1
            done = dict(in_process(shards, todo) if engine is None else engine.map_chunks(shards, todo))
            for k, _ in todo:
                *scenes, tally = done[k]
                for reason, n in tally["_dropped"].items():
                    report.dropped[reason] = report.dropped.get(reason, 0) + n
                scenes = _drop_long(scenes, length_filter, config, report)[:config.n_samples - len(records)]
                records.extend(scenes)
                bar.update(task, advance=len(scenes))
    return records


@dataclass
class SceneShards:
    """Scene sampling's per-shard function (picklable: it runs on Ray actors too).

    ``self(shard, k)`` takes ``[{"row": interaction row}, ...]`` and returns the shard's scenes
    followed by one tally ``{"_dropped": {reason: count}}``. ``load()`` builds the sampler; on an
    actor from ``project_path``'s raws when they hold ``ds`` (the dataset is not shipped), and
    the embeddings from that project's cache (the driver's sampler wrote it).
    """

    sampler: SceneSampler | None = None
    ds: RawDataset | None = None
    project_path: str | os.PathLike | None = None
    fit_rows: np.ndarray | None = None
    config: SceneConfig | None = None
    strategy: DomainStrategy | None = None

    def __post_init__(self) -> None:
        if self.sampler is not None:
            self.config, self.strategy = self.sampler.config, self.sampler.strategy

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, sampler=None)  # an actor builds its own
        if self.project_path is not None and self.ds is not None and all(
                p.exists() for p in raw_paths(self.project_path, self.ds.name)):
            state["ds_name"], state["ds"] = self.ds.name, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name = state.pop("ds_name", None)
        self.__dict__.update(state)
        if name is not None:
            self.ds = load_raws(self.project_path, name)

    def load(self) -> None:
        if self.sampler is None:
            self.sampler = SceneSampler(self.ds, self.config, self.strategy, self.project_path, self.fit_rows)

    def __call__(self, shard: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
        self.load()
        report = SceneReport(dataset=self.sampler.ds.name, split=self.config.split, negatives=self.config.negatives,
                             requested=len(shard))
        rows = np.array([int(x["row"]) for x in shard], dtype=np.int64)
        scenes = self.sampler.sample(rows, shard_rng(self.config, k), report)
        return [*scenes, {"_dropped": dict(report.dropped)}]


def _retarget(sampler: SceneSampler, config: SceneConfig) -> SceneSampler:
    """The same sampler (scorers, embeddings) under another config that shares its scorers."""
    old = sampler.config
    same_scorers = (old.scorers, old.embedder, old.collaborative_dim, old.negatives, old.neighbours,
                    old.list_mode) == (
        config.scorers, config.embedder, config.collaborative_dim, config.negatives, config.neighbours,
        config.list_mode)
    if not same_scorers:
        raise ConfigError("a prepared SceneSampler can only be reused with the same scorers, embedder, "
                          "dimension, negatives, neighbours and list mode; build a new one")
    new = object.__new__(SceneSampler)
    new.__dict__.update(sampler.__dict__)
    new.config = config.validate()
    window = config.popularity_window * (config.max_exposure - 1)
    if new.matched is not None and new.matched.window != window:
        new.matched = MatchedDraws(new.matched.index, new.release, window)
    return new


def _progress_bar(enabled: bool, config: SceneConfig):
    return Progress(TextColumn(f"sampling {config.split} scenes"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled, transient=False)



# ---------------------------------------------------------------------------------------------
# splits on disk


def _split_files(project_path: str | os.PathLike, dataset: str, split: str) -> list[Path]:
    return [p for p in (scenes_path(project_path, dataset, split, neg) for neg in NEGATIVES) if p.exists()]


def _check_output(output: Path, own: Path, project_path: str | os.PathLike, dataset: str) -> None:
    """Refuse an ``--output`` that is another split's scene file or a raw file of the dataset."""
    inputs = [scenes_path(project_path, dataset, split, neg) for split in SPLITS for neg in NEGATIVES]
    inputs += list(raw_paths(project_path, dataset))
    resolved = output.resolve()
    for path in inputs:
        if path.resolve() == resolved and path.resolve() != own.resolve():
            raise ConfigError(f"--output {str(output)!r} is {path.name}, an input of this project; writing there "
                              f"would replace it. Leave --output out (this run writes {own}) or pick another file")


def build_scene_file(
    project_path: str | os.PathLike,
    dataset: str,
    config: SceneConfig,
    ds: RawDataset | None = None,
    output: str | os.PathLike | None = None,
    share_users: bool = False,
    progress: bool = False,
    length_filter: LengthFilter | None = None,
    engine: RayEngine | None = None,
) -> SceneReport:
    """Sample scenes of ``dataset`` and write them to ``datasets/<D>_<split>.jsonl``.

    Keeps the splits apart: a train run skips every interaction of the existing eval files
    (``<D>_eval*.jsonl``) and, unless ``share_users``, every eval user; an eval run skips the
    interactions of an existing train file (build eval first to hold its users out of train).

    Args:
        project_path: working directory (raws, embeddings, datasets).
        dataset: dataset name.
        config: sampling options.
        ds: the loaded dataset (default: :func:`~usermirrorer.data_pipeline.raw.load_raws`).
        output: another output file (default :func:`scenes_path`).
        share_users: let train scenes use eval users (never their eval interactions).
        progress: show a progress bar.
        length_filter, engine: see :func:`sample_scenes`.
    """
    if ds is None:
        ds = load_raws(project_path, dataset)
    other = "eval" if config.split == "train" else "train"
    other_records = [r for path in _split_files(project_path, dataset, other) for r in read_jsonl(path)]
    target = scenes_path(project_path, dataset, config.split, config.negatives)
    if output is not None:
        _check_output(Path(output), target, project_path, dataset)
        target = Path(output)
    exclude_rows = interaction_rows(ds, other_records) if other_records else None
    exclude_users = None
    if other_records and config.split == "train" and not share_users:
        exclude_users = sorted({r["user_id"] for r in other_records if "user_id" in r})
    records, report = sample_scenes(ds, config, project_path=project_path, exclude_rows=exclude_rows,
                                    exclude_users=exclude_users, progress=progress,
                                    length_filter=length_filter, engine=engine)
    write_jsonl(target, records)
    report.path = str(target)
    report.excluded_users = len(exclude_users or ())
    report.excluded_interactions = int(len(exclude_rows)) if exclude_rows is not None else 0
    return report


def sample_train_eval(
    ds: RawDataset,
    train: SceneConfig,
    eval: SceneConfig,
    strategy: DomainStrategy | None = None,
    project_path: str | os.PathLike | None = None,
    hold_out_users: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both splits in memory: eval first, then train without its interactions (and users).

    Returns:
        ``(train_records, eval_records)``.
    """
    if train.split != "train" or eval.split != "eval":
        raise ConfigError(f"expected a train and an eval config, got splits {train.split!r} and {eval.split!r}")
    eval_records, _ = sample_scenes(ds, eval, strategy, project_path)
    exclude_rows = interaction_rows(ds, eval_records)
    users = sorted({r["user_id"] for r in eval_records}) if hold_out_users else None
    train_records, _ = sample_scenes(ds, train, strategy, project_path, exclude_users=users,
                                     exclude_rows=exclude_rows)
    return train_records, eval_records
