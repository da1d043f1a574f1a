"""What the MovieLens converters share: code tables, title parsing and the conversion steps.

MovieLens titles read like library index cards ("Usual Suspects, The (1995)"); the converters
turn them into what a person would say ("The Usual Suspects", released 1995) and keep the
original in ``item_features["original_title"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from usermirrorer.errors import data_problem
from usermirrorer.preprocessing.base import (
    ConvertReport,
    SourceProblems,
    require_files,
    write_raw_records,
)

__all__ = [
    "AGE_GROUPS",
    "OCCUPATIONS",
    "GENDERS",
    "split_title_year",
    "front_article",
    "MovieTable",
    "duplicate_id",
    "known_rating_ids",
    "convert_movielens",
]

# ML-1M README: the age field holds the lower bound of a range.
AGE_GROUPS: dict[int, str] = {
    1: "Under 18",
    18: "18-24",
    25: "25-34",
    35: "35-44",
    45: "45-49",
    50: "50-55",
    56: "56+",
}

# ML-1M README: occupation codes.
OCCUPATIONS: dict[int, str] = {
    0: "other or not specified",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}

GENDERS: dict[str, str] = {"M": "male", "F": "female"}

_YEAR_AT_END = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
# Articles MovieLens moves to the end of a title, in the languages its titles use.
_ARTICLES = "The|A|An|Les|La|Le|L'|Il|El|Das|Der|Die|Los|Las|Lo|Un|Une|Det|Den"
_TRAILING_ARTICLE = re.compile(
    rf"^(?P<body>.+?), (?P<article>{_ARTICLES})(?P<rest>(?: \(.*\))?)$"
)


def split_title_year(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; no trailing ``(YYYY)``: year None."""
    match = _YEAR_AT_END.match(title)
    if match is None:
        return title.strip(), None
    return match.group("title"), int(match.group("year"))


def front_article(title: str) -> str:
    """``"Usual Suspects, The"`` -> ``"The Usual Suspects"``; an alternative title in
    parentheses stays at the end: ``"Horseman on the Roof, The (Hussard sur le toit, Le)"`` ->
    ``"The Horseman on the Roof (Hussard sur le toit, Le)"``."""
    match = _TRAILING_ARTICLE.match(title)
    if match is None:
        return title
    article = match.group("article")
    glue = "" if article.endswith("'") else " "
    return f"{article}{glue}{match.group('body')}{match.group('rest')}"



# ---------------------------------------------------------------------------------------------
# conversion steps shared by ml-100k and ml-1m


def duplicate_id(seen: Mapping[str, int], key: str, path: Path, line: int, field_name: str,
                 problems: SourceProblems) -> bool:
    """True (and a problem naming the first line) if ``key`` is already in ``seen``.

    The caller records ``seen[key] = line`` once the row is accepted.
    """
    if key in seen:
        problems.add(path, line, field_name,
                     f"duplicate id {key!r} (first seen on line {seen[key]})")
        return True
    return False


class MovieTable:
    """The item records of a MovieLens movie file, built one movie at a time.

    Every movie gets the same record: description ``title`` (article restored),
    ``release_year``, ``genres`` (empty values left out); features ``release_year``,
    ``genres``, ``original_title``. Movies without genres are counted under ``unknown-genre``.
    """

    def __init__(self, report: ConvertReport, no_genre_reason: str):
        self.items: list[dict] = []
        self._report = report
        self._no_genre_reason = no_genre_reason
        self._moved = 0

    def add(self, iid: str, title: str, year: int | None, genres: list[str], original: str,
            where: str) -> None:
        """Add a movie; ``where`` (``file:line: field: text``) locates its genre field."""
        readable = front_article(title)
        self._moved += readable != title
        if not genres:
            self._report.repair("unknown-genre", self._no_genre_reason, where)
        description: dict[str, Any] = {"title": readable, "release_year": year, "genres": genres}
        self.items.append({
            "item_id": iid,
            "item_description": {k: v for k, v in description.items() if v not in (None, [])},
            "item_features": {"release_year": year, "genres": genres, "original_title": original},
        })

    def finish(self) -> list[dict]:
        """The records; notes how many titles had their article moved to the front."""
        if self._moved:
            self._report.notes["titles with the article moved to the front"] = self._moved
        return self.items

    def __repr__(self) -> str:
        return f"MovieTable({len(self.items)} movies)"


def known_rating_ids(uid: str, iid: str, users: set[str], items: set[str], path: Path, line: int,
                     report: ConvertReport, fields: tuple[str, str],
                     reasons: tuple[str, str]) -> bool:
    """True if both ids are known; else the rating is dropped under ``unknown-user`` /
    ``unknown-item`` with the given reasons (user, item)."""
    if uid not in users:
        report.drop("unknown-user", reasons[0], data_problem(path, line, fields[0], repr(uid)))
        return False
    if iid not in items:
        report.drop("unknown-item", reasons[1], data_problem(path, line, fields[1], repr(iid)))
        return False
    return True


Reader = Callable[[Path, SourceProblems, ConvertReport], list[dict]]
RatingReader = Callable[[Path, set[str], set[str], SourceProblems, ConvertReport], list[dict]]


def convert_movielens(dataset: str, folder: Path, files: Sequence[str], source_format: str,
                      project_path: Path, read_users: Reader, read_items: Reader,
                      read_ratings: RatingReader) -> ConvertReport:
    """Read the user, item and rating files (``files`` in that order) from ``folder``, raise
    every problem at once, and write raws ``dataset``.

    Raises:
        ConfigError: a file missing from ``folder``.
        DataError: malformed rows no rule covers, all listed as ``file:line: field: what``.
    """
    user_path, item_path, rating_path = require_files(folder, files, source_format)
    report = ConvertReport(dataset=dataset, source=str(folder))
    problems = SourceProblems()
    users = read_users(user_path, problems, report)
    items = read_items(item_path, problems, report)
    ratings = read_ratings(rating_path, {u["user_id"] for u in users},
                           {i["item_id"] for i in items}, problems, report)
    problems.raise_if_any(dataset, source_format)
    write_raw_records(project_path, dataset, users, items, ratings, report)
    return report
