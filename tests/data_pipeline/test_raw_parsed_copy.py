"""load_raws keeps a parsed copy of a clean load and reads it back only for the same bytes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_builders import inter, item, user, write_raw_files

from usermirrorer.data_pipeline import raw
from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.errors import DataError

D = "toy"


def _assert_same(a: raw.RawDataset, b: raw.RawDataset) -> None:
    for name in ("user_ids", "item_ids", "inter_user", "inter_item", "inter_time", "inter_line", "user_ptr"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    for name in ("user_description", "user_features", "item_description", "item_features", "byte_order_marks"):
        assert getattr(a, name) == getattr(b, name), name
    assert list(a.behavior) == list(b.behavior)
    for key, column in a.behavior.items():
        assert column.dtype == b.behavior[key].dtype
        np.testing.assert_array_equal(column, b.behavior[key])


def _write(tmp_path, last_rating=4):
    users, items = [user("u1"), user("u2")], [item("i1"), item("i2")]
    mixed = inter("u2", "i1", "2020-01-02 10:00:00")
    mixed["behavior_features"] = {"rating": None, "review": "fine", "plays": 3, "odd key/name": 1.5}
    last = inter("u1", "i2", "2020-01-03 10:00:00")
    last["behavior_features"] = {"rating": last_rating, "review": None}
    return write_raw_files(tmp_path, D, users, items, [inter("u1", "i1"), mixed, last])


def _no_parsing(monkeypatch):
    def parse(*args):
        raise AssertionError("parsed again")
    monkeypatch.setattr(raw, "_parse_raws", parse)


def test_a_second_load_reads_the_parsed_copy_and_equals_a_fresh_parse(tmp_path, monkeypatch):
    _write(tmp_path)
    first = load_raws(tmp_path, D)
    assert (tmp_path / "cache" / f"{D}.raws.npz").is_file()
    fresh = load_raws(tmp_path, D, parsed_copy=False)
    _no_parsing(monkeypatch)
    again = load_raws(tmp_path, D)
    _assert_same(again, fresh)
    _assert_same(first, fresh)
    assert again.behavior["review"].dtype == object and np.isnan(again.behavior["rating"]).sum() == 1


def test_changed_bytes_are_parsed_again(tmp_path):
    _write(tmp_path)
    load_raws(tmp_path, D)
    _write(tmp_path, last_rating=2)
    ratings = load_raws(tmp_path, D).behavior["rating"]
    assert sorted(ratings[~np.isnan(ratings)].tolist()) == [2.0, 4.0]


def test_a_bad_edit_after_a_clean_load_is_still_reported(tmp_path):
    _write(tmp_path)
    load_raws(tmp_path, D)
    _write(tmp_path, last_rating=9)
    with pytest.raises(DataError) as info:
        load_raws(tmp_path, D)
    (problem,) = info.value.problems
    assert "_interaction.jsonl:3: behavior_features.rating: expected a number from 0 to 5, got 9" in problem


def test_a_damaged_copy_is_parsed_again_and_replaced(tmp_path, monkeypatch):
    _write(tmp_path)
    expected = load_raws(tmp_path, D)
    copy = tmp_path / "cache" / f"{D}.raws.npz"
    for damage in (b"not a zip file", copy.read_bytes()[: copy.stat().st_size // 2]):
        copy.write_bytes(damage)
        _assert_same(load_raws(tmp_path, D), expected)
    _no_parsing(monkeypatch)
    _assert_same(load_raws(tmp_path, D), expected)


def test_an_unwritable_cache_folder_only_costs_the_copy(tmp_path):
    _write(tmp_path)
    (tmp_path / "cache").write_text("a file where the folder would go")
    assert load_raws(tmp_path, D).n_interactions == 3
    assert not list(tmp_path.glob("cache*.tmp")) and (tmp_path / "cache").is_file()


def test_the_real_ml100k_reads_back_equal(ml100k_converted, tmp_path, monkeypatch):
    project, _ = ml100k_converted
    shutil.copytree(project / "raws", tmp_path / "raws")
    parsed = load_raws(tmp_path, "ml-100k", parsed_copy=False)
    load_raws(tmp_path, "ml-100k")
    _no_parsing(monkeypatch)
    again = load_raws(tmp_path, "ml-100k")
    _assert_same(again, parsed)
    assert again.n_interactions == 100_000 and again.summary() == parsed.summary()
