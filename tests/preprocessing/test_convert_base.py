"""The converter contract: registry, report, and the shared source-reading helpers."""

from __future__ import annotations

import pytest

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.preprocessing.base import (
    Converter,
    ConvertReport,
    SourceProblems,
    converters,
    format_times,
    get_converter,
    iter_delimited,
    timestamp_from_unix,
)


def test_registry_discovers_modules():
    table = converters()
    assert list(table) == sorted(table)
    assert all(isinstance(c, Converter) for c in table.values())
    assert table["ml-100k"].needs_source is False and table["ml-1m"].needs_source is True
    assert get_converter("synthetic").default_options() == {
        "users": 1000, "items": 5000, "interactions": 50_000, "seed": 0}
    with pytest.raises(ConfigError, match="did you mean ml-100k"):
        get_converter("ml-10k")


def test_report_counts_rules_with_reasons_and_examples():
    report = ConvertReport("toy")
    for line in range(1, 6):
        report.repair("unknown-year", "no year: kept", f"f.dat:{line}: Title: 'x'")
    report.drop("unknown-item", "unknown movie: dropped", "r.dat:9: MovieID: '7'", n=3)
    assert report.n_repaired == 5 and report.n_dropped == 3
    assert report.repaired["unknown-year"].examples == [f"f.dat:{k}: Title: 'x'" for k in (1, 2, 3)]
    data = report.to_dict()
    assert data["dropped"] == {"unknown-item": {"count": 3, "reason": "unknown movie: dropped",
                                                "examples": ["r.dat:9: MovieID: '7'"]}}
    assert "5 repaired, 3 dropped" in repr(report)


def test_iter_delimited_reports_bad_lines(tmp_path):
    path = tmp_path / "x.dat"
    path.write_bytes(b"a::b::c\n\nshort::row\nok::\xff::z\n1::2::3::4\n")
    problems = SourceProblems()
    rows = list(iter_delimited(path, "::", problems, n_fields=3, encoding="utf-8",
                               field_names=("A", "B", "C")))
    assert rows == [(1, ["a", "b", "c"])]
    assert problems.items[0] == (f"{path}:3: expected 3 fields (A, B, C) separated by '::', got 2; "
                                 "missing from 'C' on; the line may be truncated or contain the "
                                 "separator")
    assert problems.items[1].startswith(f"{path}:4: not valid utf-8 text")
    assert problems.items[2].startswith(f"{path}:5: expected 3 fields")
    with pytest.raises(DataError, match="3 problem"):
        problems.raise_if_any("toy")
    # latin-1 decodes every byte
    latin = list(iter_delimited(path, "::", SourceProblems(), n_fields=3, encoding="latin-1"))
    assert latin[1] == (4, ["ok", "ÿ", "z"])


def test_timestamps():
    problems = SourceProblems()
    assert timestamp_from_unix(881250949, "f", 2, "ts", problems) == "1997-12-04 15:55:49"
    assert timestamp_from_unix(881250949000, "f", 3, "ts", problems) is None
    assert problems.items == ["f:3: ts: expected unix seconds between 1970 and 2100, got "
                              "881250949000; milliseconds? divide by 1000"]
    assert format_times([0, 881250949]) == ["1970-01-01 00:00:00", "1997-12-04 15:55:49"]
