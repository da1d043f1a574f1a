"""Each converter on a fixture written in its dataset's original format, dirty record included."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from domain_sources import FIXTURES, SOURCES

from usermirrorer.data_pipeline.raw import load_raws, parse_time
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.preprocessing.base import converters, get_converter

# dataset -> (users, items, interactions, rules that fired: {rule: count}, repaired + dropped)
EXPECTED = {
    "mind": (4, 10, 16, {"unknown-news-in-impression": 1, "history-before-log": 8,
                         "unlabelled-impression": 1}),
    "steam": (3, 6, 12, {"no-release-date": 1, "game-without-id": 1, "posted-without-year": 1}),
    "amazon-beauty": (3, 8, 18, {"no-release-date": 1, "unknown-item": 1,
                                 "duplicate-interaction": 1}),
    "amazon-fashion": (3, 7, 16, {"no-release-date": 1}),
    "amazon-office": (3, 7, 16, {"unknown-item": 1}),
    "amazon-grocery": (3, 7, 16, {"duplicate-interaction": 1}),
    "goodreads": (3, 6, 13, {"no-publication-year": 1, "unknown-item": 1}),
    "lastfm": (4, 8, 18, {"clock-error-timestamp": 1, "never-tagged": 1,
                          "tagged-not-listened": 1}),
    "kuairec": (3, 7, 15, {"broken-caption-row": 2, "no-time": 1, "below-watch-ratio": 6}),
    "mobilerec": (3, 6, 13, {"time-from-date": 2, "unknown-item": 1}),
}


def test_every_domain_converter_is_registered():
    assert set(SOURCES) <= set(converters())
    for name in SOURCES:
        assert get_converter(name).needs_source


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_converter_counts_and_rules(converted, dataset):
    project, reports = converted
    report = reports[dataset]
    users, items, interactions, rules = EXPECTED[dataset]
    assert (report.users, report.items, report.interactions) == (users, items, interactions)
    fired = {r.rule: r.count for r in [*report.repaired.values(), *report.dropped.values()]}
    assert fired == rules
    for entry in [*report.repaired.values(), *report.dropped.values()]:
        assert entry.reason
    ds = load_raws(project, dataset)  # validates ids, keys and timestamps
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (users, items, interactions)


def test_mind_impressions_hold_the_click_and_known_news(converted):
    project, _ = converted
    ds = load_raws(project, "mind")
    impressions = ds.behavior["impression"]
    logged = [r for r in range(ds.n_interactions) if isinstance(impressions[r], list)]
    assert len(logged) == 8  # one per click in the 7 labelled impressions (one has two)
    for row in logged:
        shown = impressions[row]
        assert ds.item_ids[ds.inter_item[row]] in shown
        assert all(news in ds.item_index for news in shown)
        assert "N9999" not in shown
    # Two clicks in one impression: each keeps the unclicked news, not the other click.
    both = [impressions[r] for r in logged if ds.behavior["impression_id"][r] == "3"]
    assert sorted(map(sorted, both)) == [["N1002", "N1003", "N1007"], ["N1002", "N1007", "N1010"]]
    # History clicks sit just before the user's first impression, in order.
    u = ds.user_index["U201"]
    rows = ds.user_rows(u)
    assert [ds.item_ids[i] for i in ds.inter_item[rows][:3]] == ["N1001", "N1006", "N1004"]
    assert ds.inter_time[rows.start + 2] == parse_time("2019-11-11 09:05:11")


def test_mind_history_skip(tmp_path):
    report = get_converter("mind").run(FIXTURES / "mind", tmp_path, {"history": "skip"})
    assert report.interactions == 8 and "history-before-log" not in report.repaired
    with pytest.raises(ConfigError, match="--history"):
        get_converter("mind").run(FIXTURES / "mind", tmp_path, {"history": "sometimes"})


def test_steam_joins_play_time_and_parses_python_literals(converted):
    project, _ = converted
    ds = load_raws(project, "steam")
    row = ds.user_rows(ds.user_index["lanternfan88"]).start
    assert ds.item_ids[ds.inter_item[row]] == "410060"
    assert ds.behavior_of(row)["hours_played"] == pytest.approx(1930 / 60, abs=0.05)
    assert ds.behavior_of(row)["recommend"] is True
    # The free-to-play price stays words; numeric prices get a currency.
    prices = {d["title"]: d["price"] for d in ds.item_description}
    assert prices["Skyline Arena"] == "Free To Play" and prices["Hollow Lantern"] == "$14.99"


def test_steam_without_optional_items_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("australian_user_reviews.json", "steam_games.json"):
        with open(FIXTURES / "steam" / name, "rb") as fh, gzip.open(src / f"{name}.gz", "wb") as out:
            out.write(fh.read())  # gzipped, as the UCSD page serves them
    report = get_converter("steam").run(src, tmp_path / "w")
    assert report.interactions == 12
    ds = load_raws(tmp_path / "w", "steam")
    assert "hours_played" not in ds.behavior


def test_amazon_release_and_ms_timestamps(converted):
    project, _ = converted
    ds = load_raws(project, "amazon-beauty")
    i = ds.item_index["B07BEAUTY1"]
    assert ds.item_features[i]["release_time"] == parse_time("2019-03-05 00:00:00")
    assert ds.inter_time.min() == parse_time("2020-05-01 10:25:12")  # 1588328712345 ms
    assert "price" not in ds.item_description[ds.item_index["B07BEAUTY3"]]  # price null


def test_amazon_category_option_reads_another_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(FIXTURES / "amazon" / "Office_Products.jsonl", src / "Beauty_and_Personal_Care.jsonl")
    shutil.copy(FIXTURES / "amazon" / "meta_Office_Products.jsonl",
                src / "meta_Beauty_and_Personal_Care.jsonl")
    report = get_converter("amazon-beauty").run(src, tmp_path, {"category": "Beauty_and_Personal_Care"})
    assert report.dataset == "amazon-beauty" and report.interactions == 16
    with pytest.raises(ConfigError, match="All_Beauty.jsonl"):
        get_converter("amazon-beauty").run(src, tmp_path)


def test_goodreads_dates_shelves_and_authors(converted):
    project, _ = converted
    ds = load_raws(project, "goodreads")
    book = ds.item_description[ds.item_index["9001"]]
    assert book["author"] == "Marisol Vega"  # the illustrator is not the author
    assert book["shelves"] == ["poetry", "sea", "contemporary"]  # to-read etc. are not topics
    assert "published" not in ds.item_description[ds.item_index["9004"]]
    # 'Sat Jan 10 08:12:44 -0800 2015' is 16:12:44 UTC
    assert parse_time("2015-01-10 16:12:44") in set(ds.inter_time.tolist())
    shelves = {ds.behavior_of(r)["shelf"] for r in range(ds.n_interactions)}
    assert shelves == {"read", "to-read"}


def test_goodreads_genre_choice(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "goodreads", src)
    shutil.copy(src / "goodreads_interactions_poetry.json.gz", src / "goodreads_interactions_comics.json.gz")
    with pytest.raises(ConfigError, match="--genre"):
        get_converter("goodreads").run(src, tmp_path)
    assert get_converter("goodreads").run(src, tmp_path, {"genre": "poetry"}).interactions == 13


def test_lastfm_latin1_tags_friends_and_dating(converted):
    project, _ = converted
    ds = load_raws(project, "lastfm")
    air = ds.item_description[ds.item_index["53"]]
    assert "électronique" in air["tags"]  # tags.dat is Latin-1
    assert ds.user_features[ds.user_index["2"]]["friends"] == ["3", "5"]
    # An artist is dated by the user's first valid tag; the 1956 tag is ignored.
    rows = ds.user_rows(ds.user_index["2"])
    assert ds.inter_time[rows.start] == parse_time("2009-01-01 00:00:00")
    assert "58" not in {ds.item_ids[i] for i in ds.inter_item[rows]}


def test_kuairec_threshold_and_options(converted, tmp_path):
    project, _ = converted
    ds = load_raws(project, "kuairec")
    assert np.all(ds.behavior["watch_ratio"] >= 2.0)
    assert ds.item_description[ds.item_index["103"]]["title"] == "猫咪第一次见雪"  # caption UNKNOWN
    report = get_converter("kuairec").run(FIXTURES / "kuairec", tmp_path,
                                          {"matrix": "small", "min_watch_ratio": 0.0})
    assert report.interactions == 7 and report.notes["matrix"] == "small_matrix.csv"


def test_mobilerec_repairs_time_from_date(converted):
    project, _ = converted
    ds = load_raws(project, "mobilerec")
    rows = ds.user_rows(ds.user_index["smlNgCSD1z66dtpP"])
    times = {ds.item_ids[i]: t for i, t in zip(ds.inter_item[rows], ds.inter_time[rows])}
    assert times["com.wunderground.android.weather"] == parse_time("2020-05-08 00:00:00")
    wiki = ds.user_rows(ds.user_index["shqoc6X1fcJRLEmx"])
    reviews = [ds.behavior_of(r).get("review", "") for r in range(wiki.start, wiki.stop)]
    assert any('"offline" mode broken after the last release' in r for r in reviews)


def test_missing_source_file_names_what_is_expected(tmp_path):
    with pytest.raises(ConfigError, match="behaviors.tsv"):
        get_converter("mind").run(tmp_path, tmp_path)


def test_malformed_line_is_an_error_naming_file_and_line(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "lastfm", src)
    with open(src / "user_artists.dat", "a") as fh:
        fh.write("7\t51\n")  # truncated line
    with pytest.raises(DataError, match=r"user_artists.dat:21: expected 3 fields"):
        get_converter("lastfm").run(src, tmp_path)


def test_preprocess_list_shows_every_dataset_with_its_format(capsys, monkeypatch):
    from usermirrorer.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # one table row per line, cells unwrapped
    assert main(["preprocess", "--list"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in SOURCES:
        assert name in out
    for fragment in ("behaviors.tsv", "australian_user_reviews", "meta_<", "goodreads_books",
                     "user_artists.dat", "big_matrix.csv", "mobilerec_final.csv"):
        assert fragment.split("<")[0] in out
