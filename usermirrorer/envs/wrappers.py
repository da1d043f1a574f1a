"""Action wrappers that let generic RL libraries drive :class:`~usermirrorer.envs.RecEnv`.

A slate must hold K *distinct* items, which no standard policy head guarantees: a
``MultiDiscrete`` policy samples with repeats, a ``Box`` policy outputs reals. These wrappers
turn such actions into valid slates:

- :class:`ScoreToSlate`: the action is a score per item (``Box(-1, 1, (n_items,))``); the slate
  is the K highest-scoring items (optionally never items the user already consumed).
- :class:`DedupSlate`: the action is any ``MultiDiscrete([n_items] * K)``; repeated entries are
  replaced, in order, by the highest-ranked items not yet in the slate (by a fixed fallback
  ranking, e.g. popularity), so a valid slate passes through unchanged. With the default
  (popularity) ranking it equals ``RecEnv(repeats="fill")``, the simpler way to the same
  thing; the wrapper is for another ranking.

The slate actually shown is in ``info["slate"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from usermirrorer.envs.spaces import fill_repeats
from usermirrorer.errors import InvalidAction

__all__ = ["ScoreToSlate", "DedupSlate"]


class ScoreToSlate(gym.ActionWrapper):
    """Action = one score per item in ``[-1, 1]``; slate = the top-K items by score.

    Ties are broken by item index. With ``exclude_seen`` the items in the observation's
    ``history`` are never shown (unless fewer than K others remain).

    Args:
        env: a RecEnv (possibly wrapped).
        exclude_seen: skip items in the current observation's history.
    """

    def __init__(self, env: gym.Env, exclude_seen: bool = True):
        super().__init__(env)
        base = env.unwrapped
        self.n_items = int(base.ds.n_items)
        self.k = int(base.exposure_size)
        self.exclude_seen = exclude_seen
        self.action_space = spaces.Box(-1.0, 1.0, (self.n_items,), np.float32)
        self._history: np.ndarray = np.zeros(0, dtype=np.int64)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._history = _seen(obs)
        return obs, info

    def step(self, action: Any):
        slate = self.action(action)
        obs, reward, terminated, truncated, info = self.env.step(slate)
        self._history = _seen(obs)
        info["slate"] = slate
        return obs, reward, terminated, truncated, info

    def action(self, action: Any) -> np.ndarray:
        scores = np.asarray(action, dtype=np.float64).reshape(-1)
        if scores.shape != (self.n_items,):
            raise InvalidAction(
                f"ScoreToSlate expects {self.n_items} item scores, got shape {np.shape(action)}"
            )
        scores = np.nan_to_num(scores, nan=-np.inf)
        if self.exclude_seen and self.n_items - len(np.unique(self._history)) >= self.k:
            scores = scores.copy()
            scores[self._history] = -np.inf
        order = np.lexsort((np.arange(self.n_items), -scores))
        return order[: self.k].astype(np.int64)


class DedupSlate(gym.ActionWrapper):
    """Action = any ``MultiDiscrete([n_items] * K)``; repeats are replaced by fallback items.

    Args:
        env: a RecEnv (possibly wrapped).
        fallback: item indices in the order used to fill repeated slots (default: items by
            interaction count over the whole log, most popular first).
    """

    def __init__(self, env: gym.Env, fallback: np.ndarray | None = None):
        super().__init__(env)
        base = env.unwrapped
        self.n_items = int(base.ds.n_items)
        self.k = int(base.exposure_size)
        if fallback is None:
            fallback = base.fill_order
        self.fallback = np.asarray(fallback, dtype=np.int64)
        self.action_space = spaces.MultiDiscrete(np.full(self.k, self.n_items, dtype=np.int64))

    def step(self, action: Any):
        slate = self.action(action)
        obs, reward, terminated, truncated, info = self.env.step(slate)
        info["slate"] = slate
        return obs, reward, terminated, truncated, info

    def action(self, action: Any) -> np.ndarray:
        raw = np.asarray(action, dtype=np.int64).reshape(-1)
        if raw.shape != (self.k,) or (raw < 0).any() or (raw >= self.n_items).any():
            raise InvalidAction(
                f"DedupSlate expects {self.k} item indices in 0..{self.n_items - 1}, got {np.asarray(action).tolist()}"
            )
        return fill_repeats(raw, self.fallback)


def _seen(obs: dict[str, Any]) -> np.ndarray:
    history = np.asarray(obs["history"])
    return history[history >= 0].astype(np.int64)
