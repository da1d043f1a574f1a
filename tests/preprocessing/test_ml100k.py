"""ML-100K: the real files carried by recbole, and hand-written files in the same format."""

from __future__ import annotations

import time

import numpy as np
import pytest

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.preprocessing import get_converter
from usermirrorer.preprocessing.ml100k import recbole_ml100k_dir


@pytest.mark.slow
def test_real_ml100k_conversion(ml100k_converted):
    project, report = ml100k_converted
    assert (report.users, report.items, report.interactions) == (943, 1682, 100_000)
    assert report.n_repaired > 0 and report.n_dropped == 0
    # The dirty rows of the real file, each under its rule, with the line that fired it.
    counts = {rule: entry.count for rule, entry in report.repaired.items()}
    assert counts == {"placeholder-title": 1, "unknown-year": 1, "unknown-genre": 2,
                      "year-in-title": 1}
    assert report.repaired["year-in-title"].examples[0].endswith("release_year: 'V'")
    assert "ml-100k.item:" in report.repaired["placeholder-title"].examples[0]

    start = time.perf_counter()
    ds = load_raws(project, "ml-100k")
    assert time.perf_counter() - start < 30
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.user_description[ds.user_index["1"]] == {"age": 24, "gender": "male",
                                                       "occupation": "technician"}
    assert ds.user_features[ds.user_index["1"]]["zip_code"] == "85711"
    toy = ds.item_index["1"]
    assert ds.item_description[toy] == {"title": "Toy Story", "release_year": 1995,
                                        "genres": ["Animation", "Children's", "Comedy"]}
    assert ds.item_description[ds.item_index["12"]]["title"] == "The Usual Suspects"
    unknown = ds.item_index["267"]
    assert ds.item_description[unknown] == {"title": "(unknown title)"}
    assert ds.item_features[unknown]["release_year"] is None
    land = ds.item_features[ds.item_index["1412"]]
    assert land["release_year"] == 1995
    ratings = ds.behavior["rating"]
    assert set(np.unique(ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.summary()["first"] == "1997-09-20 03:05:10"
    assert ds.summary()["last"] == "1998-04-22 23:10:38"
    # Line numbers point back into the raw interaction file, not the sorted order.
    assert ds.inter_line.min() == 1 and ds.inter_line.max() == 100_000


def test_recbole_copy_is_found():
    folder = recbole_ml100k_dir()
    assert {p.name for p in folder.iterdir()} >= {"ml-100k.inter", "ml-100k.user", "ml-100k.item"}


def _write_atomic(folder, users=None, items=None, inters=None):
    folder.mkdir(parents=True, exist_ok=True)
    users = users if users is not None else [
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
        "1\t24\tM\ttechnician\t85711", "2\t53\tF\tother\t94043"]
    items = items if items is not None else [
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
        "1\tToy Story\t1995\tAnimation Children's Comedy", "2\tunknown\t\tunknown"]
    inters = inters if inters is not None else [
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        "1\t1\t5\t881250949", "2\t2\t3\t891717742", "2\t9\t4\t891717742"]
    files = {"ml-100k.user": users, "ml-100k.item": items, "ml-100k.inter": inters}
    for name, lines in files.items():
        (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


def test_source_override_with_rules(tmp_path):
    source = _write_atomic(tmp_path / "src")
    report = get_converter("ml-100k").run(source, tmp_path / "w")
    assert (report.users, report.items, report.interactions) == (2, 2, 2)
    assert report.dropped["unknown-item"].count == 1
    where = f"{source / 'ml-100k.inter'}:4: item_id: '9'"
    assert report.dropped["unknown-item"].examples == [where]
    assert {"placeholder-title", "unknown-year", "unknown-genre"} <= set(report.repaired)
    ds = load_raws(tmp_path / "w", "ml-100k")
    assert ds.item_description[1] == {"title": "(unknown title)"}


@pytest.mark.parametrize(
    ("which", "line", "expected"),
    [
        ("inters", "1\t1\t5", "ml-100k.inter:2: expected 4 fields (user_id, item_id, rating, "
                              "timestamp) separated by '\\t', got 3; missing from 'timestamp' on"),
        ("inters", "1\t1\tfive\t881250949",
         "ml-100k.inter:2: rating: expected a number, got 'five'"),
        ("inters", "1\t1\t5\t881250949000", "ml-100k.inter:2: timestamp: expected unix seconds "
                                             "between 1970 and 2100, got 881250949000.0; "
                                             "milliseconds? divide by 1000"),
        ("users", "1\t30\tF\twriter\t10001", "ml-100k.user:4: user_id: duplicate id '1' "
                                             "(first seen on line 2)"),
        ("users", "3\tthirty\tF\twriter\t10001", "ml-100k.user:4: age: expected an integer, "
                                                 "got 'thirty'"),
    ],
)
def test_bad_source_rows_name_file_line_field(tmp_path, which, line, expected):
    folder = _write_atomic(tmp_path / "src")
    path = folder / {"inters": "ml-100k.inter", "users": "ml-100k.user"}[which]
    lines = path.read_text().splitlines()
    if which == "inters":
        lines[1] = line
    else:
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        get_converter("ml-100k").run(folder, tmp_path / "w")
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert not (tmp_path / "w" / "raws").exists()  # nothing written on error


def test_empty_source_file(tmp_path):
    folder = _write_atomic(tmp_path / "src", inters=[])
    with pytest.raises(DataError, match=r"ml-100k.inter:1: empty file"):
        get_converter("ml-100k").run(folder, tmp_path / "w")


def test_missing_source_file(tmp_path):
    folder = _write_atomic(tmp_path / "src")
    (folder / "ml-100k.item").unlink()
    with pytest.raises(ConfigError, match=r"lacks ml-100k.item"):
        get_converter("ml-100k").run(folder, tmp_path / "w")
