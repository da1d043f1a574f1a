"""Movies (MovieLens): how a moviegoer's profile, viewing history and options read.

- profile: "A 24-year-old man. Occupation: technician." (ML-1M's age ranges: "A woman aged
  25-34."), then any other description fields as ``field: value``.
- history entry: "Toy Story (1995) — Animation, Children's, Comedy; watched 3 days ago;
  rated 4/5".
- exposure item: "[New Release] Titanic (1997) — Drama, Romance", the mark on movies released
  within a year before the scene time.
- release times: from ``item_features["release_date"]`` (``YYYY-MM-DD``) when a converter
  has it, else January 1 of ``release_year`` (the earliest the movie could be out, so a movie is
  never hidden while it was available); unknown -> no restriction.

The strategy is a :class:`~usermirrorer.data_pipeline.sampling.strategies.templated.TemplatedStrategy`
with its own wording: it shares the templated base's per-dataset caches (release times and each
movie's text computed once) and its "[New Release]" rule, with a one-year window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from usermirrorer.data_pipeline.sampling.strategies.base import (
    DomainStrategy,
    describe_fields,
    register_strategy,
    time_ago,
)
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.raw import RawDataset

__all__ = [
    "MovieStrategy",
    "NO_RELEASE_LIMIT",
    "NEW_RELEASE_WINDOW_S",
    "age_phrase",
    "person_noun",
    "movie_title",
    "genre_text",
    "rating_text",
    "release_time",
    "is_new_release",
]

# Sentinel release time for movies whose release is unknown: shown at any scene time.
NO_RELEASE_LIMIT = np.iinfo(np.int64).min
_NEW_RELEASE_DAYS = 365
NEW_RELEASE_WINDOW_S = _NEW_RELEASE_DAYS * 86400
_PROFILE_KEYS = ("age", "gender", "occupation")


# feature functions -------------------------------------------------------------------------


def age_phrase(age: Any) -> tuple[str, bool] | None:
    """``(phrase, before_noun)``: 24 -> ("24-year-old", True); "25-34" -> ("aged 25-34", False);
    "Under 18" -> ("aged under 18", False); "56+" -> ("aged 56 or older", False)."""
    if age is None or age == "":
        return None
    if isinstance(age, (int, float)) and not isinstance(age, bool):
        return f"{int(age)}-year-old", True
    text = str(age).strip()
    if text.isdigit():
        return f"{int(text)}-year-old", True
    if text.endswith("+"):
        text = f"{text[:-1]} or older"
    return f"aged {text[0].lower() + text[1:]}", False


def person_noun(gender: Any) -> str:
    """'male' -> 'man', 'female' -> 'woman', anything else -> 'person'."""
    return {"male": "man", "m": "man", "female": "woman", "f": "woman"}.get(
        str(gender).strip().lower(), "person"
    )


def movie_title(description: Mapping[str, Any], fallback: str) -> str:
    """'Toy Story (1995)'; just the title when the year is unknown; the id if untitled."""
    title = str(description.get("title") or fallback)
    year = description.get("release_year")
    return f"{title} ({year})" if year else title


def genre_text(description: Mapping[str, Any]) -> str:
    """'Animation, Children's, Comedy' (empty when there are no genres)."""
    genres = description.get("genres") or []
    if isinstance(genres, str):
        return genres
    return ", ".join(str(g) for g in genres)


def rating_text(behavior: Mapping[str, Any], scale: int = 5) -> str | None:
    """'rated 4/5' (or 'rated 3.5/5'); None without a rating."""
    rating = behavior.get("rating")
    if rating is None:
        return None
    return _rating_phrase(float(rating), scale)


@lru_cache(maxsize=256)
def _rating_phrase(rating: float, scale: int) -> str:
    # A log holds a handful of distinct ratings: format each once.
    shown = str(int(rating)) if rating.is_integer() else f"{rating:g}"
    return f"rated {shown}/{scale}"


def release_time(features: Mapping[str, Any]) -> int:
    """First unix second the movie may be shown; :data:`NO_RELEASE_LIMIT` if unknown."""
    date = features.get("release_date")
    if isinstance(date, str) and len(date) >= 10:
        try:
            return int(np.datetime64(date[:10], "s").astype(np.int64))
        except ValueError:
            pass  # fall back to the year
    year = features.get("release_year")
    if isinstance(year, (int, float)) and not isinstance(year, bool) and 1800 <= year <= 2200:
        return int(np.datetime64(f"{int(year):04d}-01-01", "s").astype(np.int64))
    return int(NO_RELEASE_LIMIT)


def is_new_release(released: int, now: int) -> bool:
    """Released at or before ``now`` and less than a year before it."""
    return released != NO_RELEASE_LIMIT and 0 <= now - released < NEW_RELEASE_WINDOW_S


# the strategy ------------------------------------------------------------------------------


@register_strategy("movielens", "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m",
                   "ml-latest", "ml-latest-small", "synthetic")
class MovieStrategy(TemplatedStrategy):
    """MovieLens-style movies with ratings; see the module docstring for the wording."""

    name = "movie"
    item_noun = "movie"
    new_release_days = _NEW_RELEASE_DAYS
    no_release = int(NO_RELEASE_LIMIT)

    def profile(self, ds: RawDataset, user: int) -> str:
        desc = ds.user_description[user]
        age = age_phrase(desc.get("age"))
        noun = person_noun(desc.get("gender"))
        if age is None:
            sentence = f"A {noun}." if noun != "person" else ""
        elif age[1]:
            sentence = f"A {age[0]} {noun}."
        else:
            sentence = f"A {noun} {age[0]}."
        lines = [sentence] if sentence else []
        if desc.get("occupation"):
            lines.append(f"Occupation: {desc['occupation']}.")
        rest = describe_fields({k: v for k, v in desc.items() if k not in _PROFILE_KEYS}, sep="\n")
        if rest:
            lines.append(rest)
        return "\n".join(lines) or "(no profile information)"

    def describe_item(self, ds: RawDataset, item: int, fields: Sequence[str]) -> str:
        """'Toy Story (1995) — Animation, Children's, Comedy' (history and options alike)."""
        desc = ds.item_description[item]
        genres = genre_text(desc)
        title = movie_title(desc, str(ds.item_ids[item]))
        return f"{title} — {genres}" if genres else title

    def history_entry(
        self, ds: RawDataset, item: int, time: int, behavior: Mapping[str, Any], now: int
    ) -> str:
        movie = self.item_text(ds, item, self.history_fields)
        rated = rating_text(behavior)
        watched = time_ago(now - time)
        return f"{movie}; watched {watched}; {rated}" if rated else f"{movie}; watched {watched}"

    def item_release(self, features: Mapping[str, Any]) -> int | None:
        released = release_time(features)
        return None if released == NO_RELEASE_LIMIT else released

    def release_times(self, ds: RawDataset) -> np.ndarray:
        # Always an array (all NO_RELEASE_LIMIT when no year is known): the rule is the domain's.
        return self.release_array(ds)

    __repr__ = DomainStrategy.__repr__
