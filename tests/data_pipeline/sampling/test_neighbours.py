"""Neighbour lists at catalog scale (issue #17): the blocked exact search gives the dense top-k
lists, the same random numbers included; the FAISS index is exact when it visits every list,
and names its extra when faiss is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from blas_kernel import require_avx512_blas
from usermirrorer.preprocessing.synthetic import generate_synthetic

from usermirrorer.data_pipeline.sampling.availability import Availability, ReleaseIndex
from usermirrorer.data_pipeline.sampling.draws import topk_desc
from usermirrorer.data_pipeline.sampling.neighbours import (
    NOISE_SCALE,
    ExactNeighbours,
    FaissNeighbours,
    regular_matmul,
    select_topk,
)
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, SceneSampler, sample_scenes
from usermirrorer.errors import ConfigError, MissingDependency


def _case(n=6000, m=40, dim=16, duplicates=False, seed=0):
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n, dim)).astype(np.float32)
    factors *= rng.pareto(1.5, n)[:, None].astype(np.float32) + 0.05  # norms vary (degree-like)
    queries = rng.standard_normal((m, dim)).astype(np.float32)
    if duplicates:
        # A tenth of the catalog is one vector, and half the scenes ask for it: their lists cut
        # through a group of exactly tied scores.
        top = factors[np.argmax(np.linalg.norm(factors, axis=1))].copy()
        factors[: n // 10] = top
        queries[: m // 2] = top
    release = rng.integers(0, 100, n)
    times = rng.integers(50, 150, m)
    excluded = [rng.choice(n, size=int(rng.integers(1, 60))) for _ in range(m)]
    ptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    avail = Availability(ReleaseIndex(release, n), times, ptr, np.concatenate(excluded))
    return factors, queries, avail


def _dense_lists(factors, queries, avail, k, rng, normalise):
    """What scene sampling computed before: every item scored, noise for all, top-k."""
    scores = regular_matmul(queries, factors)
    if normalise:
        scale = np.maximum(scores.max(axis=1), -scores.min(axis=1))[:, None]
        np.divide(scores, scale, out=scores, where=scale > 0)
    noise = rng.random(scores.shape, dtype=np.float32)
    noise *= NOISE_SCALE
    scores = scores + noise
    np.copyto(scores, -np.inf, where=~avail.dense())
    top = topk_desc(scores, k)
    return top, np.isfinite(np.take_along_axis(scores, top, axis=1))


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("duplicates", [False, True])
def test_blocked_search_gives_the_dense_lists(normalise, duplicates):
    require_avx512_blas()  # entries independent of the product's shape: true of these kernels
    factors, queries, avail = _case(duplicates=duplicates)
    k = 11
    search = ExactNeighbours(factors, block=1024, prune=normalise)
    cands = search.candidates(queries, avail, k, normalise)
    dense_rng, fast_rng = np.random.default_rng(5), np.random.default_rng(5)
    want, want_ok = _dense_lists(factors, queries, avail, k, dense_rng, normalise)
    got, got_ok, n_dense = select_topk(cands, k, fast_rng, avail,
                                       lambda scenes: regular_matmul(queries[scenes], factors))
    assert np.array_equal(want_ok, got_ok)
    assert np.array_equal(np.where(want_ok, want, -1), np.where(got_ok, got, -1))
    assert dense_rng.random() == fast_rng.random()  # the generator moved past the whole block
    if duplicates:
        assert n_dense > 0  # ties at the cut were recomputed densely
    else:
        # Far fewer candidates than the catalog per scene.
        assert len(cands.items) < 0.05 * len(queries) * len(factors)


def test_faiss_visiting_every_list_is_exact():
    pytest.importorskip("faiss")
    factors, _, avail = _case(n=4000, duplicates=False, seed=1)
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    k = 11
    exact = ExactNeighbours(unit, prune=False).candidates(unit[:40], avail, k, False)
    index = FaissNeighbours(unit, nlist=16, nprobe=16)
    approx = index.candidates(unit[:40], avail, k, False)

    def top(c, j):
        lo, hi = c.ptr[j], c.ptr[j + 1]
        return set(c.items[lo:hi][np.argsort(-c.scores[lo:hi])[:k]].tolist())

    for j in range(len(exact)):
        assert top(approx, j) == top(exact, j)
    assert avail.lookup(np.repeat(np.arange(40), np.diff(approx.ptr)), approx.items).all()


def test_faiss_sampler_scenes_are_valid():
    pytest.importorskip("faiss")
    ds = generate_synthetic(n_users=1500, n_items=20000, n_interactions=30000, seed=2)
    config = SceneConfig(n_samples=300, min_exposure=2, max_exposure=12, seed=0, embedder="hashing-64",
                         neighbours="faiss")
    sampler = SceneSampler(ds, config)
    assert {type(s).__name__ for s in sampler.searchers.values()} == {"ExactNeighbours", "FaissNeighbours"}
    records, _ = sample_scenes(ds, config, sampler=sampler)
    assert len(records) == 300
    for r in records:
        assert r["impression_list"][r["item_pos"]] == r["item_id"]
        assert len(set(r["impression_list"])) == len(r["impression_list"]) == r["choice_cnt"]


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependency, match=r"usermirrorer\[ann\]"):
        FaissNeighbours(np.ones((10, 4), dtype=np.float32))


def test_unknown_neighbour_mode_is_refused():
    with pytest.raises(ConfigError, match="neighbours"):
        SceneConfig(n_samples=1, neighbours="annoy").validate()


def test_a_prepared_sampler_keeps_its_searches(monkeypatch):
    """Reusing a sampler under another config: same searches or a clear error; matched draws
    follow the new K."""
    from usermirrorer.data_pipeline.sampling import sampler as sampler_module

    monkeypatch.setattr(sampler_module, "SPARSE_MIN_ITEMS", 0)
    ds = generate_synthetic(n_users=300, n_items=2000, n_interactions=6000, seed=4)
    config = SceneConfig(n_samples=20, min_exposure=2, max_exposure=12, embedder="hashing-64")
    sampler = SceneSampler(ds, config)
    with pytest.raises(ConfigError, match="list mode"):
        sample_scenes(ds, SceneConfig(n_samples=20, embedder="hashing-64", list_mode="multinomial"), sampler=sampler)
    matched = SceneConfig(n_samples=30, min_exposure=5, max_exposure=5, split="eval", embedder="hashing-64",
                          negatives="popularity-matched")
    prepared = SceneSampler(ds, matched)
    eight = SceneConfig(n_samples=30, min_exposure=8, max_exposure=8, split="eval", embedder="hashing-64",
                        negatives="popularity-matched")
    records, _ = sample_scenes(ds, eight, sampler=prepared)
    assert {r["choice_cnt"] for r in records} == {8}
    assert sampler_module._retarget(prepared, eight).matched.window == 2 * 7  # popularity_window x (K - 1)
    assert prepared.matched.window == 2 * 4  # the prepared sampler itself is unchanged
