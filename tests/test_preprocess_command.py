"""`usermirrorer preprocess`: --list, --help, conversions and errors through the real CLI."""

from __future__ import annotations

import pytest
from data_builders import ML1M_FIXTURE

from usermirrorer.cli import main
from usermirrorer.data_pipeline.raw import load_raws


def test_list_shows_every_converter(capsys):
    from usermirrorer.preprocessing import converters

    assert main(["preprocess", "--list"]) == 0
    out = capsys.readouterr().out
    for name in converters():
        assert name in out
    assert {"ml-100k", "ml-1m", "synthetic"} <= set(converters())
    assert "MovieLens-1M" in out and "MovieStrategy" in out and "--users" in out


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["preprocess", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--source", "--project-path", "--list", "--users", "--seed", "./workspace"):
        assert flag in out


def test_convert_ml1m_fixture(tmp_path, capsys):
    assert main(["preprocess", "ml-1m", "--source", str(ML1M_FIXTURE),
                 "--project-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "unknown-year" in out and "validated" in out
    assert load_raws(tmp_path, "ml-1m").n_interactions == 16


def test_convert_synthetic(tmp_path, capsys):
    argv = ["preprocess", "synthetic", "--users", "20", "--items", "50", "--interactions", "200",
            "--seed", "3", "--project-path", str(tmp_path)]
    assert main(argv) == 0
    assert "seed: 3" in capsys.readouterr().out
    ds = load_raws(tmp_path, "synthetic")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (20, 50, 200)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["preprocess", "ml-1mm"], "did you mean ml-1m"),
     (["preprocess"], "name a DATASET"),
     (["preprocess", "ml-1m"], "needs --source DIR"),
     (["preprocess", "ml-1m", "--source", ".", "--users", "3"],
      "--users is an option of 'synthetic'"),
     (["preprocess", "synthetic", "--users", "10", "--interactions", "5"],
      "every user needs at least one interaction")],
)
def test_errors_are_one_line_messages(argv, message, capsys, tmp_path):
    assert main(argv + ["--project-path", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("usermirrorer preprocess: error:") and message in err
    assert "Traceback" not in err
