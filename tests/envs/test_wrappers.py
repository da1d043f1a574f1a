"""Wrappers that turn score vectors / repeated slates from generic policies into valid slates."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.spaces import MultiDiscrete

from usermirrorer.envs import RecEnv, RecVectorEnv
from usermirrorer.envs.wrappers import DedupSlate, ScoreToSlate
from usermirrorer.errors import ConfigError, InvalidAction


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


def test_repeats_fill_is_the_env_argument_for_independent_slot_policies(small_ds, fake_model):
    env = RecEnv(small_ds, fake_model, 4, repeats="fill")
    assert type(env.action_space) is MultiDiscrete  # every vector of indices is a valid action
    env.reset(seed=0)
    popular = [i for i in env.fill_order.tolist() if i not in (3, 39, 5)]
    _, _, _, _, info = env.step(np.array([3, 3, 39, 3]))
    assert info["slate"].tolist() == [3, popular[0], 39, popular[1]]
    assert info["scene"]["impression_list"] == [str(small_ds.item_ids[i]) for i in info["slate"]]
    # the same slate as the wrapper's default (popularity) fallback
    wrapped = DedupSlate(RecEnv(small_ds, fake_model, 4))
    assert wrapped.action(np.array([3, 3, 39, 3])).tolist() == info["slate"].tolist()
    for _ in range(5):
        _, _, _, _, info = env.step(env.action_space.sample())
        assert len(set(info["slate"].tolist())) == 4
    # the vector env passes the argument to its sub-envs
    envs = RecVectorEnv(2, dataset=small_ds, model=fake_model, exposure_size=4, repeats="fill")
    envs.reset(seed=0)
    _, _, _, _, infos = envs.step(np.array([[3, 3, 39, 3], [7, 7, 7, 7]]))
    assert infos["slate"][0].tolist() == [3, popular[0], 39, popular[1]]
    assert len(set(infos["slate"][1].tolist())) == 4


def test_repeats_raise_says_how_to_fix_and_bad_values_are_refused(small_ds, fake_model):
    env = RecEnv(small_ds, fake_model, 4)
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match="repeats='fill'"):
        env.step(np.array([3, 3, 39, 5]))
    with pytest.raises(ConfigError, match="repeats must be one of"):
        RecEnv(small_ds, fake_model, 4, repeats="dedup")
