"""MovieStrategy: profile, history line, [New Release] mark and release times."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.data_pipeline.raw import RawDataset, parse_time
from usermirrorer.data_pipeline.sampling.strategies import get_strategy
from usermirrorer.data_pipeline.sampling.strategies.movie import NO_RELEASE_LIMIT, MovieStrategy

DAY = 86400


def _dataset() -> RawDataset:
    items = [
        ({"title": "Toy Story", "release_year": 1995,
          "genres": ["Animation", "Children's", "Comedy"]},
         {"release_year": 1995, "genres": ["Animation", "Children's", "Comedy"]}),
        ({"title": "Titanic", "release_year": 1997, "genres": ["Drama", "Romance"]},
         {"release_year": 1997}),
        ({"title": "(unknown title)"}, {"release_year": None}),
        ({"title": "Exact Date", "release_year": 1997, "genres": ["Drama"]},
         {"release_date": "1997-11-20", "release_year": 1997}),
    ]
    users = [
        {"age": 24, "gender": "male", "occupation": "technician"},
        {"age": "25-34", "gender": "female", "occupation": "programmer"},
        {"age": "56+", "gender": "M"},
        {"occupation": "writer", "favourite_snack": "popcorn"},
    ]
    return RawDataset(
        name="ml-100k",
        user_ids=np.array(["1", "2", "3", "4"], dtype=object),
        item_ids=np.array(["1", "2", "3", "4"], dtype=object),
        user_description=users,
        user_features=[dict(u) for u in users],
        item_description=[d for d, _ in items],
        item_features=[f for _, f in items],
        inter_user=np.array([0, 0], dtype=np.int32),
        inter_item=np.array([0, 1], dtype=np.int32),
        inter_time=np.array([parse_time("1997-12-01 00:00:00")] * 2, dtype=np.int64),
        behavior={"rating": np.array([4.0, 3.5])},
    )


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m", "movielens", "synthetic", "ml-1m-small"])
def test_registered(name):
    assert isinstance(get_strategy(name), MovieStrategy)


def test_history_line():
    ds, s = _dataset(), MovieStrategy()
    now = parse_time("1997-12-04 12:00:00")
    line = s.history_entry(ds, 0, now - 3 * DAY - 60, {"rating": 4}, now)
    assert line == ("Toy Story (1995) — Animation, Children's, Comedy; "
                    "watched 3 days ago; rated 4/5")
    assert s.history_entry(ds, 2, now - 2 * 3600, {}, now) == "(unknown title); watched 2 hours ago"
    assert s.history_entry(ds, 1, now, {"rating": 3.5}, now).endswith("rated 3.5/5")
    block = s.history(ds, [0, 1], [now - 400 * DAY, now - DAY], [{"rating": 5}, {}], now)
    assert block.splitlines() == [
        "Toy Story (1995) — Animation, Children's, Comedy; watched 1 year ago; rated 5/5",
        "Titanic (1997) — Drama, Romance; watched 1 day ago",
    ]


def test_new_release_mark():
    ds, s = _dataset(), MovieStrategy()
    late_1997 = parse_time("1997-12-01 00:00:00")
    assert s.exposure_item(ds, 1, late_1997) == "[New Release] Titanic (1997) — Drama, Romance"
    assert s.exposure_item(ds, 0, late_1997) == "Toy Story (1995) — Animation, Children's, Comedy"
    # A year after release the mark is gone; before the exact release date it is not new yet.
    assert not s.exposure_item(ds, 1, parse_time("1998-01-02 00:00:00")).startswith("[New")
    assert not s.exposure_item(ds, 3, parse_time("1997-11-19 00:00:00")).startswith("[New")
    assert s.exposure_item(ds, 3, parse_time("1997-11-21 00:00:00")).startswith("[New Release]")
    assert s.exposure_item(ds, 2, late_1997) == "(unknown title)"  # unknown release: no mark


def test_release_times():
    times = MovieStrategy().release_times(_dataset())
    assert times.dtype == np.int64
    assert times.tolist() == [parse_time("1995-01-01 00:00:00"), parse_time("1997-01-01 00:00:00"),
                              NO_RELEASE_LIMIT, parse_time("1997-11-20 00:00:00")]


def test_cached_text_follows_the_dataset():
    # Item text and release times are cached per dataset on the strategy: a reused strategy
    # must render a second dataset from that dataset, and return to the first one correctly.
    s = MovieStrategy()
    first, second = _dataset(), _dataset()
    second.item_description[1] = {"title": "Other Film", "release_year": 1990}
    second.item_features[1] = {"release_year": 1990}
    late_1997 = parse_time("1997-12-01 00:00:00")
    assert s.exposure_item(first, 1, late_1997) == "[New Release] Titanic (1997) — Drama, Romance"
    assert s.exposure_item(second, 1, late_1997) == "Other Film (1990)"
    assert s.release_times(second)[1] == parse_time("1990-01-01 00:00:00")
    assert s.exposure_item(first, 1, late_1997) == "[New Release] Titanic (1997) — Drama, Romance"
    assert s.history_entry(first, 1, late_1997, {}, late_1997) == MovieStrategy().history_entry(
        first, 1, late_1997, {}, late_1997)
    with pytest.raises(ValueError):  # the cached release times are shared: read-only
        s.release_times(first)[0] = 0


def test_profile():
    ds, s = _dataset(), MovieStrategy()
    assert s.profile(ds, 0) == "A 24-year-old man.\nOccupation: technician."
    assert s.profile(ds, 1) == "A woman aged 25-34.\nOccupation: programmer."
    assert s.profile(ds, 2) == "A man aged 56 or older."
    assert s.profile(ds, 3) == "Occupation: writer.\nfavourite snack: popcorn"


@pytest.mark.slow
def test_renders_real_ml100k(ml100k_converted):
    from usermirrorer.data_pipeline.raw import load_raws

    ds = load_raws(ml100k_converted[0], "ml-100k")
    s = get_strategy("ml-100k")
    u = ds.user_index["1"]
    rows = ds.user_rows(u)
    now = int(ds.inter_time[rows.stop - 1])
    text = s.history(ds, ds.inter_item[rows][:2], ds.inter_time[rows][:2],
                     [ds.behavior_of(r) for r in range(rows.start, rows.start + 2)], now)
    assert all("; watched " in line and "rated " in line for line in text.splitlines())
    releases = s.release_times(ds)
    assert (releases == NO_RELEASE_LIMIT).sum() == 1  # only the placeholder item
    new = [i for i in range(ds.n_items) if s.exposure_item(ds, i, now).startswith("[New Release]")]
    years = {ds.item_features[i]["release_year"] for i in new}
    assert new and years <= {1997, 1998}
