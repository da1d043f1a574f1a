"""Gymnasium environments over simulated users (DESIGN.md §6).

``import usermirrorer`` registers ``usermirrorer/RecEnv-v0``; then
``gymnasium.make("usermirrorer/RecEnv-v0", dataset=..., model=..., exposure_size=K)`` gives a
:class:`RecEnv` and ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`` a
:class:`RecVectorEnv`.
"""

from __future__ import annotations

from usermirrorer.envs.rec_env import MAX_OPTIONS, RecEnv, simulate_steps
from usermirrorer.envs.registration import ENV_ID, register_envs
from usermirrorer.envs.resources import clear_caches
from usermirrorer.envs.rewards import REWARDS, StepOutcome, resolve_reward
from usermirrorer.envs.spaces import SlateSpace
from usermirrorer.envs.vector import RecVectorEnv
from usermirrorer.envs.workers import ServedVectorEnv
from usermirrorer.envs.wrappers import DedupSlate, ScoreToSlate
from usermirrorer.sim.choice_models import BASELINE_CHOICE_MODELS, ChoiceModel

__all__ = [
    "ENV_ID",
    "MAX_OPTIONS",
    "BASELINE_CHOICE_MODELS",
    "REWARDS",
    "ChoiceModel",
    "DedupSlate",
    "ScoreToSlate",
    "RecEnv",
    "RecVectorEnv",
    "ServedVectorEnv",
    "SlateSpace",
    "StepOutcome",
    "clear_caches",
    "register_envs",
    "resolve_reward",
    "simulate_steps",
]
