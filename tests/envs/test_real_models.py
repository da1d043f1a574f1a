"""The env on real paths: the tiny random LLM through the transformers backend, and a short
SmolLM2-135M session on real ML-100K (slow)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from usermirrorer.envs import registration  # noqa: F401
from usermirrorer.envs import ENV_ID, RecVectorEnv


def test_tiny_llm_env_passes_check_env_and_vector_matches_single(small_ds, tiny_model_dir):
    # A model *name* (not a simulator object): check_env re-makes the env from its spec, which
    # deep-copies the kwargs; the loaded model is shared through the loader's cache.
    kwargs = dict(
        dataset=small_ds,
        model=str(tiny_model_dir),
        exposure_size=4,
        allow_skip=True,
        max_steps=3,
        backend_kwargs={"dtype": "float32"},
    )
    env = gym.make(ENV_ID, render_mode="ansi", **kwargs)
    check_env(env.unwrapped)
    assert gym.make(ENV_ID, **kwargs).unwrapped.model is env.unwrapped.model

    rng = np.random.default_rng(0)
    actions = [
        np.stack([rng.choice(small_ds.n_items, 4, replace=False) for _ in range(2)])
        for _ in range(3)
    ]
    envs = RecVectorEnv(num_envs=2, **kwargs)
    envs.reset(seed=21)
    vector = [envs.step(a) for a in actions]
    for i in range(2):
        single = gym.make(ENV_ID, **kwargs).unwrapped
        single.reset(seed=21 + i)
        for t, a in enumerate(actions):
            obs, reward, term, trunc, info = single.step(a[i])
            # batched vs unbatched forward passes agree to float rounding
            np.testing.assert_allclose(info["probs"], vector[t][4]["probs"][i], atol=1e-4)
            assert info["choice"] == vector[t][4]["choice"][i]
            assert np.array_equal(obs["history"], vector[t][0]["history"][i])


def test_tiny_llm_rating_and_decision_modes(small_ds, tiny_model_dir):
    env = gym.make(
        ENV_ID,
        dataset=small_ds,
        model=str(tiny_model_dir),
        exposure_size=3,
        reward="rating",
        backend_kwargs={"dtype": "float32"},
    ).unwrapped
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.arange(3))
    assert 1.0 <= reward <= 5.0 and np.isclose(info["rating_probs"].sum(), 1.0)

    env = gym.make(
        ENV_ID,
        dataset=small_ds,
        model=str(tiny_model_dir),
        exposure_size=3,
        mode="decision",
        sim_options={"max_thought_tokens": 8},
        backend_kwargs={"dtype": "float32"},
    ).unwrapped
    env.reset(seed=0)
    _, _, _, _, first = env.step(np.arange(3))
    env.reset(seed=0)
    _, _, _, _, again = env.step(np.arange(3))
    assert isinstance(first["rationale"], str) and first["thought_probs"].shape == (1, 3)
    assert first["rationale"] == again["rationale"] and first["choice"] == again["choice"]


@pytest.mark.slow
def test_smollm2_session_on_ml100k_reuses_the_user_prefix(ml100k_project):
    env = gym.make(
        ENV_ID,
        dataset="ml-100k",
        project_path=ml100k_project,
        model="smollm2-135m",
        exposure_size=5,
        allow_skip=True,
        max_steps=2,
        history_window=5,
        render_mode="ansi",
    ).unwrapped
    stats = env.model.backend.stats
    before = (stats.prompt_tokens, stats.computed_tokens)
    obs, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        obs, reward, term, trunc, info = env.step(rng.choice(env.ds.n_items, 5, replace=False))
        assert info["probs"].shape == (6,) and np.isclose(info["probs"].sum(), 1.0)
    assert trunc
    prompt = stats.prompt_tokens - before[0]
    computed = stats.computed_tokens - before[1]
    # step 2 recomputes only the new history line and the slate
    assert computed < 0.8 * prompt, (computed, prompt)
    assert "picked" in env.render()


def test_tiny_llm_likelihood_mode_env_scores_the_outside_option_text(small_ds, tiny_model_dir):
    env = gym.make(ENV_ID, dataset=small_ds, model=str(tiny_model_dir), exposure_size=3, allow_skip=True,
                   mode="likelihood", max_steps=2, backend_kwargs={"dtype": "float32"}).unwrapped
    check_env(env)
    env.reset(seed=3)
    _, _, _, _, info = env.step(np.arange(3))
    assert info["probs"].shape == (4,) and np.isclose(info["probs"].sum(), 1.0)
    assert info["scene"]["text"]["action_list"][-1].startswith("None of these")
    # the same step again gives the same distribution: no sampling inside likelihood scoring
    env.reset(seed=3)
    _, _, _, _, again = env.step(np.arange(3))
    np.testing.assert_allclose(info["probs"], again["probs"], atol=1e-6)
