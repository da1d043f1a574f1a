"""Short videos (KuaiRec 2.0): what the user watched, and how many times over."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy

__all__ = ["ShortVideoStrategy"]


@register_strategy("kuairec")
class ShortVideoStrategy(TemplatedStrategy):
    """Kuaishou viewers: captions and categories are Chinese, as published; a video is shown
    only after its upload date."""

    name = "short-video"
    item_noun = "video"
    platform = "Kuaishou"
    user_noun = "short-video viewer"
    verb = "watched"
    history_fields = ("category",)
    exposure_fields = ("category", "topics", "length")
    new_release_days = 3  # a short video is "new" for days, not weeks

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        ratio = behavior.get("watch_ratio")
        if not isinstance(ratio, (int, float)):
            return ""
        if ratio >= 1:
            return f"played it {ratio:.1f} times through"
        return f"stopped at {ratio:.0%} of it"
