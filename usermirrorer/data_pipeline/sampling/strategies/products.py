"""Products (Amazon Reviews 2023): the shopper reviewed products; history shows their ratings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy, rated_out_of_five

__all__ = ["ProductStrategy"]


@register_strategy("amazon")
class ProductStrategy(TemplatedStrategy):
    """Amazon shoppers (``amazon-beauty``, ``amazon-fashion``, ...): a product is shown only
    after its "Date First Available"."""

    name = "products"
    item_noun = "product"
    platform = "Amazon"
    user_noun = "shopper"
    verb = "bought and reviewed"
    history_fields = ("brand", "category")
    exposure_fields = ("brand", "category", "price", "rating", "highlights")

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        parts = [rated] if (rated := rated_out_of_five(behavior)) else []
        if behavior.get("headline"):
            parts.append(f'titled the review "{behavior["headline"]}"')
        return ", ".join(parts)
