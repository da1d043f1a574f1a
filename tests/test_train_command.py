"""``usermirrorer train`` end to end on the real ML-100K with the tiny model (the tiny profile)."""

from __future__ import annotations

import json

import torch

from usermirrorer.cli import build_parser, main
from usermirrorer.fidelity.workspace import FidelityPaths, load_likelihood_ft_manifests


def test_train_on_ml100k_writes_checkpoints_of_train_users_only(ml100k_project, capsys):
    threads = torch.get_num_threads()
    try:
        code = main(["train", "--profile", "tiny", "--project-path", str(ml100k_project), "--examples", "12",
                     "--curve", "6", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    out = capsys.readouterr().out
    assert "trained tiny-random (next-item) on 12 scenes" in out and "usermirrorer bench fidelity" in out
    (manifest,) = load_likelihood_ft_manifests(ml100k_project)
    split = json.loads(FidelityPaths(ml100k_project).split.read_text())
    assert manifest["trained_user_ids"] and not set(manifest["trained_user_ids"]) & set(split["eval_users"])
    assert [c["examples"] for c in manifest["checkpoints"]] == [6, 12]
    assert manifest["examples_per_second"] > 0 and manifest["flops_per_example"] > 0
    # a re-run with the same options finds the run finished and trains nothing more
    code = main(["train", "--profile", "tiny", "--project-path", str(ml100k_project), "--examples", "12",
                 "--curve", "6", "--no-progress"])
    assert code == 0 and json.loads((FidelityPaths(ml100k_project).likelihood_ft("next-item") / "training.json")
                                    .read_text())["train_seconds"] == manifest["train_seconds"]
    torch.set_num_threads(threads)


def test_train_help_names_the_losses_and_the_outputs():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "next-item" in text and "listwise" in text and "training.json" in text and "--fresh" in text


def test_residual_training_on_ml100k_takes_the_log_only_pool_as_offsets(ml100k_project, capsys):
    """``--loss residual`` fits the benchmark's log-only gated pool on train users first (real
    ML-100K, MiniLM content scores) and trains on top of its log-probabilities."""
    import math

    threads = torch.get_num_threads()
    try:
        code = main(["train", "--profile", "tiny", "--project-path", str(ml100k_project), "--loss", "residual",
                     "--examples", "8", "--curve", "4", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0 and "trained tiny-random (residual) on 8 scenes" in capsys.readouterr().out
    (manifest,) = [m for m in load_likelihood_ft_manifests(ml100k_project) if m["loss"] == "residual"]
    offsets = manifest["offset_model"]
    assert offsets["pool_fit_scenes"] == 600 and offsets["fit"]["scenes"] == 600
    # four members, each weight a + b x popularity spread
    assert len(offsets["weights"]) == 8 and "MNL × spread(popularity)" in offsets["fit"]["weights"]
    assert offsets["fit"]["nll"] < math.log(5)  # the log-only pool beats chance on its own fit scenes
    assert [c["examples"] for c in manifest["checkpoints"]] == [4, 8]
