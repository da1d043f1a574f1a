"""A strategy made of declarations: the common shape of the public-dataset domains.

Every public domain renders the same three things — who the user is, what they did before
(when, and how they reacted) and what is on offer — and differs only in words: a reader
"read" a book and "rated it 4/5", a listener "listened to" an artist "312 times". So a
domain strategy subclasses :class:`TemplatedStrategy`, sets a few class attributes and, where
its feedback needs words, overrides :meth:`~TemplatedStrategy.feedback`:

- ``platform`` / ``user_noun``: the profile's opening sentence ("A Steam player.");
- ``verb``: the history's past-tense action ("played");
- ``history_fields`` / ``exposure_fields``: the ``item_description`` keys shown after the
  item's ``title`` in the history and in the exposure list;
- ``release_key``: the ``item_features`` key holding a release time in unix seconds (all the
  converters of :mod:`usermirrorer.preprocessing` write ``release_time``): items are not shown
  before it, and items released within ``new_release_days`` of the scene read "[New Release]".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from usermirrorer.data_pipeline.strategies.base import DomainStrategy, describe_fields, time_ago

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.raw import RawDataset

__all__ = ["TemplatedStrategy", "join_top"]

_DAY = 86400
# Release-time sentinel for items with no known release: always showable. Far below any real
# date (books go back centuries) yet far from int64's edge, so `release - t` cannot overflow.
_ALWAYS = -(2**62)


def join_top(values: Any, n: int = 3) -> str:
    """The first ``n`` of a list joined with commas (a string is returned as is)."""
    if isinstance(values, (list, tuple)):
        return ", ".join(str(v) for v in values[:n])
    return "" if values is None else str(values)


class TemplatedStrategy(DomainStrategy):
    """A domain strategy from declarations; see the module docstring for the attributes."""

    platform: str = ""
    user_noun: str = "user"
    verb: str = "chose"
    history_fields: Sequence[str] = ()
    exposure_fields: Sequence[str] = ()
    release_key: str | None = "release_time"
    new_release_days: int = 30

    # pieces ------------------------------------------------------------------------------
    def title(self, ds: RawDataset, item: int) -> str:
        """The item's name as the text calls it."""
        return str(ds.item_description[item].get("title") or ds.item_ids[item])

    def describe_item(self, ds: RawDataset, item: int, fields: Sequence[str]) -> str:
        """``Title (field: value; field: value)`` with the given description fields."""
        desc = ds.item_description[item]
        shown = {key: join_top(desc.get(key)) for key in fields}
        details = describe_fields(shown, sep="; ")
        return f"{self.title(ds, item)} ({details})" if details else self.title(ds, item)

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        """How the user reacted, in words; default: ``field: value`` pairs."""
        return describe_fields(behavior)

    def when(self, time: int, behavior: Mapping[str, Any], now: int) -> str:
        """When a history event happened, seen from ``now``."""
        return time_ago(now - time)

    # DomainStrategy ----------------------------------------------------------------------
    def profile(self, ds: RawDataset, user: int) -> str:
        article = "An" if self.platform[:1].lower() in ("a", "e", "i", "o", "u") else "A"
        opening = f"{article} {self.platform} {self.user_noun}." if self.platform else ""
        fields = describe_fields(ds.user_description[user], sep="\n")
        text = "\n".join(part for part in (opening, fields) if part)
        return text or "(no profile information)"

    def history_entry(
        self, ds: RawDataset, item: int, time: int, behavior: Mapping[str, Any], now: int
    ) -> str:
        line = f"{self.when(time, behavior, now)}: {self.verb} {self.describe_item(ds, item, self.history_fields)}"
        reaction = self.feedback(behavior)
        return f"{line} — {reaction}" if reaction else line

    def exposure_item(self, ds: RawDataset, item: int, now: int) -> str:
        text = self.describe_item(ds, item, self.exposure_fields)
        released = ds.item_features[item].get(self.release_key) if self.release_key else None
        if isinstance(released, (int, float)) and 0 <= now - released < self.new_release_days * _DAY:
            text = f"[New Release] {text}"
        return text

    def release_times(self, ds: RawDataset) -> np.ndarray | None:
        if self.release_key is None:
            return None
        key = self.release_key
        values = [f.get(key) for f in ds.item_features]
        if not any(isinstance(v, (int, float)) for v in values):
            return None
        return np.array(
            [int(v) if isinstance(v, (int, float)) else _ALWAYS for v in values], dtype=np.int64
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, platform={self.platform!r})"
