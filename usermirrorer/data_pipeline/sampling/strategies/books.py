"""Books (Goodreads): the reader shelved books; history shows what they read and how they rated it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy, rated_out_of_five

__all__ = ["BookStrategy"]


@register_strategy("goodreads")
class BookStrategy(TemplatedStrategy):
    """Goodreads readers: a book is shown only after its publication date."""

    name = "books"
    item_noun = "book"
    platform = "Goodreads"
    user_noun = "reader"
    verb = "shelved"
    history_fields = ("author", "published")
    exposure_fields = ("author", "published", "pages", "average rating", "shelves", "about")

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        parts = ["has read it" if behavior.get("shelf") == "read" else "wants to read it"]
        if rated := rated_out_of_five(behavior):
            parts.append(rated)
        if behavior.get("reviewed"):
            parts.append("wrote a review")
        return ", ".join(parts)
