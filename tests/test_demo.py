"""The `usermirrorer demo` command: a few recommenders against simulated ML-100K users."""

from __future__ import annotations

import pytest


def test_demo_command_runs_with_a_choice_model(ml100k_project, capsys):
    from usermirrorer.cli import main

    # (agents without the spectral embedding: its exact SVD costs seconds on a busy 2-core box)
    rc = main(
        [
            "demo",
            "--project",
            str(ml100k_project),
            "--model",
            "popularity",
            "--episodes",
            "1",
            "--steps",
            "2",
            "--no-live",
            "--agents",
            "random,popularity",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert (
        "simulated user" in out and "picked" in out and "recommender" in out and "popularity" in out
    )


@pytest.mark.slow
def test_demo_command_with_smollm2(ml100k_project, capsys):
    from usermirrorer.cli import main

    rc = main(
        [
            "demo",
            "--project",
            str(ml100k_project),
            "--episodes",
            "1",
            "--steps",
            "1",
            "--agents",
            "random,popularity",
            "--no-live",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "smollm2-135m" in out and "picked" in out
