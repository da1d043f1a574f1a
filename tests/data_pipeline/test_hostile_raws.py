"""Raws and JSONL files a careless or hostile user might hand us (issue #18: items 6, 7, 12, 15)."""

from __future__ import annotations

import json
import os

import pytest
from data_builders import inter, item, user, write_raw_files

from usermirrorer.data_pipeline.jsonl import iter_jsonl, write_jsonl
from usermirrorer.data_pipeline.raw import load_raws, parse_time
from usermirrorer.errors import DataError

D = "toy"


def _problems(tmp_path, interactions) -> list[str]:
    write_raw_files(tmp_path, D, [user("u1")], [item("i1")], interactions)
    with pytest.raises(DataError) as info:
        load_raws(tmp_path, D)
    return info.value.problems


@pytest.mark.parametrize("stamp", ["1997-12-04 15:55+05", "1997-12-04T15:55:00", "1997-12-04 15:55:0Z",
                                   "1997-13-04 15:55:00"])
def test_timestamps_must_be_exactly_the_format(tmp_path, stamp):
    problems = _problems(tmp_path, [inter("u1", "i1"), inter("u1", "i1", stamp)])
    assert len(problems) == 1 and "_interaction.jsonl:2: timestamp:" in problems[0], problems
    assert repr(stamp) in problems[0]
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM:SS"):
        parse_time(stamp)


@pytest.mark.parametrize("rating", ["five", float("inf"), -3, 1e9, True])
def test_ratings_are_numbers_in_range_on_load(tmp_path, rating):
    bad = inter("u1", "i1")
    bad["behavior_features"] = {"rating": rating}
    line = json.dumps(bad).replace("Infinity", "1e999")  # JSON has no inf; an overflowing literal is one
    problems = _problems(tmp_path, [inter("u1", "i1"), line])
    assert len(problems) == 1 and "_interaction.jsonl:2:" in problems[0], problems
    assert "rating" in problems[0] or "out of range" in problems[0]


def test_null_rating_and_other_features_still_load(tmp_path):
    ok = inter("u1", "i1")
    ok["behavior_features"] = {"rating": None, "review": "great", "plays": 12}
    write_raw_files(tmp_path, D, [user("u1")], [item("i1")], [ok])
    assert load_raws(tmp_path, D).n_interactions == 1


def test_pathological_json_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n' + '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}\n" + '{"n": ' + "1" + "0" * 400 + "}\n")
    problems: list[str] = []
    assert [rec for _, rec in iter_jsonl(path, problems)] == [{"a": 1}]
    assert problems[0].startswith(f"{path}:2: json:") and "nested too deeply" in problems[0]
    assert problems[1].startswith(f"{path}:3: json:") and "out of range" in problems[1]
    with pytest.raises(DataError, match=":2: json:"):
        list(iter_jsonl(path))


def test_write_jsonl_leaves_no_temp_file_on_failure(tmp_path):
    target = tmp_path / "datasets" / "out.jsonl"

    def records():
        yield {"a": 1}
        raise KeyboardInterrupt  # SIGINT during the write

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(target, records())
    assert os.listdir(target.parent) == []
    with pytest.raises(TypeError):
        write_jsonl(target, [{"a": object()}])  # a failure inside the writer itself
    assert os.listdir(target.parent) == []
    target.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        write_jsonl(target, [{"a": 1}])
    assert sorted(os.listdir(target.parent)) == ["out.jsonl"]
