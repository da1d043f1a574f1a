"""RecEnv / RecVectorEnv against careless or hostile callers (issue #18: items 6, 10, 11, 20-22, 25)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

from usermirrorer.envs import (
    ENV_ID,
    RecVectorEnv,
    registration,  # noqa: F401
)
from usermirrorer.errors import ConfigError, InvalidAction


def make(ds, model, **kw):
    kw.setdefault("exposure_size", 4)
    return gym.make(ENV_ID, dataset=ds, model=model, **kw).unwrapped


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["user_id", "u3"], "reset options must be a dict"),
        ({"start_time": float("nan")}, "start_time"),
        ({"start_time": 1e30}, "start_time"),
        ({"start_time": [1, 2]}, "start_time"),
        ({"start_time": -(10**12)}, "start_time"),
        ({"start_time": "1997-12-04 15:55+05"}, "YYYY-MM-DD HH:MM:SS"),
        ({"start_time": "1997-12-04 15:55"}, "YYYY-MM-DD HH:MM:SS"),
    ],
)
def test_bad_reset_options_are_config_errors(small_ds, fake_model, options, fragment):
    env = make(small_ds, fake_model)
    with pytest.raises(ConfigError, match=fragment):
        env.reset(seed=0, options=options)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"history_window": 0}, "history_window must be an integer >= 1"),
        ({"history_window": -2}, "history_window must be an integer >= 1"),
        ({"users": "123"}, "users must be a list of user ids"),
    ],
)
def test_history_window_and_users_are_checked(small_ds, fake_model, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make(small_ds, fake_model, **kwargs)


def test_step_after_the_episode_ended_needs_reset(small_ds, fake_model):
    env = make(small_ds, fake_model, max_steps=1)
    env.reset(seed=0)
    *_, truncated, _ = env.step(np.arange(4))
    assert truncated
    with pytest.raises(gym.error.ResetNeeded, match=r"call env.reset\(\)"):
        env.step(np.arange(4, 8))
    env.reset(seed=1)
    env.step(np.arange(4))  # a reset starts a fresh episode


def test_out_of_range_slate_is_shown_as_given(small_ds, fake_model):
    env = make(small_ds, fake_model)
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match=r"1e\+20") as err:
        env.step(np.array([1e20, 1, 2, 3]))
    assert "-9223372036854775808" not in str(err.value)
    with pytest.raises(InvalidAction, match=r"100000000000000000000"):
        env.step([10**20, 1, 2, 3])


def test_reward_returning_a_non_number_names_the_reward(small_ds, fake_model):
    def sparkle(outcome):
        return "lots"

    env = make(small_ds, fake_model, reward=sparkle)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"reward function 'sparkle' returned 'lots'"):
        env.step(np.arange(4))


def test_vector_step_is_all_or_nothing_when_a_reward_raises(small_ds, fake_model):
    calls = {"n": 0, "fail": True}

    def flaky(outcome):
        calls["n"] += 1
        if calls["fail"] and calls["n"] == 3:  # the third sub-env's reward
            raise RuntimeError("reward service down")
        return 1.0

    vec = RecVectorEnv(num_envs=4, dataset=small_ds, model=fake_model, exposure_size=4, reward=flaky)
    vec.reset(seed=5)
    before = [(env._steps, list(env._history_items), env.np_random.bit_generator.state) for env in vec.envs]
    actions = np.stack([np.arange(4) + 4 * i for i in range(4)])
    with pytest.raises(RuntimeError, match="reward service down"):
        vec.step(actions)
    after = [(env._steps, list(env._history_items), env.np_random.bit_generator.state) for env in vec.envs]
    assert after == before  # no sub-env moved, no generator advanced
    calls["fail"] = False
    obs, *_ = vec.step(actions)
    assert obs["step"].tolist() == [1, 1, 1, 1]  # the retry steps each sub-env once

    reference = RecVectorEnv(num_envs=4, dataset=small_ds, model=fake_model, exposure_size=4, reward=lambda o: 1.0)
    reference.reset(seed=5)
    ref_obs, *_ = reference.step(actions)
    assert data_equivalence(obs, ref_obs)


def test_vector_errors_name_the_sub_env_and_ragged_batches(small_ds, fake_model):
    vec = RecVectorEnv(num_envs=3, dataset=small_ds, model=fake_model, exposure_size=4)
    vec.reset(seed=0)
    actions = np.stack([np.arange(4), np.arange(4, 8), np.array([9, 9, 1, 2])])
    with pytest.raises(InvalidAction, match=r"^sub-env 2: .*repeats item"):
        vec.step(actions)
    with pytest.raises(InvalidAction, match="ragged"):
        vec.step([[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10]])
