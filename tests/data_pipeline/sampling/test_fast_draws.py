"""The catalog-scale draws (issue #17) against the exact methods they replace.

- :class:`Availability` answers exactly what the dense scenes x catalog mask answered;
- :func:`skip_uniform_f32` returns the values of a dense block and leaves the generator where
  the dense draw left it;
- random / popularity lists drawn from one CDF with rejection of unshowable items have the
  law of exact Gumbel-top-k over the showable catalog (chi-square on the joint law of the
  first two items; the same test rejects a wrong law, so it has power);
- the popularity-matched sides built from count levels have the law of the dense definition
  (two-sample chi-square per scene on how often each item is shown).
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
from scene_fixtures import TracingStrategy, make_dataset
from scipy import stats

from usermirrorer.data_pipeline.sampling import sampler as sampler_module
from usermirrorer.data_pipeline.sampling.availability import Availability, ReleaseIndex
from usermirrorer.data_pipeline.sampling.draws import (
    ItemDistribution,
    gumbel,
    skip_uniform_f32,
    successive_draws,
    topk_desc,
)
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, SceneSampler, eligible_rows

ALPHA = 1e-3  # a correct sampler fails a test with this probability (fixed seeds: never flaky)


def _dense_mask(release, times, excluded):
    mask = release[None, :] <= times[:, None]
    for j, items in enumerate(excluded):
        mask[j, items] = False
    return mask


@pytest.fixture()
def small_availability():
    rng = np.random.default_rng(4)
    n, m = 50, 6
    release = rng.integers(0, 100, n)
    times = rng.integers(20, 120, m)
    excluded = [rng.choice(n, size=int(rng.integers(0, 12)), replace=True) for _ in range(m)]
    ptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    avail = Availability(ReleaseIndex(release, n), times, ptr, np.concatenate(excluded))
    return avail, _dense_mask(release, times, excluded)


def test_availability_matches_the_dense_mask(small_availability):
    avail, dense = small_availability
    m, n = dense.shape
    assert np.array_equal(avail.dense(), dense)
    assert np.array_equal(avail.counts(), dense.sum(axis=1))
    scenes, items = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    assert np.array_equal(avail.lookup(scenes, items), dense)
    some = np.array([4, 1])
    cols = np.array([7, 3, 49, 0, 22])
    assert np.array_equal(avail.block(some, cols), dense[some][:, cols])
    assert np.array_equal(avail.subset(some).dense(), dense[some])


def test_availability_without_release_rule():
    avail = Availability(ReleaseIndex(None, 10), np.array([5, 6]), np.array([0, 2, 3]), np.array([1, 1, 9]))
    expected = np.ones((2, 10), dtype=bool)
    expected[0, 1] = expected[1, 9] = False
    assert np.array_equal(avail.dense(), expected)
    assert avail.counts().tolist() == [9, 9]


@pytest.mark.parametrize("before", ["nothing", "one float32", "bounded ints", "doubles"])
def test_skip_uniform_f32_is_the_dense_block(before):
    for seed in range(25):
        dense, skip = np.random.default_rng(seed), np.random.default_rng(seed)
        for g in (dense, skip):
            if before == "one float32":
                g.random(1, dtype=np.float32)
            elif before == "bounded ints":
                g.integers(0, 7, size=3)
            elif before == "doubles":
                g.random(3)
        count = int(np.random.default_rng(100 + seed).integers(1, 3000))
        at = np.random.default_rng(200 + seed).integers(0, count, 40)
        block = dense.random(count, dtype=np.float32)
        assert np.array_equal(skip_uniform_f32(skip, count, at), block[at])
        # Every later draw is unchanged (including a pending half of a 64-bit output).
        assert np.array_equal(dense.random(5, dtype=np.float32), skip.random(5, dtype=np.float32))
        assert dense.integers(0, 10**12) == skip.integers(0, 10**12)


def _two_sample_p(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square p-value that two count vectors come from one law; cells expected below 5 are
    pooled into one (the test's large-sample approximation needs it)."""
    table = np.stack([a, b]).astype(np.float64)
    expected = table.sum(axis=0) * table.sum(axis=1, keepdims=True) / table.sum()
    small = expected.min(axis=0) < 5
    table = np.column_stack([table[:, ~small], table[:, small].sum(axis=1)]) if small.any() else table
    table = table[:, table.sum(axis=0) > 0]
    return float(stats.chi2_contingency(table).pvalue)


