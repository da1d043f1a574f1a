"""The synthetic generator: seeded, exact sizes, consistent, faithful to its choice model."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.data_pipeline.raw import load_raws, parse_time
from usermirrorer.preprocessing.synthetic import (
    SyntheticConfig,
    generate_synthetic,
    synthetic_latents,
    write_synthetic,
)
from usermirrorer.errors import ConfigError

SMALL = SyntheticConfig(n_users=300, n_items=2000, n_interactions=6000, seed=7)


def _arrays(ds):
    return (ds.inter_user, ds.inter_item, ds.inter_time, ds.behavior["rating"])


def test_same_seed_same_dataset():
    a, b = generate_synthetic(SMALL), generate_synthetic(SMALL)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.item_description == b.item_description
    assert a.user_description == b.user_description
    c = generate_synthetic(SMALL, seed=8)
    assert not np.array_equal(a.inter_item, c.inter_item)


@pytest.mark.parametrize(
    "config",
    [SMALL, SyntheticConfig(n_users=7, n_items=12, n_interactions=70, seed=1),
     SyntheticConfig(n_users=50, n_items=3000, n_interactions=50, seed=2, n_niches=16)],
)
def test_sizes_and_consistency(config):
    ds = generate_synthetic(config)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (
        config.n_users, config.n_items, config.n_interactions)
    per_user = np.diff(ds.user_ptr)
    assert per_user.min() >= 1 and per_user.max() <= config.n_items
    pairs = ds.inter_user.astype(np.int64) * ds.n_items + ds.inter_item
    assert len(np.unique(pairs)) == ds.n_interactions  # at most once per (user, item)
    start = parse_time(config.start)
    assert ds.inter_time.min() >= start
    assert ds.inter_time.max() < start + config.span_days * 86400
    assert set(np.unique(ds.behavior["rating"]).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # No item is consumed before its release date.
    release = np.array([np.datetime64(f["release_date"], "s").astype(np.int64)
                        for f in ds.item_features])
    assert (release[ds.inter_item] <= ds.inter_time).all()


def test_choices_follow_the_softmax():
    """Chosen items' mean log-probability under the true model matches its expectation
    (minus the entropy) within a few standard errors, far from the uniform baseline."""
    config = SyntheticConfig(n_users=1500, n_items=4000, n_interactions=1500, seed=3)
    ds, lat = generate_synthetic(config), synthetic_latents(config)
    scores = (lat.user_factors @ lat.item_factors.T + lat.item_log_popularity).astype(np.float64)
    logp = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
    chosen = logp[ds.inter_user, ds.inter_item]
    expected = (np.exp(logp) * logp).sum(axis=1).mean()
    stderr = chosen.std() / np.sqrt(len(chosen))
    assert abs(chosen.mean() - expected) < 4 * stderr
    assert chosen.mean() > -np.log(config.n_items) + 1.0


def test_ratings_rise_with_affinity():
    ds, lat = generate_synthetic(SMALL), synthetic_latents(SMALL)
    pairs = lat.user_factors[ds.inter_user], lat.item_factors[ds.inter_item]
    affinity = np.einsum("ij,ij->i", *pairs)
    assert np.corrcoef(affinity, ds.behavior["rating"])[0, 1] > 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"n_interactions": 10}, "every user needs at least one interaction"),
     ({"n_interactions": 10**9}, "at most once"),
     ({"n_items": 0}, "n_items must be >= 1"),
     ({"start": "2020-01-01"}, "start:")],
)
def test_bad_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        generate_synthetic(SMALL, **overrides)


def test_write_and_reload(tmp_path):
    ds = write_synthetic(tmp_path, SMALL, name="syn-small")
    back = load_raws(tmp_path, "syn-small")
    for x, y in zip(_arrays(ds), _arrays(back)):
        np.testing.assert_array_equal(x, y)
    assert back.item_description == ds.item_description
