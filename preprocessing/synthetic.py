"""A seeded synthetic recommendation log with known tastes, at any size
(``usermirrorer preprocess synthetic``: no source files, rendered with the movie strategy since
its records look like movies: title, release year, genres, rating).

Real logs are small (ML-100K) or cannot be shipped; tests, benchmarks and scaling runs need a
log of a chosen size whose ground truth is known. The generative story:

- users ``x_u ~ N(0, I_d)``; items belong to one of ``min(n_items, n_niches)`` niches and
  ``y_i = m_niche + e_i`` with Gaussian niche centres and offsets, scaled so ``y_i`` has
  covariance ``taste_strength^2 / d`` (the affinity ``x_u . y_i`` has standard deviation
  ``taste_strength``; ``niche_spread`` of its variance is within-niche); item popularity follows
  a power law ``pop_i ∝ rank_i^-popularity_exponent`` over a random ranking;
- each user gets ``c_u >= 1`` interactions (log-normal activity, summing exactly to the
  requested total, at most one per item) with distinct items drawn without replacement from
  ``softmax(x_u . y_i + log pop_i)``;
- interaction times are uniform inside a per-user activity window, so each user's log is a
  time-ordered sequence; items have release dates (most before the log starts, some during
  it) and are never consumed before release;
- ratings 1..5 rise with affinity; genres are the item's strongest latent directions (so they
  carry taste signal an LLM can read); titles, ages, genders and occupations are fake.

Sampling never builds a users x items matrix. Per user, a proposal pool of ``3 c_u + 64``
draws comes from ``q(i) ∝ pop_i exp(x_u . m_niche(i))`` (niche by a users x niches softmax,
then item by popularity inside the niche), and the Gumbel top-``c_u`` of the importance
log-weight ``x_u . e_i`` is taken in it: sampling-importance-resampling, exact as the pool grows
and close already, because the niche carries most of the affinity (an item drawn ``k`` times
keeps its best of ``k`` Gumbel keys, which is weight ``k``). Users whose pool holds fewer than
``c_u`` distinct items get an exact Gumbel top-``c_u`` over the whole catalog. Users are
processed in chunks of bounded size, so memory stays proportional to the output: 1M items /
10M interactions fit in a few GB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from usermirrorer.data_pipeline.raw import RawDataset, dataset_records, parse_time, write_raws
from usermirrorer.errors import ConfigError
from usermirrorer.preprocessing.base import Converter, ConverterOption, ConvertReport, write_raw_records

__all__ = [
    "SyntheticConfig",
    "SyntheticLatents",
    "generate_synthetic",
    "synthetic_latents",
    "write_synthetic",
    "config_from_options",
    "GENRES",
    "CONVERTER",
    "convert",
]

GENRES = (
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_ADJECTIVES = (
    "Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Distant", "Wild",
    "Frozen", "Electric", "Lonely", "Burning", "Secret", "Forgotten", "Iron", "Velvet",
    "Endless", "Little", "Savage", "Paper", "Hollow", "Bright", "Quiet", "Northern", "Lucky",
    "Glass", "Restless", "Stolen", "Final", "Second", "Dark",
)
_NOUNS = (
    "Harbor", "River", "Empire", "Garden", "Signal", "Horizon", "Machine", "Kingdom", "Mirror",
    "Frontier", "Orchard", "Storm", "Island", "Station", "Letter", "Canyon", "Promise", "Echo",
    "Circus", "Voyage", "Summer", "Winter", "Detective", "Stranger", "Lighthouse", "Dynasty",
    "Orbit", "Carnival", "Witness", "Parade", "Compass", "Heist",
)
_OCCUPATIONS = (
    "student", "engineer", "teacher", "nurse", "artist", "programmer", "retired", "writer",
    "salesperson", "lawyer", "doctor", "homemaker", "technician", "scientist", "manager",
)
_POOL_FACTOR = 3
_POOL_EXTRA = 64
_CHUNK_POOL = 1 << 22  # proposal draws per chunk: bounds memory at ~200 MB
_EXACT_CHUNK = 1 << 22  # users x items scores per chunk in the exact fallback
_DAY = 86400


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a synthetic dataset; same config -> identical dataset.

    Attributes:
        n_users, n_items, n_interactions: sizes (every user gets at least one interaction, at
            most one per item, so ``n_users <= n_interactions <= n_users * n_items``).
        seed: the only source of randomness.
        dim: latent dimension.
        taste_strength: standard deviation of the user-item affinity (0: popularity only).
        popularity_exponent: power-law exponent of item popularity (0: uniform).
        n_niches: number of item niches (capped at n_items; with one item per niche the
            sampler is exact).
        niche_spread: share of the affinity variance within niches (0..1).
        activity_sigma: log-normal spread of interactions per user.
        start: first second of the log (``YYYY-MM-DD HH:MM:SS``).
        span_days: length of the log.
        name: dataset name (raws file prefix).
    """

    n_users: int = 1000
    n_items: int = 5000
    n_interactions: int = 50_000
    seed: int = 0
    dim: int = 8
    taste_strength: float = 2.0
    popularity_exponent: float = 0.8
    activity_sigma: float = 0.8
    n_niches: int = 1024
    niche_spread: float = 0.15
    start: str = "2020-01-01 00:00:00"
    span_days: float = 730.0
    name: str = "synthetic"

    def check(self) -> None:
        """Raise ConfigError for sizes that cannot work together."""
        for key in ("n_users", "n_items", "n_interactions", "dim", "n_niches"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.n_interactions < self.n_users:
            raise ConfigError(
                f"n_interactions={self.n_interactions:,} < n_users={self.n_users:,}: every user "
                "needs at least one interaction; raise --interactions or lower --users"
            )
        if self.n_interactions > self.n_users * self.n_items:
            raise ConfigError(
                f"n_interactions={self.n_interactions:,} > n_users x n_items="
                f"{self.n_users * self.n_items:,}: a user interacts with an item at most once"
            )
        if not 0.0 <= self.niche_spread <= 1.0:
            raise ConfigError(f"niche_spread must be in [0, 1], got {self.niche_spread}")
        if self.span_days <= 0 or self.taste_strength < 0 or self.popularity_exponent < 0:
            raise ConfigError("span_days must be > 0; taste_strength, popularity_exponent >= 0")
        try:
            parse_time(self.start)
        except ValueError as exc:
            raise ConfigError(f"start: {exc}") from None


@dataclass(frozen=True, eq=False)
class SyntheticLatents:
    """The ground truth behind a synthetic dataset (for oracle choice models and checks).

    ``user_factors`` (n_users x dim) and ``item_factors`` (n_items x dim) are float32;
    ``item_log_popularity`` is the log of the normalised popularity; the true choice
    distribution of user ``u`` over a set ``S`` is ``softmax(x_u . y_S + log pop_S)``.
    ``item_niche`` and ``niche_factors`` are the niche of each item and the niche centres.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_log_popularity: np.ndarray
    item_niche: np.ndarray
    niche_factors: np.ndarray

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        """Log-weights of ``items`` for ``user`` (softmax them to get choice probabilities)."""
        return self.item_factors[items] @ self.user_factors[user] + self.item_log_popularity[items]

    def __repr__(self) -> str:
        return (f"SyntheticLatents(users={len(self.user_factors):,}, "
                f"items={len(self.item_factors):,}, dim={self.user_factors.shape[1]})")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    # Independent streams per concern, so e.g. the text of items does not change the tastes.
    names = ("latents", "activity", "choice", "time", "rating", "text")
    seeds = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, seeds)}


def synthetic_latents(config: SyntheticConfig) -> SyntheticLatents:
    """The latent tastes and popularity of ``config`` (cheap: no interactions sampled)."""
    return _latents(config, _streams(config.seed)["latents"])


def _latents(config: SyntheticConfig, rng: np.random.Generator) -> SyntheticLatents:
    users = rng.standard_normal((config.n_users, config.dim), dtype=np.float32)
    scale = config.taste_strength / np.sqrt(config.dim)
    n_niches = min(config.n_niches, config.n_items)
    niches = rng.standard_normal((n_niches, config.dim), dtype=np.float32)
    niches *= np.float32(scale * np.sqrt(1.0 - config.niche_spread))
    item_niche = rng.integers(0, n_niches, config.n_items)
    if n_niches == config.n_items:  # one item per niche: the sampler is exact
        item_niche = rng.permutation(config.n_items)
    items = rng.standard_normal((config.n_items, config.dim), dtype=np.float32)
    items *= np.float32(scale * np.sqrt(config.niche_spread))
    items += niches[item_niche]
    rank = rng.permutation(config.n_items) + 1
    log_pop = -config.popularity_exponent * np.log(rank.astype(np.float64))
    log_pop -= np.logaddexp.reduce(log_pop)
    return SyntheticLatents(users, items, log_pop.astype(np.float32), item_niche, niches)


@dataclass(frozen=True, eq=False)
class _NicheSampler:
    """Items grouped by niche with their within-niche popularity CDF, for proposal draws."""

    log_mass: np.ndarray  # per niche: log of its total popularity (-inf if empty)
    items_by_niche: np.ndarray  # item indices sorted by niche
    flat_cdf: np.ndarray  # niche + within-niche cumulative popularity share, increasing
    end: np.ndarray  # per niche: one past its last position in items_by_niche

    @classmethod
    def build(cls, lat: SyntheticLatents) -> _NicheSampler:
        n_niches = len(lat.niche_factors)
        order = np.argsort(lat.item_niche, kind="stable")
        niche = lat.item_niche[order]
        pop = np.exp(lat.item_log_popularity[order].astype(np.float64))
        mass = np.bincount(niche, weights=pop, minlength=n_niches)
        sizes = np.bincount(niche, minlength=n_niches)
        end = np.cumsum(sizes)
        cum = np.r_[0.0, np.cumsum(pop)]  # cum[k]: popularity of the first k sorted items
        share = (cum[1:] - cum[end - sizes][niche]) / mass[niche]
        share[end[niche] - 1] = 1.0  # exact upper edge, so a draw never leaves its niche
        with np.errstate(divide="ignore"):
            log_mass = np.log(mass)
        return cls(log_mass, order, niche + share, end)



def _activity(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: >= 1, <= n_items, summing exactly to n_interactions."""
    weights = rng.lognormal(0.0, config.activity_sigma, config.n_users)
    counts = 1 + rng.multinomial(config.n_interactions - config.n_users, weights / weights.sum())
    while (over := counts > config.n_items).any():
        excess = int((counts[over] - config.n_items).sum())
        counts[over] = config.n_items
        room = np.where(counts < config.n_items, weights, 0.0)
        counts += rng.multinomial(excess, room / room.sum())
    return counts.astype(np.int64)


def _gumbel(rng: np.random.Generator, shape) -> np.ndarray:
    tiny = np.float32(1e-12)  # keeps both logs finite
    return -np.log(-np.log(rng.random(shape, dtype=np.float32) + tiny) + tiny)


def _segment_rank(segment: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (``segment`` sorted)."""
    n = len(segment)
    starts = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, lengths)


def _choose_from_pools(
    users: np.ndarray, counts: np.ndarray, lat: SyntheticLatents, sampler: _NicheSampler,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gumbel top-c_u inside niche-proposal pools. Returns (users, items, short_users)."""
    n_niches = len(sampler.log_mass)
    local = np.repeat(np.arange(len(users)), _POOL_FACTOR * counts[users] + _POOL_EXTRA)
    pool_user = users[local]
    # Niche per draw: row-wise softmax CDFs laid end to end (row r spans (r, r+1]), so one
    # searchsorted serves every user of the chunk.
    logits = (lat.user_factors[users] @ lat.niche_factors.T).astype(np.float64) + sampler.log_mass
    cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
    cdf /= cdf[:, -1:]
    cdf += np.arange(len(users))[:, None]
    niche = np.searchsorted(cdf.ravel(), local + rng.random(len(local)), side="right")
    niche = np.minimum(niche - local * n_niches, n_niches - 1)
    pos = np.searchsorted(sampler.flat_cdf, niche + rng.random(len(local)), side="right")
    pool_item = sampler.items_by_niche[np.minimum(pos, sampler.end[niche] - 1)]
    # Importance log-weight: target / proposal = exp(x_u . (y_i - m_niche)).
    offset = lat.item_factors[pool_item] - lat.niche_factors[lat.item_niche[pool_item]]
    key = np.einsum("ij,ij->i", lat.user_factors[pool_user], offset)
    key += _gumbel(rng, len(key))
    # Integer sort keys instead of np.lexsort (10x faster). Best key per (user, item) first:
    # an item drawn k times keeps the max of its k Gumbels.
    by_key = np.argsort(-key)
    rank = np.empty(len(key), dtype=np.int64)
    rank[by_key] = np.arange(len(key))
    pair = pool_user * np.int64(len(lat.item_factors)) + pool_item
    by_pair = by_key[np.argsort(pair[by_key], kind="stable")]
    best = by_pair[np.r_[True, pair[by_pair][1:] != pair[by_pair][:-1]]]
    # Then, per user (pool_user is sorted), the distinct items by decreasing key.
    best = best[np.argsort(pool_user[best] * np.int64(len(key)) + rank[best])]
    pool_user, pool_item = pool_user[best], pool_item[best]
    keep = _segment_rank(pool_user) < counts[pool_user]
    distinct = np.bincount(pool_user - users[0], minlength=len(users))
    short = users[distinct < counts[users]]
    keep &= ~np.isin(pool_user, short)
    return pool_user[keep], pool_item[keep], short


def _choose_exact(
    users: np.ndarray, counts: np.ndarray, lat: SyntheticLatents, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Gumbel top-c_u over the whole catalog, a few users at a time."""
    n_items = len(lat.item_factors)
    step = max(1, _EXACT_CHUNK // n_items)
    out_u, out_i = [], []
    for lo in range(0, len(users), step):
        block = users[lo:lo + step]
        keys = lat.user_factors[block] @ lat.item_factors.T + lat.item_log_popularity
        keys += _gumbel(rng, keys.shape)
        top = np.argsort(-keys, axis=1, kind="stable")
        for row, user in enumerate(block.tolist()):
            out_i.append(top[row, : counts[user]])
            out_u.append(np.full(counts[user], user, dtype=np.int64))
    return np.concatenate(out_u), np.concatenate(out_i)


def generate_synthetic(
    config: SyntheticConfig | None = None, *, progress: bool = False, **overrides: Any
) -> RawDataset:
    """Generate the synthetic dataset of ``config`` (fields may be overridden by keyword).

    Args:
        config: sizes, seed and shape parameters; defaults to :class:`SyntheticConfig()`.
        progress: show a rich progress bar over user chunks.
        **overrides: e.g. ``n_users=100, seed=3``.

    Returns:
        A :class:`RawDataset` named ``config.name``; ``behavior["rating"]`` holds 1..5.

    Raises:
        ConfigError: inconsistent sizes.
    """
    config = replace(config or SyntheticConfig(), **overrides)
    config.check()
    rng = _streams(config.seed)
    lat = _latents(config, rng["latents"])
    counts = _activity(config, rng["activity"])
    sampler = _NicheSampler.build(lat)

    # Users in chunks of bounded work: pool draws plus the user x niche softmax.
    cost = _POOL_FACTOR * counts + _POOL_EXTRA + len(sampler.log_mass)
    bounds = np.searchsorted(np.cumsum(cost), np.arange(_CHUNK_POOL, cost.sum(), _CHUNK_POOL))
    edges = np.unique(np.r_[0, bounds + 1, config.n_users].clip(0, config.n_users))
    chosen_u, chosen_i, short_users = [], [], []
    label = f"sampling {config.n_interactions:,} interactions"
    with _progress(progress, len(edges) - 1, label) as advance:
        for lo, hi in zip(edges[:-1], edges[1:]):
            users = np.arange(lo, hi, dtype=np.int64)
            u, i, short = _choose_from_pools(users, counts, lat, sampler, rng["choice"])
            chosen_u.append(u)
            chosen_i.append(i)
            short_users.append(short)
            advance()
    short = np.concatenate(short_users)
    if len(short):
        u, i = _choose_exact(short, counts, lat, rng["choice"])
        chosen_u.append(u)
        chosen_i.append(i)
    inter_user = np.concatenate(chosen_u)
    inter_item = np.concatenate(chosen_i).astype(np.int64)

    # Times: uniform inside each user's activity window; pairing them with the items (which
    # are in key order) at random order makes the sequence order random too.
    trng = rng["time"]
    start = parse_time(config.start)
    span = int(config.span_days * _DAY)
    window = (span * trng.uniform(0.05, 1.0, config.n_users)).astype(np.int64)
    offset = (trng.random(config.n_users) * (span - window)).astype(np.int64)
    within = (trng.random(len(inter_user)) * window[inter_user]).astype(np.int64)
    inter_time = start + offset[inter_user] + within

    # Release: 70% of the catalog before the log (up to 20 years), 30% during it; never after
    # an item's first interaction.
    release = np.where(
        trng.random(config.n_items) < 0.7,
        start - (trng.random(config.n_items) * 20 * 365 * _DAY).astype(np.int64),
        start + (trng.random(config.n_items) * span).astype(np.int64),
    )
    np.minimum.at(release, inter_item, inter_time)

    affinity = np.einsum("ij,ij->i", lat.user_factors[inter_user], lat.item_factors[inter_item])
    scale = max(config.taste_strength, 1e-9)
    noisy = 3.4 + 1.1 * affinity / scale + rng["rating"].normal(0.0, 0.7, len(affinity))
    rating = np.clip(np.rint(noisy), 1, 5).astype(np.float64)

    users_desc, items_desc, items_feat = _texts(config, lat, release, rng["text"])
    return RawDataset(
        name=config.name,
        user_ids=np.array([f"u{k}" for k in range(config.n_users)], dtype=object),
        item_ids=np.array([f"i{k}" for k in range(config.n_items)], dtype=object),
        user_description=users_desc,
        user_features=[dict(d) for d in users_desc],
        item_description=items_desc,
        item_features=items_feat,
        inter_user=inter_user.astype(np.int32),
        inter_item=inter_item.astype(np.int32),
        inter_time=inter_time,
        behavior={"rating": rating},
        inter_line=None,
    )


def _texts(config: SyntheticConfig, lat: SyntheticLatents, release: np.ndarray,
           rng: np.random.Generator) -> tuple[list[dict], list[dict], list[dict]]:
    """Fake but taste-consistent descriptions: genres are the item's strongest directions."""
    ages = rng.integers(16, 71, config.n_users).tolist()
    genders = np.where(rng.random(config.n_users) < 0.5, "female", "male").tolist()
    jobs = np.array(_OCCUPATIONS, dtype=object)[rng.integers(0, len(_OCCUPATIONS), config.n_users)]
    users = [{"age": a, "gender": g, "occupation": o}
             for a, g, o in zip(ages, genders, jobs.tolist())]

    directions = rng.standard_normal((config.dim, len(GENRES))).astype(np.float32)
    n_genres = rng.integers(1, 4, config.n_items)
    names = np.array(GENRES, dtype=object)
    genre_lists: list[list[str]] = []
    step = 1 << 16
    for lo in range(0, config.n_items, step):
        block = np.argsort(-(lat.item_factors[lo:lo + step] @ directions), axis=1)[:, :3]
        genre_lists.extend(names[row[:k]].tolist() for row, k in zip(block, n_genres[lo:lo + step]))

    adj = np.array(_ADJECTIVES, dtype=object)[rng.integers(0, len(_ADJECTIVES), config.n_items)]
    noun = np.array(_NOUNS, dtype=object)[rng.integers(0, len(_NOUNS), config.n_items)]
    noun2 = np.array(_NOUNS, dtype=object)[rng.integers(0, len(_NOUNS), config.n_items)]
    pattern = rng.integers(0, 4, config.n_items)
    sequel = rng.integers(2, 5, config.n_items)
    titles = [
        (f"The {a} {n}", f"{n} of the {a} {m}", f"{a} {n}", f"The {a} {n} {s}")[p]
        for a, n, m, p, s in zip(adj.tolist(), noun.tolist(), noun2.tolist(), pattern.tolist(),
                                 sequel.tolist())
    ]
    dates = np.datetime_as_string(release.astype("datetime64[s]"), unit="D").tolist()
    items_desc = [
        {"title": t, "release_year": int(d[:4]), "genres": g}
        for t, d, g in zip(titles, dates, genre_lists)
    ]
    items_feat = [
        {"release_date": d, "release_year": desc["release_year"], "genres": desc["genres"]}
        for d, desc in zip(dates, items_desc)
    ]
    return users, items_desc, items_feat


class _progress:
    """A rich progress bar when asked for, a no-op otherwise; yields an ``advance()``."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled, self.total, self.description = enabled, total, description
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def write_synthetic(
    project_path: str | os.PathLike, config: SyntheticConfig | None = None, **overrides: Any
) -> RawDataset:
    """Generate and write ``<project>/raws/<name>_*.jsonl``; returns the dataset."""
    ds = generate_synthetic(config, **overrides)
    write_raws(project_path, ds.name, *dataset_records(ds))
    return ds


def config_from_options(options: Mapping[str, Any]) -> SyntheticConfig:
    """A config from CLI options (``users``, ``items``, ``interactions``, ``seed``, ``name``)."""
    fields = asdict(SyntheticConfig())
    mapping = {"users": "n_users", "items": "n_items", "interactions": "n_interactions"}
    values = {mapping.get(k, k): v for k, v in options.items() if v is not None}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown synthetic option(s) {sorted(unknown)}; known: {sorted(fields)}")
    return SyntheticConfig(**values)


# ---------------------------------------------------------------------------------------------
# the converter

SOURCE_FORMAT = "generated: latent tastes (d=8), power-law popularity, softmax choices (no files)"


def convert(source: Path | None, project_path: Path, options: Mapping[str, Any]) -> ConvertReport:
    """Generate the synthetic dataset described by ``options`` and write its raws."""
    config = config_from_options(options)
    start = time.perf_counter()
    ds = generate_synthetic(config, progress=True)
    generated = time.perf_counter() - start
    report = ConvertReport(dataset=config.name, source="generated")
    report.notes["seed"] = config.seed
    report.notes["generation seconds"] = round(generated, 2)
    write_raw_records(project_path, config.name, *dataset_records(ds), report)
    return report


CONVERTER = Converter(
    name="synthetic",
    source_format=SOURCE_FORMAT,
    needs_source=False,
    convert=convert,
    options=(
        ConverterOption("users", int, 1000, "number of users"),
        ConverterOption("items", int, 5000, "number of items"),
        ConverterOption("interactions", int, 50_000, "number of interactions (>= users)"),
        ConverterOption("seed", int, 0, "random seed; same seed, same dataset"),
    ),
    description="seeded synthetic log with known tastes, any size",
)
