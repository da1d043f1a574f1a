"""Each class of bad raw input gives an error naming file, line and field (load_raws)."""

from __future__ import annotations

import pytest
from data_builders import inter, item, user, write_raw_files

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.errors import DataError

D = "toy"


def _problems(tmp_path, users, items, interactions) -> list[str]:
    write_raw_files(tmp_path, D, users, items, interactions)
    with pytest.raises(DataError) as info:
        load_raws(tmp_path, D)
    return info.value.problems


def _good():
    users, items = [user("u1"), user("u2")], [item("i1"), item("i2")]
    return users, items, [inter("u1", "i1"), inter("u2", "i2")]


def test_valid_raws_load(tmp_path):
    ds = load_raws(write_raw_files(tmp_path, D, *_good()), D)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 2)


def test_truncated_line_names_file_line_and_json(tmp_path):
    users, items, inters = _good()
    inters.append('{"user_id": "u1", "item_id": "i2", "timest')
    problems = _problems(tmp_path, users, items, inters)
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'raws' / (D + '_interaction.jsonl')}:3: json:")
    assert "truncated" in problems[0]


def test_missing_key_names_the_key(tmp_path):
    users, items, inters = _good()
    items.append({"item_id": "i3", "item_features": {}})
    bad = inter("u1", "i1")
    del bad["timestamp"]
    inters.append(bad)
    problems = _problems(tmp_path, users, items, inters)
    assert any(p.endswith("_item_feature.jsonl:3: item_description: missing key; expected an "
                          "object ({} if empty)") for p in problems), problems
    assert any("_interaction.jsonl:3: timestamp: missing key" in p for p in problems), problems


def test_unknown_item_in_interactions(tmp_path):
    users, items, inters = _good()
    inters.append(inter("u2", "i404"))
    (problem,) = _problems(tmp_path, users, items, inters)
    assert "_interaction.jsonl:3: item_id: unknown item 'i404'" in problem
    assert f"{D}_item_feature.jsonl" in problem


def test_bad_timestamp(tmp_path):
    users, items, inters = _good()
    inters.append(inter("u1", "i2", "2020-13-45 99:00:00"))
    inters.append(inter("u2", "i1", "1998-04-22"))
    problems = _problems(tmp_path, users, items, inters)
    assert any("_interaction.jsonl:3: timestamp: expected 'YYYY-MM-DD HH:MM:SS', got "
               "'2020-13-45 99:00:00'" in p for p in problems), problems
    assert any("_interaction.jsonl:4: timestamp:" in p and "'1998-04-22'" in p for p in problems)


def test_duplicate_id(tmp_path):
    users, items, inters = _good()
    users.append(user("u1"))
    (problem,) = _problems(tmp_path, users, items, inters)
    assert "_user_feature.jsonl:3: user_id: duplicate id 'u1' (first seen on line 1)" in problem


def test_empty_file(tmp_path):
    users, items, _ = _good()
    (problem,) = _problems(tmp_path, users, items, [])
    assert problem.endswith("_interaction.jsonl: empty file; expected one interaction per line")


def test_all_problems_reported_at_once(tmp_path):
    users, items, inters = _good()
    users.append(user("u1"))
    inters += [inter("u9", "i1"), '{"broken"']
    problems = _problems(tmp_path, users, items, inters)
    assert len(problems) == 3
