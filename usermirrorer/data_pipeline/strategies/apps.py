"""Apps (MobileRec): the Google Play apps a user installed and reviewed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.strategies.base import register_strategy
from usermirrorer.data_pipeline.strategies.templated import TemplatedStrategy

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
        parts = []
        if isinstance(behavior.get("rating"), (int, float)):
            parts.append(f"rated it {behavior['rating']:g}/5")
        if behavior.get("review"):
            # Inner double quotes become single ones so the quoted review stays one quote.
            parts.append(f'wrote "{behavior["review"].replace(chr(34), chr(39))}"')
        return ", ".join(parts)
