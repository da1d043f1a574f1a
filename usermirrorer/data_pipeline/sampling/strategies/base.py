"""What a domain is to the pipeline: templates, feature functions, filters and extra scorers.

A dataset is a small strategy object rather than a copy of the pipeline. Scene sampling and the
environment call only the methods below, so a new domain is one converter plus one subclass
that overrides the templates it needs. Strategies register themselves with
:func:`register_strategy`; any dataset without one gets :class:`GenericStrategy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset, describe_fields

__all__ = [
    "DomainStrategy",
    "GenericStrategy",
    "register_strategy",
    "strategy_names",
    "lookup_strategy",
    "time_ago",
    "describe_fields",
]

_REGISTRY: dict[str, type[DomainStrategy]] = {}


def register_strategy(*dataset_names: str) -> Callable[[type[DomainStrategy]], type[DomainStrategy]]:
    """Class decorator: use this strategy for the named datasets (and their ``name-*`` variants)."""

    def wrap(cls: type[DomainStrategy]) -> type[DomainStrategy]:
        for name in dataset_names:
            _REGISTRY[name] = cls
        return cls

    return wrap


def strategy_names() -> dict[str, str]:
    """Dataset name -> strategy class name, for listings."""
    return {name: cls.__name__ for name, cls in sorted(_REGISTRY.items())}


def lookup_strategy(dataset: str) -> DomainStrategy:
    """The strategy registered for ``dataset`` (exact name, then its prefix before the first
    ``_`` or the longest registered prefix such as ``amazon`` for ``amazon-beauty``); else the
    generic one."""
    if dataset in _REGISTRY:
        return _REGISTRY[dataset]()
    for name in sorted(_REGISTRY, key=len, reverse=True):
        if dataset.startswith(name + "-") or dataset.startswith(name + "_"):
            return _REGISTRY[name]()
    return GenericStrategy()


def time_ago(seconds: float) -> str:
    """A duration in words as a person would say it: 'today', '3 days ago', '2 years ago'."""
    seconds = max(0.0, float(seconds))
    days = seconds / 86400.0
    if days < 1:
        hours = int(seconds // 3600)
        if hours < 1:
            return "just now"
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    for unit, size in (("year", 365.0), ("month", 30.0), ("week", 7.0), ("day", 1.0)):
        if days >= size:
            n = int(days // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "today"


class DomainStrategy:
    """Base class: how one domain turns raw records into scene text and candidate rules.

    Override the templates to change wording; override :meth:`release_times`,
    :meth:`exclude_candidates` and :meth:`extra_scorers` for domain rules.

    Attributes:
        name: short domain name shown in listings.
        item_noun: what an item is called in text ('movie', 'news article', ...).
        history_range: (min, max) number of history items rendered before the scene time.
        logged_exposure_key: for domains with real impression logs (MIND), the behaviour
            feature holding the list of item ids shown with the interaction; scene sampling
            then uses those exposures instead of synthesising them. None: synthesise.
    """

    name: str = "base"
    item_noun: str = "item"
    history_range: tuple[int, int] = (2, 10)
    logged_exposure_key: str | None = None

    # text templates ----------------------------------------------------------------------
    def profile(self, ds: RawDataset, user: int) -> str:
        """The user-profile paragraph of a scene."""
        raise NotImplementedError

    def history_entry(
        self, ds: RawDataset, item: int, time: int, behavior: Mapping[str, Any], now: int
    ) -> str:
        """One line of the history: the item at ``time`` with its behaviour, seen from ``now``."""
        raise NotImplementedError

    def exposure_item(self, ds: RawDataset, item: int, now: int) -> str:
        """How one option of the exposure list reads at time ``now`` (no letter prefix)."""
        raise NotImplementedError

    def history(
        self,
        ds: RawDataset,
        items: Sequence[int],
        times: Sequence[int],
        behaviors: Sequence[Mapping[str, Any]],
        now: int,
    ) -> str:
        """The history block: one entry per line, oldest first."""
        if len(items) == 0:
            return f"(no {self.item_noun}s yet)"
        return "\n".join(
            self.history_entry(ds, int(i), int(t), b, now) for i, t, b in zip(items, times, behaviors)
        )

    # rules -------------------------------------------------------------------------------
    def release_times(self, ds: RawDataset) -> np.ndarray | None:
        """Per item, the first unix second it may be shown (e.g. release date); None: no rule."""
        return None

    def exclude_candidates(
        self, ds: RawDataset, user: int, now: int, candidates: np.ndarray
    ) -> np.ndarray | None:
        """Domain filter: a bool mask over ``candidates`` of items NOT to show; None: no filter."""
        return None

    def extra_scorers(self) -> list[str]:
        """Names of domain-specific candidate scorers scene sampling should add."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, item_noun={self.item_noun!r})"


class GenericStrategy(DomainStrategy):
    """Works for any valid raws directory without code: ``field: value`` text everywhere.

    Profile: the user's description fields. History: each item's description, when it happened
    ('3 days ago') and its behaviour features ('rating: 4'). Exposure: the item's description.
    """

    name = "generic"

    def profile(self, ds: RawDataset, user: int) -> str:
        text = describe_fields(ds.user_description[user], sep="\n")
        return text or "(no profile information)"

    def history_entry(
        self, ds: RawDataset, item: int, time: int, behavior: Mapping[str, Any], now: int
    ) -> str:
        parts = [describe_fields(ds.item_description[item]) or str(ds.item_ids[item]), time_ago(now - time)]
        if behavior:
            parts.append(describe_fields(behavior))
        return "; ".join(parts)

    def exposure_item(self, ds: RawDataset, item: int, now: int) -> str:
        return describe_fields(ds.item_description[item]) or str(ds.item_ids[item])
