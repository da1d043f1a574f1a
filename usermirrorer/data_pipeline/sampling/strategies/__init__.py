"""Domain strategies. Every module in this package registers its strategies on import.

Use :func:`get_strategy` to get the strategy of a dataset name (generic when none matches).
"""

from __future__ import annotations

import importlib
import pkgutil

from usermirrorer.data_pipeline.sampling.strategies.base import (
    DomainStrategy,
    GenericStrategy,
    describe_fields,
    register_strategy,
    strategy_names,
    time_ago,
)
from usermirrorer.data_pipeline.sampling.strategies.base import lookup_strategy as _lookup

__all__ = [
    "DomainStrategy",
    "GenericStrategy",
    "get_strategy",
    "register_strategy",
    "strategy_names",
    "time_ago",
    "describe_fields",
]

_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True


def get_strategy(dataset: str) -> DomainStrategy:
    """The domain strategy for ``dataset`` (e.g. ``ml-100k`` -> movies); generic otherwise."""
    _load_all()
    return _lookup(dataset)
