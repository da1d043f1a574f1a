"""RecVectorEnv: make_vec entry point, batched spaces, one simulator call per step, and exactly
the single envs' trajectories under the same seeds (autoreset included)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from usermirrorer.envs import registration  # noqa: F401
from usermirrorer.envs import ENV_ID, RecVectorEnv, SlateSpace
from usermirrorer.errors import InvalidAction


def single_trajectories(kwargs, seed, actions, num_envs):
    """What SyncVectorEnv (next-step autoreset) would produce from independent single envs."""
    out = []
    for i in range(num_envs):
        env = gym.make(ENV_ID, **kwargs).unwrapped
        obs, _ = env.reset(seed=seed + i)
        steps, done = [(obs, None)], False
        for a in actions:
            if done:
                obs, info = env.reset()
                step = (obs, 0.0, False, False, None)
            else:
                obs, reward, term, trunc, info = env.step(a[i])
                step = (obs, reward, term, trunc, info["probs"])
            steps.append(step)
            done = step[2] or step[3]
        out.append(steps)
    return out


def test_vector_env_equals_single_envs_under_same_seeds(small_ds, fake_model):
    kwargs = dict(
        dataset=small_ds,
        model=fake_model,
        exposure_size=4,
        allow_skip=True,
        patience=1,
        max_steps=4,
    )
    n, seed = 3, 11
    rng = np.random.default_rng(5)
    actions = [
        np.stack([rng.choice(small_ds.n_items, 4, replace=False) for _ in range(n)])
        for _ in range(14)
    ]

    envs = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(envs, RecVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = envs.reset(seed=seed)
    fake_model.calls.clear()
    vector = [obs]
    for a in actions:
        obs, reward, term, trunc, info = envs.step(a)
        vector.append((obs, reward, term, trunc, info))
    # one simulator call per vector step, holding every sub-env that stepped
    assert len(fake_model.calls) == len(actions)
    assert max(fake_model.calls) == n

    singles = single_trajectories(kwargs, seed, actions, n)
    resets = 0
    for i in range(n):
        assert all(np.array_equal(singles[i][0][0][k], vector[0][k][i]) for k in vector[0])
        for t in range(1, len(actions) + 1):
            s_obs, s_rew, s_term, s_trunc, s_probs = singles[i][t]
            v_obs, v_rew, v_term, v_trunc, v_info = vector[t]
            for key in s_obs:
                assert np.array_equal(s_obs[key], v_obs[key][i]), (i, t, key)
            assert (s_rew, s_term, s_trunc) == (v_rew[i], v_term[i], v_trunc[i])
            if s_probs is None:
                resets += 1
            else:
                assert np.array_equal(s_probs, v_info["probs"][i])
    assert resets > 0  # the episodes were short enough to exercise autoreset


def test_vector_spaces_are_derived_from_the_single_env(small_ds, fake_model):
    envs = RecVectorEnv(num_envs=4, dataset=small_ds, model=fake_model, exposure_size=5)
    assert envs.single_action_space == SlateSpace(small_ds.n_items, 5)
    assert envs.action_space.shape == (4, 5)
    sample = envs.action_space.sample()
    assert all(len(set(row)) == 5 for row in sample) and envs.action_space.contains(sample)
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    obs, *_ = envs.step(sample)
    assert envs.observation_space.contains(obs)
    with pytest.raises(InvalidAction, match="one slate per sub-env"):
        envs.step(sample[:2])
    bad = sample.copy()
    bad[1, 1] = bad[1, 0]
    with pytest.raises(InvalidAction, match="repeats"):
        envs.step(bad)


def test_slate_space_rejects_repeats_and_samples_distinct():
    space = SlateSpace(6, 6, seed=0)
    for _ in range(20):
        s = space.sample()
        assert sorted(s.tolist()) == list(range(6))
    assert not space.contains(np.array([0, 0, 1, 2, 3, 4]))
    assert space.contains(np.array([5, 4, 3, 2, 1, 0]))
