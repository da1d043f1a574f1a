"""Wrappers that turn score vectors / repeated slates from generic policies into valid slates."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.envs import RecEnv
from usermirrorer.envs.wrappers import DedupSlate, ScoreToSlate
from usermirrorer.errors import InvalidAction


def test_score_to_slate_takes_top_k_unseen(small_ds, fake_model):
    env = ScoreToSlate(RecEnv(small_ds, fake_model, 4, history_size=30))
    obs, _ = env.reset(seed=0)
    seen = set(obs["history"][obs["history"] >= 0].tolist())
    scores = np.linspace(1, -1, small_ds.n_items).astype(np.float32)  # item 0 best
    obs, _, _, _, info = env.step(scores)
    expected = [i for i in range(small_ds.n_items) if i not in seen][:4]
    assert info["slate"].tolist() == expected
    for _ in range(3):
        env.step(env.action_space.sample())
    with pytest.raises(InvalidAction, match="item scores"):
        env.step(np.zeros(3))


def test_dedup_slate_fills_repeats_from_the_fallback(small_ds, fake_model):
    env = DedupSlate(RecEnv(small_ds, fake_model, 4), fallback=np.arange(small_ds.n_items)[::-1])
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([3, 3, 39, 5]))
    assert info["slate"].tolist() == [3, 38, 39, 5]
    valid = np.array([7, 8, 9, 10])
    assert env.action(valid).tolist() == valid.tolist()
    for _ in range(5):
        env.step(env.action_space.sample())  # plain MultiDiscrete samples may repeat
