"""How one simulated choice becomes a reward.

Every reward is a function of a :class:`StepOutcome` (the slate, the simulator's choice
distribution, the sampled choice and, in ``rating`` mode, the follow-up rating distribution).
Built-in rewards are looked up by name with :func:`resolve_reward`; any callable taking a
``StepOutcome`` and returning a float works too.

``rating`` needs a second simulator query: after the user picks item *i*, the same user
(profile + history, so the backend's KV-cache prefix is reused) is shown five options, "watch
*i* and rate it 1/5 (awful)" .. "5/5 (excellent)", and the letter distribution over them is read
the same way as a choice. Small LLMs favour early letters, so the query is asked twice, with the
levels in ascending and in descending order, and the two distributions (mapped back to levels)
are averaged; the reward is the expected rating ``sum_r r * p(r)`` under that average.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.scene import Scene, render_scene, scene_fields, scene_id
from usermirrorer.errors import ConfigError

__all__ = [
    "StepOutcome",
    "RewardFn",
    "REWARDS",
    "RATING_LEVELS",
    "RATING_LABELS",
    "click_reward",
    "rank_reward",
    "rating_reward",
    "resolve_reward",
    "rating_scenes",
    "rating_distribution",
    "expected_rating",
]

RATING_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
RATING_LABELS: dict[int, str] = {1: "awful", 2: "poor", 3: "okay", 4: "good", 5: "excellent"}


@dataclass
class StepOutcome:
    """Everything a reward function may look at after one step.

    Attributes:
        slate: (K,) item indices shown, in option order.
        probs: choice distribution over the options (K, or K+1 with the outside option last).
        choice: the sampled option index (``K`` = the outside option, "none of these").
        skipped: the user took the outside option.
        item: chosen item index, None when skipped.
        user: user index.
        timestamp: unix seconds of the step.
        scene: the rendered scene sent to the simulator.
        rating_probs: ``rating`` mode only: distribution over :data:`RATING_LEVELS` for the
            chosen item (None otherwise or when skipped).
    """

    slate: np.ndarray
    probs: np.ndarray
    choice: int
    skipped: bool
    item: int | None
    user: int
    timestamp: int
    scene: Scene
    rating_probs: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def expected_rating(self) -> float | None:
        return expected_rating(self.rating_probs)


def expected_rating(rating_probs: np.ndarray | None) -> float | None:
    """``sum_r r * p(r)`` over :data:`RATING_LEVELS`; None without a rating distribution."""
    if rating_probs is None:
        return None
    return float(np.dot(rating_probs, np.asarray(RATING_LEVELS, dtype=np.float64)))


RewardFn = Callable[[StepOutcome], float]


def click_reward(outcome: StepOutcome) -> float:
    """1 when the user picks an item of the slate, 0 when they take the outside option.

    Without ``allow_skip`` every step is a click, so this reward is only informative with it.
    """
    return 0.0 if outcome.skipped else 1.0


def rank_reward(outcome: StepOutcome) -> float:
    """Reciprocal rank of the chosen item in the slate (1, 1/2, ..., 1/K); 0 on a skip.

    Rewards recommenders that put what the user wants first.
    """
    return 0.0 if outcome.skipped else 1.0 / (outcome.choice + 1)


def rating_reward(outcome: StepOutcome) -> float:
    """Expected rating (1-5) of the chosen item from the follow-up rating query; 0 on a skip."""
    if outcome.skipped:
        return 0.0
    value = outcome.expected_rating
    if value is None:
        raise ConfigError("rating_reward needs rating_probs; create the env with reward='rating'")
    return value


REWARDS: dict[str, RewardFn] = {
    "click": click_reward,
    "rank": rank_reward,
    "rating": rating_reward,
}


def resolve_reward(reward: str | RewardFn) -> tuple[str, RewardFn]:
    """``(name, function)`` for a reward name or a callable.

    Raises:
        ConfigError: an unknown name or a non-callable.
    """
    if callable(reward):
        return getattr(reward, "__name__", type(reward).__name__), reward
    if isinstance(reward, str) and reward in REWARDS:
        return reward, REWARDS[reward]
    raise ConfigError(
        f"unknown reward {reward!r}; expected one of {sorted(REWARDS)} or a callable "
        "f(outcome: StepOutcome) -> float"
    )


def rating_scenes(scene: Scene, item_id: str, item_text: str) -> list[Scene]:
    """The two follow-up rating scenes (levels ascending, then descending) for a chosen item.

    They keep the step scene's user, time, history and profile/history text unchanged, so a
    prefix-caching backend scores them from the cached user prefix. ``rating_query`` tells
    non-LLM choice models what is being asked (``levels`` in option order). A real choice of
    ``scene`` (``item_id``/``item_pos``) is not carried: it is no answer to the rating question.
    """
    fields = scene_fields(scene)
    fields.pop("item_id", None)
    fields.pop("item_pos", None)
    out = []
    for order, levels in (("asc", RATING_LEVELS), ("desc", tuple(reversed(RATING_LEVELS)))):
        options = [
            f"{item_text} -- I rate it {level}/5 ({RATING_LABELS[level]})" for level in levels
        ]
        out.append(
            render_scene(
                **{
                    **fields,
                    "scene_id": f"{scene_id(scene)}:rating-{order}",
                    "impression_list": [item_id] * len(levels),
                    "outside_option": False,
                    "rating_query": {"item_id": item_id, "levels": list(levels)},
                    "action_list": options,
                }
            )
        )
    return out


def rating_distribution(results: Sequence[Any], scenes: Sequence[Scene]) -> np.ndarray:
    """Average the rating queries' letter distributions, mapped back to :data:`RATING_LEVELS`."""
    total = np.zeros(len(RATING_LEVELS), dtype=np.float64)
    for result, scene in zip(results, scenes, strict=True):
        levels = scene["rating_query"]["levels"]
        probs = np.asarray(result.probs, dtype=np.float64)
        for position, level in enumerate(levels):
            total[RATING_LEVELS.index(level)] += probs[position]
    return total / total.sum()
