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
  A domain whose release comes from elsewhere (MovieLens: a date or a year) overrides
  :meth:`~TemplatedStrategy.item_release` instead.

Scene sampling renders the same items over and over, so what depends only on the item (its
release time, its description text) is computed once per dataset and kept on the strategy
instance (:meth:`~TemplatedStrategy.dataset_cache`); the raws are read-only once loaded.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from usermirrorer.data_pipeline.sampling.strategies.base import DomainStrategy, describe_fields, time_ago

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.raw import RawDataset

__all__ = ["TemplatedStrategy", "join_top", "rated_out_of_five", "quoted_review"]

_DAY = 86400
# Release-time sentinel for items with no known release: always showable. Far below any real
# date (books go back centuries) yet far from int64's edge, so `release - t` cannot overflow.
_ALWAYS = -(2**62)
_NEW_RELEASE_MARK = "[New Release] "


def join_top(values: Any, n: int = 3) -> str:
    """The first ``n`` of a list joined with commas (a string is returned as is)."""
    if isinstance(values, (list, tuple)):
        return ", ".join(str(v) for v in values[:n])
    return "" if values is None else str(values)


def rated_out_of_five(behavior: Mapping[str, Any]) -> str | None:
    """'rated it 4/5' (or 'rated it 3.5/5') for a numeric ``rating``; None otherwise."""
    rating = behavior.get("rating")
    return f"rated it {rating:g}/5" if isinstance(rating, (int, float)) else None


def quoted_review(review: str) -> str:
    """'wrote "..."': inner double quotes become single ones so the review stays one quote."""
    return f'wrote "{review.replace(chr(34), chr(39))}"'


class TemplatedStrategy(DomainStrategy):
    """A domain strategy from declarations; see the module docstring for the attributes."""

    platform: str = ""
    user_noun: str = "user"
    verb: str = "chose"
    history_fields: Sequence[str] = ()
    exposure_fields: Sequence[str] = ()
    release_key: str | None = "release_time"
    new_release_days: int = 30
    # What release_times holds for an item with no known release: shown at any time.
    no_release: int = _ALWAYS

    # per-dataset cache -------------------------------------------------------------------
    def dataset_cache(self, ds: RawDataset) -> dict[Any, Any]:
        """A dict for values derived from ``ds`` alone, kept while this strategy sees ``ds``.

        One dataset at a time: a different (or garbage-collected) dataset starts a new dict.
        """
        held = self.__dict__.get("_derived")
        if held is None or held[0]() is not ds:
            held = self._derived = (weakref.ref(ds), {})
        return held[1]

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

    def item_text(self, ds: RawDataset, item: int, fields: Sequence[str]) -> str:
        """:meth:`describe_item`, computed once per item and field list.

        Filled lazily, item by item, so a million-item catalog costs only the items that
        scenes actually show.
        """
        key = fields if isinstance(fields, tuple) else tuple(fields)
        cache = self.dataset_cache(ds)
        texts = cache.get(key)
        if texts is None:
            texts = cache[key] = [None] * ds.n_items
        text = texts[item]
        if text is None:
            text = texts[item] = self.describe_item(ds, item, fields)
        return text

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        """How the user reacted, in words; default: ``field: value`` pairs."""
        return describe_fields(behavior)

    def when(self, time: int, behavior: Mapping[str, Any], now: int) -> str:
        """When a history event happened, seen from ``now``."""
        return time_ago(now - time)

    # release -----------------------------------------------------------------------------
    def item_release(self, features: Mapping[str, Any]) -> int | None:
        """Unix second an item with these ``item_features`` is released; None if unknown."""
        value = features.get(self.release_key) if self.release_key else None
        return int(value) if isinstance(value, (int, float)) else None

    def release_array(self, ds: RawDataset) -> np.ndarray:
        """Per item, :meth:`item_release` (:attr:`no_release` where unknown); read-only, cached."""
        cache = self.dataset_cache(ds)
        release = cache.get("release")
        if release is None:
            values = (self.item_release(f) for f in ds.item_features)
            release = np.fromiter((self.no_release if v is None else v for v in values),
                                  dtype=np.int64, count=ds.n_items)
            release.setflags(write=False)
            cache["release"] = release
        return release

    def new_release_mark(self, ds: RawDataset, item: int, now: int) -> str:
        """``"[New Release] "`` for an item released less than ``new_release_days`` before
        ``now`` (and not after it), else ``""``."""
        released = self.release_array(ds).item(item)
        if released != self.no_release and 0 <= now - released < self.new_release_days * _DAY:
            return _NEW_RELEASE_MARK
        return ""

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
        line = f"{self.when(time, behavior, now)}: {self.verb} {self.item_text(ds, item, self.history_fields)}"
        reaction = self.feedback(behavior)
        return f"{line} — {reaction}" if reaction else line

    def exposure_item(self, ds: RawDataset, item: int, now: int) -> str:
        return self.new_release_mark(ds, item, now) + self.item_text(ds, item, self.exposure_fields)

    def release_times(self, ds: RawDataset) -> np.ndarray | None:
        if self.release_key is None:
            return None
        release = self.release_array(ds)
        return None if bool((release == self.no_release).all()) else release

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, platform={self.platform!r})"
