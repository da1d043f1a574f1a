"""ML-1M: the fixture written in the original release format (latin-1, '::', code tables)."""

from __future__ import annotations

import shutil

import pytest
from data_builders import ML1M_FIXTURE

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.preprocessing import get_converter


def test_fixture_is_in_the_original_format():
    raw = (ML1M_FIXTURE / "movies.dat").read_bytes()
    assert "Misérables".encode("latin-1") in raw  # latin-1, not UTF-8
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    first = (ML1M_FIXTURE / "ratings.dat").read_text(encoding="latin-1").splitlines()[0]
    assert first.count("::") == 3


def test_convert_fixture(tmp_path):
    report = get_converter("ml-1m").run(ML1M_FIXTURE, tmp_path)
    assert (report.users, report.items, report.interactions) == (5, 7, 16)
    assert report.n_dropped == 0
    assert report.repaired["unknown-year"].count == 1  # the one dirty row
    assert report.repaired["unknown-year"].examples == [
        f"{ML1M_FIXTURE / 'movies.dat'}:7: Title: 'Contender'"]
    ds = load_raws(tmp_path, "ml-1m")
    assert ds.user_description[ds.user_index["1"]] == {
        "age": "Under 18", "gender": "female", "occupation": "K-12 student"}
    assert ds.user_features[ds.user_index["2"]] == {
        "age": "56+", "gender": "male", "occupation": "self-employed", "age_code": 56,
        "occupation_code": 16, "zip_code": "70072"}
    mis = ds.item_index["73"]
    assert ds.item_description[mis] == {"title": "Les Misérables", "release_year": 1995,
                                        "genres": ["Drama", "Musical"]}
    assert ds.item_features[mis]["original_title"] == "Misérables, Les (1995)"
    assert ds.item_description[ds.item_index["29"]]["title"] == "The City of Lost Children"
    assert ds.item_features[ds.item_index["3952"]]["release_year"] is None
    assert ds.summary()["first"] == "2000-12-31 06:29:40"
    rows = ds.user_rows(ds.user_index["1"])
    assert ds.behavior["rating"][rows].tolist() == [4.0, 3.0, 5.0]  # sorted by time


def _copy_fixture(tmp_path):
    folder = tmp_path / "ml-1m"
    shutil.copytree(ML1M_FIXTURE, folder)
    return folder


def _append(path, text):
    with path.open("ab") as fh:
        fh.write(text.encode("latin-1"))


def test_unknown_ids_are_dropped_and_counted(tmp_path):
    folder = _copy_fixture(tmp_path)
    _append(folder / "ratings.dat", "1::999::4::978824300\n9::1::4::978824300\n")
    report = get_converter("ml-1m").run(folder, tmp_path / "w")
    assert report.interactions == 16
    where = f"{folder / 'ratings.dat'}:17: MovieID: '999'"
    assert report.dropped["unknown-item"].examples == [where]
    assert report.dropped["unknown-user"].count == 1


def test_unknown_codes_are_repaired_and_counted(tmp_path):
    folder = _copy_fixture(tmp_path)
    _append(folder / "users.dat", "6::X::30::99::12345\n")
    report = get_converter("ml-1m").run(folder, tmp_path / "w")
    assert {r: e.count for r, e in report.repaired.items()} == {
        "unknown-gender": 1, "unknown-age-code": 1, "unknown-occupation-code": 1,
        "unknown-year": 1}
    ds = load_raws(tmp_path / "w", "ml-1m")
    assert ds.user_description[ds.user_index["6"]] == {}


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("ratings.dat", "1::2::4\n", "ratings.dat:17: expected 4 fields (UserID, MovieID, Rating, "
                                     "Timestamp) separated by '::', got 3; missing from "
                                     "'Timestamp' on"),
        ("ratings.dat", "1::2::4::yesterday\n", "ratings.dat:17: Timestamp: expected an integer, "
                                                "got 'yesterday'"),
        ("ratings.dat", "1::2::4::-5\n", "ratings.dat:17: Timestamp: expected unix seconds "
                                         "between 1970 and 2100, got -5"),
        ("ratings.dat", "1::2::9::978824300\n", "ratings.dat:17: Rating: expected 1 to 5 stars"),
        ("movies.dat", "73::Another Title (2001)::Drama\n",
         "movies.dat:8: MovieID: duplicate id '73' (first seen on line 4)"),
        ("users.dat", "7::M::twenty::1::12345\n", "users.dat:6: Age: expected an integer, got "
                                                  "'twenty'"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, file, text, expected):
    folder = _copy_fixture(tmp_path)
    _append(folder / file, text)
    with pytest.raises(DataError) as info:
        get_converter("ml-1m").run(folder, tmp_path / "w")
    assert len(info.value.problems) == 1
    assert expected in info.value.problems[0]
    assert info.value.problems[0].startswith(str(folder / file))


def test_empty_file(tmp_path):
    folder = _copy_fixture(tmp_path)
    (folder / "ratings.dat").write_bytes(b"")
    with pytest.raises(DataError, match=r"ratings.dat: no ratings"):
        get_converter("ml-1m").run(folder, tmp_path / "w")


def test_needs_source(tmp_path):
    with pytest.raises(ConfigError, match="needs --source DIR"):
        get_converter("ml-1m").run(None, tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        get_converter("ml-1m").run(tmp_path / "nope", tmp_path)
    with pytest.raises(ConfigError, match="lacks users.dat, movies.dat, ratings.dat"):
        get_converter("ml-1m").run(tmp_path, tmp_path)
