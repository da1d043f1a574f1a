"""News (MIND): the user clicked articles; scenes replay the impressions really shown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy, time_ago
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy

__all__ = ["NewsStrategy"]


@register_strategy("mind")
class NewsStrategy(TemplatedStrategy):
    """Microsoft News readers: history of clicked headlines, exposure = the logged impression.

    Interactions carry the impression they came from (behaviour ``impression``), so
    ``logged_exposure_key`` makes scene sampling use real exposures. News has no release rule:
    an article is shown when it is in the impression.
    """

    name = "news"
    item_noun = "news article"
    platform = "Microsoft News"
    user_noun = "reader"
    verb = "clicked"
    history_fields = ("category",)
    exposure_fields = ("category", "subcategory", "abstract")
    release_key = None
    logged_exposure_key = "impression"

    def describe_item(self, ds, item, fields):
        desc = ds.item_description[item]
        title = f'"{self.title(ds, item)}"'
        topic = " / ".join(desc[k] for k in ("category", "subcategory") if k in fields and desc.get(k))
        text = f"{title} [{topic}]" if topic else title
        if "abstract" in fields and desc.get("abstract"):
            text += f" — {desc['abstract']}"
        return text

    def when(self, time: int, behavior: Mapping[str, Any], now: int) -> str:
        return "before the log began" if behavior.get("before_log") else time_ago(now - time)

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        return ""  # a click is the whole signal; the impression list is not history text
