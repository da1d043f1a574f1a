"""Non-LLM choice models: causal popularity, collaborative, outside option, rating queries."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.data_pipeline.raw import format_time
from usermirrorer.errors import ConfigError
from usermirrorer.sim.baselines import make_baseline


def scene(ds, items, t, user="u0", outside=False, **extra):
    options = [f"item {i}" for i in items] + (["none"] if outside else [])
    return {
        "user_id": user,
        "timestamp": format_time(t),
        "impression_list": [str(ds.item_ids[i]) for i in items],
        "outside_option": outside,
        "text": {"profile": "", "history": "", "action_list": options},
        **extra,
    }


def test_popularity_counts_only_the_past(small_ds):
    model = make_baseline("popularity", small_ds)
    for t in np.quantile(small_ds.inter_time, [0.0, 0.3, 0.7, 1.0]).astype(np.int64):
        brute = np.bincount(
            small_ds.inter_item[small_ds.inter_time < t], minlength=small_ds.n_items
        )
        assert np.array_equal(model.counts_before(int(t)), brute)
    t = int(np.median(small_ds.inter_time))
    counts = model.counts_before(t)
    items = np.argsort(counts)[[0, len(counts) // 2, -1]]
    probs = model.choice_probs(scene(small_ds, items, t)).probs
    expected = (1 + counts[items]) / (1 + counts[items]).sum()  # softmax(log1p(c)) at T=1
    assert np.allclose(probs, expected)


def test_outside_option_is_likelier_for_weak_slates(small_ds):
    model = make_baseline("popularity", small_ds)
    t = int(small_ds.inter_time.max()) + 1
    order = np.argsort(model.counts_before(t))
    weak = model.choice_probs(scene(small_ds, order[:3], t, outside=True)).probs
    strong = model.choice_probs(scene(small_ds, order[-3:], t, outside=True)).probs
    assert len(weak) == 4 and weak[-1] > strong[-1]


def test_collaborative_follows_the_history(small_ds):
    model = make_baseline("collaborative", small_ds, dim=8)
    t = int(small_ds.inter_time.max()) + 1
    items = np.arange(10)
    a = model.choice_probs(scene(small_ds, items, t, history_item_ids=["i1", "i2", "i3"])).probs
    b = model.choice_probs(scene(small_ds, items, t, history_item_ids=["i20", "i30", "i33"])).probs
    assert np.isclose(a.sum(), 1) and not np.allclose(a, b)
    # without history_item_ids it reads the user's log before t
    c = model.choice_probs(scene(small_ds, items, t, user="u4")).probs
    hist = [str(small_ds.item_ids[i]) for i in small_ds.inter_item[small_ds.rows_before(4, t)]]
    d = model.choice_probs(scene(small_ds, items, t, user="u4", history_item_ids=hist)).probs
    assert np.allclose(c, d)


def test_rating_query_uses_the_items_past_ratings(small_ds):
    model = make_baseline("popularity", small_ds)
    item = int(np.bincount(small_ds.inter_item).argmax())
    t = int(small_ds.inter_time.max()) + 1
    ratings = small_ds.behavior["rating"][small_ds.inter_item == item]
    query = scene(
        small_ds,
        [item] * 5,
        t,
        rating_query={"item_id": str(small_ds.item_ids[item]), "levels": [5, 4, 3, 2, 1]},
    )
    probs = model.choice_probs([query])[0].probs
    expected = np.array([1 + np.sum(ratings == r) for r in [5, 4, 3, 2, 1]], dtype=float)
    assert np.allclose(probs, expected / expected.sum())


def test_random_and_unknown(small_ds):
    model = make_baseline("random", small_ds)
    assert np.allclose(model.choice_probs(scene(small_ds, [1, 2, 3], 0, outside=True)).probs, 0.25)
    with pytest.raises(ConfigError, match="unknown choice model"):
        make_baseline("bert", small_ds)
    with pytest.raises(ConfigError, match="temperature"):
        make_baseline("popularity", small_ds, temperature=0)