def _pair_counts(items: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(items[:, 0] * n + items[:, 1], minlength=n * n)


def test_fast_lists_have_the_exact_law(small_availability):
    """Successive draws from one CDF over the sparse mask vs exact Gumbel-top-k over the dense
    showable catalog (the exact method: score every item, add Gumbel noise, take the top)."""
    avail, dense = small_availability
    m, n = dense.shape
    weights = np.random.default_rng(9).pareto(1.2, n) + 0.1
    dist = ItemDistribution(np.log(weights))
    reps = 4000
    fast_rng, exact_rng = np.random.default_rng(1), np.random.default_rng(2)
    checked = 0
    for j in range(m):
        if dense[j].sum() < 3:
            continue
        one = avail.subset(np.full(reps, j))
        fast, ok = successive_draws(dist, one, 2, fast_rng)
        assert ok.all() and one.lookup(np.arange(reps)[:, None], fast).all()
        scores = np.where(dense[j], np.log(weights), -np.inf)[None, :] + gumbel(exact_rng, (reps, n))
        exact = topk_desc(scores, 2)
        assert _two_sample_p(_pair_counts(fast, n), _pair_counts(exact, n)) > ALPHA
        # Power: the same test tells the exact law from uniform draws over the showable items.
        uniform, _ = successive_draws(np.zeros(n), one, 2, np.random.default_rng(3))
        assert _two_sample_p(_pair_counts(uniform, n), _pair_counts(exact, n)) < 1e-6
        checked += 1
    assert checked >= 4


def test_fast_lists_match_sampling_without_replacement_under_the_mask():
    """The joint law of the first two draws equals (w_i / W) (w_j / (W - w_i)) over the
    showable items, when the heaviest ones are excluded or unreleased."""
    weights = np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.5])
    reps = 60000
    release = np.array([0, 0, 50, 0, 0, 0])  # item 2 not yet released at t=10
    avail = Availability(ReleaseIndex(release, 6), np.full(reps, 10), np.arange(reps + 1), np.zeros(reps, dtype=np.int64))
    items, ok = successive_draws(np.log(weights), avail, 2, np.random.default_rng(0))
    assert ok.all()
    w = weights.copy()
    w[[0, 2]] = 0.0
    pairs = list(permutations([1, 3, 4, 5], 2))
    expected = np.array([w[i] / w.sum() * w[j] / (w.sum() - w[i]) for i, j in pairs])
    index = {p: k for k, p in enumerate(pairs)}
    observed = np.bincount([index[(a, b)] for a, b in items.tolist()], minlength=len(pairs))
    assert stats.chisquare(observed, expected * reps).pvalue > ALPHA


def _matched_counts(ds, rows, sparse: bool, monkeypatch, seed: int) -> np.ndarray:
    """How often each item is an option of each scene, over many draws of the same scenes."""
    monkeypatch.setattr(sampler_module, "SPARSE_MIN_ITEMS", 0 if sparse else 10**9)
    config = SceneConfig(n_samples=1, min_exposure=5, max_exposure=5, split="eval", seed=seed,
                         negatives="popularity-matched", embedder=None)
    sampler = SceneSampler(ds, config, TracingStrategy())
    assert (sampler.matched is not None) == sparse
    reps = 2000
    records = sampler.sample(np.repeat(rows, reps), np.random.default_rng(seed))
    counts = np.zeros((len(rows), ds.n_items), dtype=np.int64)
    index = ds.item_index
    for k, record in enumerate(records):
        j = k // reps
        for item in record["impression_list"]:
            if item != record["item_id"]:
                counts[j, index[item]] += 1
    return counts


@pytest.mark.parametrize("prefix_scan", [4096, 4])
def test_matched_negatives_from_levels_have_the_dense_law(monkeypatch, prefix_scan):
    """prefix_scan 4096: levels enumerated (what a small catalog gets); 4: levels sampled by
    rejection from the level index (what a 1M-item catalog gets)."""
    from usermirrorer.data_pipeline.sampling import matched

    monkeypatch.setattr(matched, "_PREFIX_SCAN", prefix_scan)
    ds = make_dataset(n_users=80, n_items=120, n_interactions=3000, seed=5)
    rows = np.random.default_rng(0).choice(eligible_rows(ds, 3), size=6, replace=False)
    fast = _matched_counts(ds, rows, True, monkeypatch, seed=1)
    dense = _matched_counts(ds, rows, False, monkeypatch, seed=2)
    for j in range(len(rows)):
        assert ((fast[j] + dense[j]) > 0).sum() >= 6  # the scene has a real choice of negatives
        assert _two_sample_p(fast[j], dense[j]) > ALPHA
