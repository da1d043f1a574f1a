"""Registers ``usermirrorer/RecEnv-v0`` with gymnasium (imported by ``import usermirrorer``).

Entry points are strings, so registering imports nothing heavy: the env module loads on the
first ``gymnasium.make``.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_ID", "register_envs"]

ENV_ID = "usermirrorer/RecEnv-v0"


def register_envs() -> None:
    """Register the environments (idempotent: a second call changes nothing)."""
    if ENV_ID in gym.registry:
        return
    gym.register(
        id=ENV_ID,
        entry_point="usermirrorer.envs.rec_env:RecEnv",
        vector_entry_point="usermirrorer.envs.vector:RecVectorEnv",
        # Episode length is RecEnv's own max_steps (truncation), not a TimeLimit wrapper.
        max_episode_steps=None,
    )


register_envs()
