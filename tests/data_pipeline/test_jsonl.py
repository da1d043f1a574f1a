"""The one JSONL reader/writer: atomic writes, appends that survive a torn last line."""

from __future__ import annotations

import json

import pytest

from usermirrorer.data_pipeline.jsonl import JsonlAppender, done_keys, iter_jsonl, read_jsonl, write_jsonl
from usermirrorer.errors import DataError


def test_write_then_read_round_trip(tmp_path):
    path = tmp_path / "sub" / "a.jsonl"
    records = [{"id": i, "text": "café ✓"} for i in range(3)]
    assert write_jsonl(path, records) == 3
    assert read_jsonl(path) == records
    assert not (tmp_path / "sub" / "a.jsonl.tmp").exists()


def test_appender_cuts_a_torn_tail_and_resumes(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as out:
        out.write([{"id": 0}, {"id": 1}])
    with path.open("a") as fh:  # a crash in the middle of writing record 2
        fh.write('{"id": 2, "te')
    assert done_keys(path, lambda r: r["id"]) == {0, 1}
    with JsonlAppender(path) as out:
        out.write([{"id": 2}])
    assert [r["id"] for r in read_jsonl(path)] == [0, 1, 2]


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n[1, 2]\n{oops\n")
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"{path}:2: json: expected a JSON object, got list" in str(err.value)
    problems: list[str] = []
    assert [r for _, r in iter_jsonl(path, problems)] == [{"a": 1}]
    assert [p.split(": json:")[0] for p in problems] == [f"{path}:2", f"{path}:3"]


def test_non_utf8_line_is_a_data_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"title": "Mis\xe9rables"}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"{path}:2: json: not valid UTF-8" in str(err.value)
