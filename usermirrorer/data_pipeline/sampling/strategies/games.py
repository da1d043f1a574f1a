"""Games (Steam): the player reviewed games; history shows play time and recommendations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy, quoted_review

__all__ = ["GameStrategy"]


@register_strategy("steam")
class GameStrategy(TemplatedStrategy):
    """Steam players: a game is shown only after its release date."""

    name = "games"
    item_noun = "game"
    platform = "Steam"
    user_noun = "player"
    verb = "reviewed"
    history_fields = ("genres",)
    exposure_fields = ("genres", "tags", "price", "user reviews")

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        parts = []
        if "hours_played" in behavior:
            parts.append(f"played {behavior['hours_played']:g} hours")
        if "recommend" in behavior:
            parts.append("recommended it" if behavior["recommend"] else "did not recommend it")
        if behavior.get("review"):
            parts.append(quoted_review(behavior["review"]))
        return ", ".join(parts)
