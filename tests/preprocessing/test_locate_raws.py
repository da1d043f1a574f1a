"""Bundled datasets load from any directory: converted into the user cache on first use (#15)."""

from __future__ import annotations

import logging

from data_builders import inter, item, user, write_raw_files

from usermirrorer.preprocessing import cache_project, locate_raws


def test_a_bundled_dataset_is_converted_into_the_cache_once_with_one_log_line(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("USERMIRRORER_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.INFO, logger="usermirrorer.preprocessing"):
        first = locate_raws(empty, "ml-100k")
        again = locate_raws(empty, "ml-100k")
    assert first == again == cache_project() == tmp_path / "cache" / "demo-project"
    assert (first / "raws" / "ml-100k_interaction.jsonl").exists()
    assert list(empty.iterdir()) == []
    notes = [r.getMessage() for r in caplog.records if "converted the bundled copy" in r.getMessage()]
    assert len(notes) == 1 and str(first / "raws") in notes[0]


def test_raws_already_there_and_unbundled_datasets_stay_where_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("USERMIRRORER_CACHE", str(tmp_path / "cache"))
    write_raw_files(tmp_path, "ml-100k", [user("u1")], [item("i1")], [inter("u1", "i1")])
    assert locate_raws(tmp_path, "ml-100k") == tmp_path  # the user's own copy wins
    # A dataset that needs its original files (or is unknown) is not converted anywhere: the
    # loader then reports the missing raws and the preprocess command.
    assert locate_raws(tmp_path / "elsewhere", "ml-1m") == tmp_path / "elsewhere"
    assert locate_raws(tmp_path / "elsewhere", "my-shop") == tmp_path / "elsewhere"
    assert not (tmp_path / "cache" / "demo-project" / "raws").exists()
