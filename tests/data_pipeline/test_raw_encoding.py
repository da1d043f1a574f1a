"""A UTF-8 byte-order mark at the start of a raw file is benign: stripped, counted, loaded."""

from __future__ import annotations

import codecs

from data_builders import inter, item, user, write_raw_files

from usermirrorer.data_pipeline.jsonl import has_bom, iter_jsonl
from usermirrorer.data_pipeline.raw import load_raws, raw_paths

D = "toy"


def _prepend_bom(path) -> None:
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())


def test_a_leading_bom_is_stripped_counted_and_the_raws_load(tmp_path):
    users = [user("u1"), user("u2")]
    items = [item("i1"), item("i2")]
    interactions = [inter("u1", "i1"), inter("u1", "i2"), inter("u2", "i2")]
    root = write_raw_files(tmp_path, D, users, items, interactions)
    paths = raw_paths(root, D)
    # What Excel's "CSV UTF-8" / Notepad write: the BOM sits before the first record of a file.
    _prepend_bom(paths.users)
    _prepend_bom(paths.interactions)
    assert has_bom(paths.users) and not has_bom(paths.items)

    ds = load_raws(root, D)

    # The first user (whose id would read '\ufeffu1' if the BOM were kept) and all of their
    # interactions are there: nothing cascades into "unknown user".
    assert ds.user_ids.tolist() == ["u1", "u2"]
    assert ds.n_interactions == 3
    assert ds.user_rows(ds.user_index["u1"]).stop - ds.user_rows(ds.user_index["u1"]).start == 2
    assert ds.byte_order_marks == (paths.users.name, paths.interactions.name)
    assert ds.summary()["byte_order_marks_stripped"] == 2
    assert "byte-order mark stripped from toy_user_feature.jsonl, toy_interaction.jsonl" in repr(ds)


def test_files_without_a_bom_report_none_and_a_bom_only_counts_at_the_start(tmp_path):
    root = write_raw_files(tmp_path, D, [user("u1")], [item("i1")], [inter("u1", "i1")])
    ds = load_raws(root, D)
    assert ds.byte_order_marks == () and ds.summary()["byte_order_marks_stripped"] == 0
    assert "byte-order mark" not in repr(ds)

    # Only the file's first bytes are a byte-order mark; one before a later line is reported.
    path = tmp_path / "later.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b'{"a": 1}\n' + codecs.BOM_UTF8 + b'{"a": 2}\n')
    problems: list[str] = []
    assert [record for _, record in iter_jsonl(path, problems)] == [{"a": 1}]
    assert len(problems) == 1 and ":2: json:" in problems[0]
