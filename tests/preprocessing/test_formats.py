"""The shared readers and the table builder the converters rely on."""

from __future__ import annotations

import gzip

import pytest

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.preprocessing.base import ConvertReport, SourceProblems
from usermirrorer.preprocessing.formats import (
    RawTables,
    clean_text,
    find_source_file,
    iter_csv,
    iter_records,
    parse_date,
)


def test_find_source_file_tries_gz_and_flat_layouts(tmp_path):
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(b"{}\n"))
    (tmp_path / "b.csv").write_text("x\n")
    assert find_source_file(tmp_path, "a.json", source_format="f").name == "a.json.gz"
    assert find_source_file(tmp_path, "sub/b.csv", source_format="f").name == "b.csv"
    assert find_source_file(tmp_path, "c.csv", source_format="f", required=False) is None
    with pytest.raises(ConfigError, match="lacks c.csv or d.csv.*expected FORMAT"):
        find_source_file(tmp_path, "c.csv", "d.csv", source_format="FORMAT")


def test_iter_records_json_and_python_literals(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{'a': True, 'b': None}\n\n[1, 2]\n{'a': \n")
    problems = SourceProblems()
    got = list(iter_records(path, problems, python_literal=True))
    assert got == [(1, {"a": True, "b": None})]
    assert len(problems) == 2
    assert problems.items[0].startswith(f"{path}:3: expected an object, got list")
    assert f"{path}:4: not valid a Python dict literal" in problems.items[1]
    gz = tmp_path / "y.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n'))
    assert [r["a"] for _, r in iter_records(gz, SourceProblems())] == [1, 2]


def test_iter_csv_quoted_newlines_line_numbers_and_broken_rows(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('id,text\n1,"two\nlines"\n2,plain\n3,cut\nrest,of,row\n')
    rows = list(iter_csv(path, ("id", "text"), SourceProblems()))
    assert [(line, row["id"], ok) for line, row, ok in rows] == [
        (2, "1", True), (4, "2", True), (5, "3", True), (6, "rest", False)]
    assert rows[0][1]["text"] == "two\nlines"
    with pytest.raises(DataError, match="missing column.*score"):
        list(iter_csv(path, ("id", "score"), SourceProblems()))


def test_parse_date_formats_and_zones():
    assert parse_date("2019-11-15", "%Y-%m-%d") == 1573776000
    assert parse_date("Mon Aug 21 04:28:15 -0700 2017", "%a %b %d %H:%M:%S %z %Y") == 1503314895
    assert parse_date("Soon..", "%Y-%m-%d", "%b %Y") is None
    assert parse_date("", "%Y") is None and parse_date(None, "%Y") is None


def test_clean_text_placeholders_html_and_cut():
    assert clean_text("UNKNOWN") == "" and clean_text("[]") == "" and clean_text(None) == ""
    assert clean_text("<b>Bold</b> &amp;\n  more") == "Bold & more"
    assert clean_text(["a", "b"]) == "a b"
    assert clean_text("one two three four", 9) == "one two…"


def test_raw_tables_links_counts_and_writes(tmp_path):
    report = ConvertReport("toy")
    tables = RawTables("toy", report)
    tables.add_item("i1", {"title": "One", "empty": ""})
    tables.add_item("i2", {"title": "Two"})
    tables.add_item("i1", {"title": "again"}, where="f:3")
    tables.add_item("i3", {"title": "unused"})
    tables.add_user("ghost", {"age": 3})
    tables.add_interaction("u1", "i1", 100, {"rating": 4})
    tables.add_interaction("u1", "i1", 100, {"rating": 4}, where="f:9")
    tables.add_interaction("u1", "i9", 200, {}, where="f:10")
    tables.add_interaction("u2", "i2", 50, {"rating": None})
    tables.write(tmp_path)
    counts = {r.rule: r.count for r in report.dropped.values()}
    assert counts == {"duplicate-item": 1, "duplicate-interaction": 1, "unknown-item": 1,
                      "user-without-interactions": 1, "item-without-interactions": 1}
    assert report.dropped["unknown-item"].examples == ["f:10"]
    ds = load_raws(tmp_path, "toy")
    assert ds.user_ids.tolist() == ["u1", "u2"] and ds.item_ids.tolist() == ["i1", "i2"]
    assert ds.item_description[0] == {"title": "One"}  # empty values are not descriptions
    assert ds.behavior_of(ds.user_rows(1).start) == {}


def test_raw_tables_refuses_to_write_nothing(tmp_path):
    tables = RawTables("toy", ConvertReport("toy"))
    tables.add_interaction("u", "missing", 1)
    with pytest.raises(DataError, match="no interactions.*unknown-item \\(1\\)"):
        tables.write(tmp_path)
