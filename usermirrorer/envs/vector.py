"""``RecVectorEnv``: many simulated users, one simulator call per step for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from usermirrorer.envs.rec_env import RecEnv, simulate_steps
from usermirrorer.errors import ConfigError, InvalidAction

__all__ = ["RecVectorEnv", "sub_env_seeds"]


def sub_env_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Each sub-env's reset seed: ``seed + i`` for an int, the list itself (one per sub-env), or None.

    Raises:
        ConfigError: a list whose length is not ``num_envs``.
    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ConfigError(f"got {len(seeds)} seeds for {num_envs} sub-envs; pass one per sub-env or an int")
    return seeds


class RecVectorEnv(VectorEnv):
    """``num_envs`` :class:`~usermirrorer.envs.RecEnv` sub-environments sharing one dataset and
    one choice model; each ``step`` renders every sub-env's scene and sends them to the
    simulator as one batch (a batched forward pass, or one vLLM/OpenAI request batch).

    Sub-environment ``i`` is an ordinary ``RecEnv`` with its own generator, seeded with
    ``seed + i`` on ``reset(seed=seed)`` (or ``seed[i]`` for a list), so a vector rollout is
    exactly the rollouts of the single envs under those seeds (with an LLM, up to the
    floating-point differences between batched and unbatched forward passes; in decision mode
    the thoughts of a batch are generated under one seed derived from the sub-envs' seeds).

    Autoreset is ``NEXT_STEP`` (gymnasium's default): the step after a sub-env terminates or
    truncates resets it, ignores its action and returns its reset observation with reward 0.

    Spaces are derived from the single env's: ``action_space`` is a batched
    :class:`~usermirrorer.envs.spaces.SlateSpace` of shape ``(num_envs, K)`` (distinct items per
    row), ``observation_space`` is ``batch_space(single_observation_space, num_envs)``.

    Args:
        num_envs: number of sub-environments.
        render_mode: ``"ansi"`` or None.
        **kwargs: every :class:`RecEnv` argument (``dataset``, ``model``, ``exposure_size`` ...).
    """

    metadata = {
        "render_modes": ["ansi"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **kwargs: Any):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        kwargs.pop("max_episode_steps", None)  # episode length is RecEnv's max_steps
        first = RecEnv(render_mode=render_mode, **kwargs)
        # The others reuse the first one's dataset, strategy and model objects.
        shared = {**kwargs, "dataset": first.ds, "model": first.model, "strategy": first.strategy}
        self.envs: list[RecEnv] = [first] + [
            RecEnv(render_mode=render_mode, **shared) for _ in range(num_envs - 1)
        ]
        self.model = first.model
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_action_space = first.action_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = first.observation_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._prev_done = np.zeros(num_envs, dtype=np.bool_)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every sub-env; ``seed`` int -> sub-env i gets ``seed + i``; a list gives each its own.

        ``options`` (``user_id``, ``start_time``) go to every sub-env.
        """
        super().reset(seed=seed if isinstance(seed, int) else None)
        seeds = sub_env_seeds(seed, self.num_envs)
        observations, infos = [], {}
        for i, (env, s) in enumerate(zip(self.envs, seeds)):
            obs, info = env.reset(seed=s, options=options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._prev_done[:] = False
        return self._stack(observations), infos

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One slate per sub-env (shape ``(num_envs, K)``); sub-envs done at the last step reset."""
        expected = f"({self.num_envs}, {self.envs[0].exposure_size}): one slate per sub-env"
        try:
            actions = np.asarray(actions)
        except ValueError:  # ragged: slates of different lengths
            lengths = [len(a) if hasattr(a, "__len__") else None for a in actions]
            raise InvalidAction(f"actions are ragged (slate lengths {lengths}); expected shape {expected}") from None
        if actions.ndim != 2 or actions.shape[0] != self.num_envs:
            raise InvalidAction(f"actions have shape {actions.shape}, expected {expected}")
        results: list[tuple | None] = [None] * self.num_envs
        active = [i for i in range(self.num_envs) if not self._prev_done[i]]
        for i in active:
            try:
                self.envs[i].validate_slate(actions[i])
            except InvalidAction as exc:
                raise InvalidAction(f"sub-env {i}: {exc}") from None
        for i in range(self.num_envs):
            if self._prev_done[i]:
                obs, info = self.envs[i].reset()
                results[i] = (obs, 0.0, False, False, info)
        if active:
            stepped = simulate_steps(
                [self.envs[i] for i in active], [actions[i] for i in active], self.model
            )
            for i, result in zip(active, stepped):
                results[i] = result
        observations, infos = [], {}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        for i, (obs, reward, term, trunc, info) in enumerate(results):
            observations.append(obs)
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            infos = self._add_info(infos, info, i)
        self._prev_done = terminated | truncated
        return self._stack(observations), rewards, terminated, truncated, infos

    def render(self) -> tuple[str | None, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(env.render() for env in self.envs)

    def _stack(self, observations: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, observations, out)

    def __repr__(self) -> str:
        return f"RecVectorEnv({self.envs[0]!r}, num_envs={self.num_envs})"
