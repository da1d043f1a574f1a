"""Causal popularity: counts strictly before a time, against a brute-force count."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.data_pipeline.popularity import (
    CausalCounts,
    causal_popularity,
    iter_causal_popularity,
    popularity_bins,
)
from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.data_pipeline.sampling import sampler


def brute(ds: RawDataset, t: int) -> np.ndarray:
    return np.bincount(ds.inter_item[ds.inter_time < t], minlength=ds.n_items)


def tiny_log() -> RawDataset:
    """Four items, interactions with ties in time, one item never seen."""
    items = [0, 1, 0, 2, 0, 1, 2, 0]
    times = [10, 10, 20, 20, 20, 35, 40, 40]
    n = len(items)
    return RawDataset(
        name="tiny", user_ids=np.array(["u0", "u1"], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(4)], dtype=object),
        user_description=[{}, {}], user_features=[{}, {}],
        item_description=[{} for _ in range(4)], item_features=[{} for _ in range(4)],
        inter_user=np.array([k % 2 for k in range(n)], dtype=np.int32),
        inter_item=np.array(items, dtype=np.int32), inter_time=np.array(times, dtype=np.int64), behavior={},
    )


def test_counts_on_a_toy_log_match_a_hand_count():
    counts = CausalCounts(tiny_log())
    assert counts.at(10).tolist() == [0, 0, 0, 0]  # the interactions at t itself do not count
    assert counts.at(21).tolist() == [3, 1, 1, 0]
    assert counts.at(5).tolist() == [0, 0, 0, 0]  # backwards
    assert counts.at(1000).tolist() == [4, 2, 2, 0]
    assert counts.at(40).tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize("order", ["sorted", "random", "reversed"])
def test_counts_in_any_time_order_match_brute_force(toy, order):
    rng = np.random.default_rng(3)
    times = np.concatenate([rng.choice(toy.inter_time, 60), [toy.inter_time.min() - 1, toy.inter_time.max() + 1]])
    times = {"sorted": np.sort(times), "random": times, "reversed": np.sort(times)[::-1]}[order]
    counts = CausalCounts(toy)
    for t in times:
        got = counts.at(int(t))
        assert got.dtype == np.int64 and np.array_equal(got, brute(toy, int(t)))
    with pytest.raises(ValueError):
        got[0] = 1  # the counter's own array: read-only


def test_batch_functions_match_brute_force(toy):
    times = np.random.default_rng(0).choice(toy.inter_time, 37)
    block = causal_popularity(toy, times, chunk_size=5)
    assert block.dtype == np.int32
    assert np.array_equal(block, np.stack([brute(toy, int(t)) for t in times]))
    chunks = list(iter_causal_popularity(toy, times, chunk_size=8))
    assert max(len(idx) for idx, _ in chunks) == 8
    seen = np.concatenate([idx for idx, _ in chunks])
    assert sorted(seen.tolist()) == list(range(len(times)))
    assert np.all(np.diff(times[seen]) >= 0)  # chunks come in time order


def test_popularity_bins_are_monotone_in_the_count(toy):
    counts = causal_popularity(toy, toy.inter_time[:4])
    labels, edges = popularity_bins(counts, counts >= 0, 10)
    assert edges.shape == (9, 4)
    for row, lab in zip(counts, labels):
        order = np.argsort(row, kind="stable")
        assert np.all(np.diff(lab[order]) >= 0)


def test_the_sampler_re_exports_the_same_functions():
    assert sampler.causal_popularity is causal_popularity
    assert sampler.iter_causal_popularity is iter_causal_popularity
    assert sampler.popularity_bins is popularity_bins


def test_causal_counts_survive_a_deep_copy_and_count_only_their_rows(small_ds):
    import copy

    t = int(np.median(small_ds.inter_time))
    counts = CausalCounts(small_ds)
    twin = copy.deepcopy(counts)
    expected = np.bincount(small_ds.inter_item[small_ds.inter_time < t], minlength=small_ds.n_items)
    assert np.array_equal(twin.at(t), expected) and np.array_equal(counts.at(t), expected)
    rows = np.flatnonzero(small_ds.inter_user % 2 == 0)
    mask = small_ds.inter_time[rows] < t
    assert np.array_equal(CausalCounts(small_ds, rows).at(t),
                          np.bincount(small_ds.inter_item[rows][mask], minlength=small_ds.n_items))
