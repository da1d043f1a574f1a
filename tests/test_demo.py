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


def test_demo_uses_a_trained_checkpoint_and_says_which(ml100k_project, tiny_model_dir, tmp_path, capsys):
    import json

    from usermirrorer.cli import main
    from usermirrorer.fidelity.workspace import FidelityPaths

    run = FidelityPaths(tmp_path).likelihood_ft("listwise")
    run.mkdir(parents=True)
    (run / "training.json").write_text(json.dumps({
        "loss": "listwise", "base_model": "smollm2-135m",
        "checkpoints": [{"examples": 8, "model_dir": str(tiny_model_dir), "seconds": 1.0}],
        "history": [{"examples": 8, "temperature": 7.5}]}))
    args = ["demo", "--project", str(ml100k_project), "--episodes", "1", "--steps", "1", "--agents", "random",
            "--no-live", "--trained-from"]
    assert main([*args, str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"the trained checkpoint {tiny_model_dir}" in out and "listwise loss, 8 train-user scenes" in out
    # the learned temperature is used, and "none of these" scores at the catalog quantile
    flat = " ".join(out.split())  # the console wraps long lines
    assert "softmax temperature 7.5 as trained" in flat and "QuantileOutsideOption(" in flat
    assert main([*args, str(tmp_path / "nothing-here"), "--model", "popularity"]) == 0
    assert "trained checkpoint" not in capsys.readouterr().out
