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


@pytest.mark.parametrize("text, value", [
    ('{"n": 1234567890123456789}', 1234567890123456789),  # 19 digits: read as is
    ('{"n": -1234567890123456789}', -1234567890123456789),
    ('{"x": 1.5e308}', 1.5e308),
    ('{"x": 2.5e-400}', 0.0),  # underflows to 0, like json.loads
    ('{"s": "12345678901234567890", "x": 0.1}', 0.1),  # a long digit run in a string is no number
])
def test_numbers_in_range_read_as_json_loads_reads_them(tmp_path, text, value):
    path = tmp_path / "r.jsonl"
    path.write_text(text + "\n", encoding="utf-8")
    ((_, record),) = list(iter_jsonl(path))
    assert record == json.loads(text) and value in record.values()


@pytest.mark.parametrize("text", ['{"n": 12345678901234567890}', '{"x": 1e309}', '{"x": -2E+400}'])
def test_out_of_range_numbers_are_refused_with_file_and_line(tmp_path, text):
    path = tmp_path / "r.jsonl"
    path.write_text('{"ok": 1}\n' + text + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        list(iter_jsonl(path))
    assert info.value.problems[0].startswith(f"{path}:2: json:") and "out of range" in info.value.problems[0]
