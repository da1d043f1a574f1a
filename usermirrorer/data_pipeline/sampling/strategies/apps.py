"""Apps (MobileRec): the Google Play apps a user installed and reviewed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy
from usermirrorer.data_pipeline.sampling.strategies.templated import (
    TemplatedStrategy,
    quoted_review,
    rated_out_of_five,
)

__all__ = ["AppStrategy"]


@register_strategy("mobilerec")
class AppStrategy(TemplatedStrategy):
    """Google Play users: apps with category, price and store rating (no release dates)."""

    name = "apps"
    item_noun = "app"
    platform = "Google Play"
    user_noun = "user"
    verb = "installed"
    history_fields = ("category",)
    exposure_fields = ("category", "developer", "price", "average rating", "about")
    release_key = None

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        parts = [rated] if (rated := rated_out_of_five(behavior)) else []
        if behavior.get("review"):
            parts.append(quoted_review(behavior["review"]))
        return ", ".join(parts)
