"""What the MovieLens converters share: code tables and title parsing.

MovieLens titles read like library index cards ("Usual Suspects, The (1995)"); the converters
turn them into what a person would say ("The Usual Suspects", released 1995) and keep the
original in ``item_features["original_title"]``.
"""

from __future__ import annotations

import re

__all__ = [
    "AGE_GROUPS",
    "OCCUPATIONS",
    "GENDERS",
    "split_title_year",
    "front_article",
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

