"""An env built from a simulator *object* (not a name) survives gymnasium's deep copies."""

from __future__ import annotations

import copy

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

from usermirrorer.envs import ENV_ID
from usermirrorer.sim import UserSimulator


def test_env_with_a_simulator_object_passes_check_env(small_ds, tiny_model_dir):
    sim = UserSimulator(str(tiny_model_dir), dtype="float32")
    assert copy.deepcopy(sim) is sim  # the loaded model is shared, never copied
    env = gym.make(ENV_ID, dataset=small_ds, model=sim, exposure_size=3, max_steps=2)
    check_env(env.unwrapped)
    assert env.unwrapped.model is sim
