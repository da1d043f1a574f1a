"""Steam: game reviews (with play time) of Australian Steam users.

Source: the Steam datasets of Kang & McAuley (ICDM 2018) and Wan & McAuley (RecSys 2018),
https://cseweb.ucsd.edu/~jmcauley/datasets.html#steam_data — one Python dict literal per line
(``{'user_id': '7656...', 'recommend': True}``: single quotes, ``True``; not JSON), plain or gz:

- ``australian_user_reviews.json`` — ``user_id``, ``user_url``, ``reviews``: a list of
  ``{funny, posted ('Posted November 5, 2011.'), last_edited, item_id, helpful, recommend,
  review}``;
- ``steam_games.json`` — ``id``, ``app_name``, ``title``, ``genres``, ``tags``, ``specs``,
  ``developer``, ``publisher``, ``release_date`` (``2018-01-04``, sometimes ``Soon..``),
  ``price`` (a number or ``'Free To Play'``), ``early_access``, ``sentiment``, ``metascore``;
- optional ``australian_users_items.json`` — ``user_id``, ``items_count``, ``items``: a list of
  ``{item_id, item_name, playtime_forever (minutes), playtime_2weeks}``.

Raws: one interaction per review, at its posting date (00:00 UTC: the files give days), with
``recommend``, the first words of the review and, when the items file is given, the hours
played. Rules: reviews posted in the crawl's own year read 'Posted July 15.' (no year) and are
dropped — the year cannot be known; games without ``id`` are dropped; unparsable release dates
are kept without a release-time rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usermirrorer.errors import data_problem
from usermirrorer.preprocessing.base import Converter, ConvertReport, SourceProblems
from usermirrorer.preprocessing.formats import (
    RawTables,
    clean_text,
    find_source_file,
    iter_records,
    parse_date,
)

__all__ = ["CONVERTER", "convert"]

SOURCE_FORMAT = ("UCSD Steam (Kang & McAuley): australian_user_reviews.json + steam_games.json "
                 "[+ australian_users_items.json], Python-literal lines, plain or .gz")
_RELEASE_FORMATS = ("%Y-%m-%d", "%b %d, %Y", "%B %d, %Y", "%b %Y", "%Y")


def _game_record(game: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    price = game.get("price")
    if isinstance(price, (int, float)) and not isinstance(price, bool):
        price = "free" if price == 0 else f"${price:.2f}"
    description = {
        "title": clean_text(game.get("app_name") or game.get("title")),
        "genres": list(game.get("genres") or [])[:3],
        "tags": list(game.get("tags") or [])[:5],
        "developer": clean_text(game.get("developer")),
        "price": clean_text(price),
        "released": clean_text(game.get("release_date")),
        "user reviews": clean_text(game.get("sentiment")),
    }
    features = {"early_access": bool(game.get("early_access")),
                "metascore": game.get("metascore") if isinstance(game.get("metascore"), int) else None}
    return description, features


def convert(source: Path, project_path: Path, options: dict[str, Any]) -> ConvertReport:
    """Convert the UCSD Steam files in ``source`` (see the module docstring)."""
    report = ConvertReport("steam", str(source))
    problems = SourceProblems()
    tables = RawTables("steam", report)
    reviews_path = find_source_file(source, "australian_user_reviews.json", source_format=SOURCE_FORMAT)
    games_path = find_source_file(source, "steam_games.json", source_format=SOURCE_FORMAT)
    owned_path = find_source_file(source, "australian_users_items.json",
                                  source_format=SOURCE_FORMAT, required=False)

    for line, game in iter_records(games_path, problems, python_literal=True):
        where = f"{games_path}:{line}"
        if not game.get("id"):
            report.drop("game-without-id", "a steam_games line without 'id' cannot be linked to "
                        "reviews", data_problem(games_path, line, "id", "missing"))
            continue
        description, features = _game_record(game)
        released = parse_date(game.get("release_date"), *_RELEASE_FORMATS)
        if released is None:
            report.repair("no-release-date", "release date missing or not a date (e.g. 'Soon..'): "
                          "kept without a release-time rule",
                          data_problem(games_path, line, "release_date", repr(game.get("release_date"))))
        features["release_time"] = released
        tables.add_item(str(game["id"]), description, features, where)

    # Reviews are queued so the play time of the optional items file can join them first.
    queued: list[tuple[str, str, int, dict[str, Any], str]] = []
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for line, user in iter_records(reviews_path, problems, python_literal=True):
        user_id = str(user.get("user_id") or "")
        if not user_id or not isinstance(user.get("reviews"), list):
            problems.add(reviews_path, line, "user_id/reviews", "expected a user id and a review list")
            continue
        for review in user["reviews"]:
            posted = str(review.get("posted", "")).removeprefix("Posted").strip().rstrip(".")
            seconds = parse_date(posted, "%B %d, %Y")
            where = data_problem(reviews_path, line, "posted", repr(review.get("posted")))
            if seconds is None:
                if parse_date(posted, "%B %d") is not None:
                    report.drop("posted-without-year", "posted in the crawl's year, which the "
                                "file omits ('Posted July 15.'): the time is unknown", where)
                else:
                    problems.add(reviews_path, line, "posted",
                                 f"expected 'Posted Month D, YYYY.', got {review.get('posted')!r}")
                continue
            behavior = {"recommend": bool(review.get("recommend")),
                        "review": clean_text(review.get("review"), 160)}
            pairs[(user_id, str(review.get("item_id")))] = behavior
            queued.append((user_id, str(review.get("item_id")), seconds, behavior, where))

    if owned_path is not None:
        for line, user in iter_records(owned_path, problems, python_literal=True):
            user_id = str(user.get("user_id") or "")
            if isinstance(user.get("items_count"), int):
                tables.add_user(user_id, {"games owned": user["items_count"]},
                                where=f"{owned_path}:{line}")
            for owned in user.get("items") or []:
                behavior = pairs.get((user_id, str(owned.get("item_id"))))
                minutes = owned.get("playtime_forever")
                if behavior is not None and isinstance(minutes, (int, float)):
                    behavior["hours_played"] = round(minutes / 60, 1)
        report.notes["play_time"] = f"hours played joined from {owned_path.name}"
    problems.raise_if_any("steam", SOURCE_FORMAT)
    for event in queued:
        tables.add_interaction(*event)
    tables.write(project_path)
    return report


CONVERTER = Converter(
    name="steam",
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    description="Steam game reviews with recommendations and play time",
)
