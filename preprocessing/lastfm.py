"""Last.fm (HetRec 2011): artists users listened to, dated by their tags, plus their friends.

Source: ``hetrec2011-lastfm-2k.zip`` of the HetRec 2011 workshop (GroupLens),
https://grouplens.org/datasets/hetrec-2011/ — tab-separated ``.dat`` files with a header line:

- ``user_artists.dat`` — ``userID artistID weight`` (play count of the user's top artists);
- ``artists.dat`` — ``id name url pictureURL``;
- ``user_taggedartists-timestamps.dat`` — ``userID artistID tagID timestamp`` (unix ms);
- ``tags.dat`` — ``tagID tagValue`` (Latin-1 encoded, unlike the other UTF-8 files);
- ``user_friends.dat`` — ``userID friendID`` (both directions listed).

Play counts carry no time; a user's first tag of an artist is the only dated trace of that
listening. Raws: one interaction per listened-to artist, at the user's first tag of it, with
``plays`` and the user's own tags; each user's ``friends`` (user ids) in ``user_features``,
read by the ``lastfm-social`` scorer (friends' listening before the scene time). Rules: tag
times before Last.fm existed (the file holds some from 1956) are ignored; listened artists
never tagged have no time and are dropped; tags of artists the user never listened to are
not interactions and are dropped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from usermirrorer.errors import data_problem
from usermirrorer.preprocessing.base import (
    Converter,
    ConvertReport,
    SourceProblems,
    iter_delimited,
    parse_int,
)
from usermirrorer.preprocessing.formats import RawTables, clean_text, find_source_file, parse_date

__all__ = ["CONVERTER", "convert"]

SOURCE_FORMAT = ("HetRec 2011 hetrec2011-lastfm-2k: user_artists.dat, artists.dat, "
                 "user_taggedartists-timestamps.dat, tags.dat, user_friends.dat (tab-separated)")
# Last.fm went online in March 2002: earlier tag times are clock errors.
_LAUNCH = parse_date("2002-03-20", "%Y-%m-%d")


def convert(source: Path, project_path: Path, options: dict[str, Any]) -> ConvertReport:
    """Convert the HetRec Last.fm folder ``source`` (see the module docstring)."""
    report = ConvertReport("lastfm", str(source))
    problems = SourceProblems()
    tables = RawTables("lastfm", report)

    def rows(name: str, n_fields: int | None, encoding: str = "utf-8"):
        path = find_source_file(source, name, source_format=SOURCE_FORMAT)
        for line, fields in iter_delimited(path, "\t", problems, n_fields=n_fields,
                                           encoding=encoding, skip_lines=1):
            yield path, line, fields

    tag_names = {f[0]: clean_text(f[1]) for _, _, f in rows("tags.dat", 2, "latin-1")}
    first_tag: dict[tuple[str, str], int] = {}
    user_tags: dict[tuple[str, str], list[str]] = {}
    artist_tags: dict[str, Counter] = {}
    for path, line, (user, artist, tag, stamp) in rows("user_taggedartists-timestamps.dat", 4):
        millis = int(stamp) if stamp.lstrip("-").isdigit() else None
        if millis is None:
            problems.add(path, line, "timestamp", f"expected unix milliseconds, got {stamp!r}")
            continue
        name = tag_names.get(tag, "")
        artist_tags.setdefault(artist, Counter())[name] += 1
        user_tags.setdefault((user, artist), [])
        if name and name not in user_tags[(user, artist)]:
            user_tags[(user, artist)].append(name)
        if millis // 1000 < _LAUNCH:
            report.repair("clock-error-timestamp", "tag time before Last.fm existed: ignored for "
                          "dating", data_problem(path, line, "timestamp", stamp))
            continue
        key = (user, artist)
        first_tag[key] = min(first_tag.get(key, millis // 1000), millis // 1000)

    for path, line, fields in rows("artists.dat", None):
        if len(fields) < 2:
            problems.add(path, line, None, "expected at least id and name")
            continue
        tags = [t for t, _ in artist_tags.get(fields[0], Counter()).most_common(4) if t][:3]
        tables.add_item(fields[0], {"title": clean_text(fields[1]), "tags": tags},
                        {"tags": tags}, f"{path}:{line}")

    friends: dict[str, list[str]] = {}
    for _, _, (user, friend) in rows("user_friends.dat", 2):
        friends.setdefault(user, []).append(friend)

    listened: set[tuple[str, str]] = set()
    for path, line, (user, artist, weight) in rows("user_artists.dat", 3):
        plays = parse_int(weight, path, line, "weight", problems)
        listened.add((user, artist))
        where = data_problem(path, line, None, f"user {user}, artist {artist}")
        if plays is None:
            continue
        if (user, artist) not in first_tag:
            report.drop("never-tagged", "listened artist with no valid tag time: the play count "
                        "has no date", where)
            continue
        tables.add_interaction(user, artist, first_tag[(user, artist)],
                               {"plays": plays, "tags": user_tags.get((user, artist), [])[:3]},
                               where)
    report.drop("tagged-not-listened", "tags of an artist outside the user's listening list "
                "(not a listening event)", n=sum(1 for key in user_tags if key not in listened))
    for user in dict.fromkeys(u for u, _ in sorted(listened)):
        mine = friends.get(user, [])
        tables.add_user(user, {"friends on Last.fm": len(mine)}, {"friends": mine})
    problems.raise_if_any("lastfm", SOURCE_FORMAT)
    tables.write(project_path)
    return report


CONVERTER = Converter(
    name="lastfm",
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    description="Last.fm listening (play counts dated by tags) with the friend network",
)
