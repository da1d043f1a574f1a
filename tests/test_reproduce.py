"""reproduce: profile overrides from the command line, and the stages up to the filter on real
ML-100K with the tiny random model, run twice (the second run resumes and redoes nothing)."""

from __future__ import annotations

import argparse
import json

import pytest

from usermirrorer import reproduce as rp
from usermirrorer import reproduce_command
from usermirrorer.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    reproduce_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["reproduce", "--project-path", "W", *argv])


def test_profile_overrides_are_typed_like_the_profile():
    profile = reproduce_command.profile_from_args(_args("--train-samples", "12", "--eval-modes", "direct", "--train-exposure", "2,4",
                                         "--max-prompt-tokens", "none", "--eval-sft", "true", "--strong-model", "x"))
    assert profile.name == "cpu-smoke"
    assert (profile.train_samples, profile.eval_modes, profile.train_exposure) == (12, ("direct",), (2, 4))
    assert profile.max_prompt_tokens is None and profile.eval_sft is True and profile.strong_model == "x"
    assert reproduce_command.profile_from_args(_args("--profile", "paper")).n_thoughts == 10
    with pytest.raises(ConfigError, match="--n-thoughts"):
        reproduce_command.profile_from_args(_args("--n-thoughts", "many"))
    with pytest.raises(ConfigError, match="no datasets"):
        rp.reproduce("W", rp.PROFILES["cpu-smoke"], [])


@pytest.mark.slow
def test_reproduce_until_filter_on_ml100k_then_resume(tmp_path, tiny_model_dir):
    model = str(tiny_model_dir)
    profile = rp.Profile(name="t", train_samples=12, eval_samples=4, train_exposure=(3, 4), embedder="hashing",
                         n_thoughts=3, max_thought_tokens=6, strong_model=model, weak_model=model,
                         predictor_model=model, base_model=model, dtype="float32", filtered_num=5)
    first = rp.reproduce(tmp_path, profile, ["ml-100k"], stop_after="filter")
    assert [s.stage for s in first.stages] == ["preprocess ml-100k", "scenes ml-100k", "decisions ml-100k/strong",
                                              "decisions ml-100k/weak", "probs ml-100k/strong", "probs ml-100k/weak",
                                              "filter"]
    pref = tmp_path / "datasets" / "t_pref.jsonl"
    records = [json.loads(x) for x in pref.read_text().splitlines()]
    assert 1 <= len(records) <= 5
    for rec in records:
        assert rec["chosen_behavior"] == rec["real_behavior"] != rec["rejected_behavior"]
        assert rec["messages_chosen"][:2] == rec["messages_rejected"][:2]
    for path in ("raws/ml-100k_interaction.jsonl", "datasets/ml-100k_train.jsonl", "datasets/ml-100k_eval.jsonl",
                 "datasets/ml-100k_eval_popmatched.jsonl", "decisions/ml-100k_decisions_weak.jsonl",
                 "probs/ml-100k_probs_strong.jsonl", "reproduce/t/summary.md"):
        assert (tmp_path / path).exists(), path
    before = {p: (tmp_path / p).read_bytes() for p in ("decisions/ml-100k_decisions_strong.jsonl",
                                                       "probs/ml-100k_probs_weak.jsonl", "datasets/t_pref.jsonl")}
    second = rp.reproduce(tmp_path, profile, ["ml-100k"], stop_after="filter")
    details = {s.stage: s.detail for s in second.stages}
    assert details["preprocess ml-100k"].startswith("skipped") and details["scenes ml-100k"].startswith("skipped")
    assert "0 written, 12 resumed" in details["decisions ml-100k/strong"]
    assert "0 written, 12 resumed" in details["probs ml-100k/weak"]
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
