"""MovieLens-1M (the original GroupLens release) -> raws ``ml-1m``.

Source (``--source DIR``, the unpacked ``ml-1m.zip``): ``ratings.dat``
(``UserID::MovieID::Rating::Timestamp``), ``users.dat``
(``UserID::Gender::Age::Occupation::Zip-code``), ``movies.dat`` (``MovieID::Title::Genres``,
genres ``|``-separated, the year at the end of the title), all ``::``-separated and latin-1.
No package carries ML-1M; download it from GroupLens (its licence forbids redistribution).

Output:
- users: description ``age`` (the README's range, "25-34"), ``gender``, ``occupation`` (the
  README's code table); features the same plus ``age_code``, ``occupation_code``, ``zip_code``.
- items: description ``title`` (leading article restored), ``release_year``, ``genres``;
  features ``release_year`` (None if unknown), ``genres``, ``original_title``.
- interactions: ``behavior_features = {"rating": 1..5}``, timestamp from unix seconds.

Rules (each counted in the report): ``unknown-year`` (no "(YYYY)" at the end of the title:
kept, no release-time filter), ``unknown-genre`` (no genres: kept with none),
``unknown-age-code`` / ``unknown-occupation-code`` / ``unknown-gender`` (a code outside the
README's table: kept without that field), ``unknown-user`` / ``unknown-item`` (a rating of an
id missing from users.dat / movies.dat: dropped). Anything else malformed is an error naming
file, line and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from usermirrorer.errors import ConfigError, data_problem
from usermirrorer.preprocessing.base import (
    Converter,
    ConvertReport,
    SourceProblems,
    iter_delimited,
    parse_int,
    timestamp_from_unix,
)
from usermirrorer.preprocessing.movielens import (
    AGE_GROUPS,
    GENDERS,
    OCCUPATIONS,
    MovieTable,
    convert_movielens,
    duplicate_id,
    known_rating_ids,
    split_title_year,
)

__all__ = ["CONVERTER", "convert"]

DATASET = "ml-1m"
FILES = ("users.dat", "movies.dat", "ratings.dat")
ENCODING = "latin-1"
SEP = "::"
SOURCE_FORMAT = (
    "MovieLens-1M release (ml-1m.zip unpacked): users.dat, movies.dat, ratings.dat "
    "('::'-separated, latin-1)"
)


def _read_users(path: Path, problems: SourceProblems, report: ConvertReport) -> list[dict]:
    users: list[dict] = []
    first_line: dict[str, int] = {}
    names = ("UserID", "Gender", "Age", "Occupation", "Zip-code")
    for line, (uid, gender_code, age_text, occ_text, zip_code) in iter_delimited(
        path, SEP, problems, n_fields=5, encoding=ENCODING, field_names=names
    ):
        uid = uid.strip()
        if duplicate_id(first_line, uid, path, line, "UserID", problems):
            continue
        age_code = parse_int(age_text, path, line, "Age", problems)
        occ_code = parse_int(occ_text, path, line, "Occupation", problems)
        if age_code is None or occ_code is None:
            continue
        first_line[uid] = line
        gender = GENDERS.get(gender_code.strip())
        age = AGE_GROUPS.get(age_code)
        occupation = OCCUPATIONS.get(occ_code)
        for rule, value, field_name, text in (
            ("unknown-gender", gender, "Gender", gender_code),
            ("unknown-age-code", age, "Age", age_text),
            ("unknown-occupation-code", occupation, "Occupation", occ_text),
        ):
            if value is None:
                report.repair(rule, f"{field_name} is not a code of the ML-1M README: kept "
                                    f"without {field_name.lower()}",
                              data_problem(path, line, field_name, repr(text)))
        description = {"age": age, "gender": gender, "occupation": occupation}
        description = {k: v for k, v in description.items() if v is not None}
        features = dict(description, age_code=age_code, occupation_code=occ_code,
                        zip_code=zip_code.strip())
        users.append({"user_id": uid, "user_description": description, "user_features": features})
    if not users and not problems:
        problems.add(path, None, None,
                     "no users; expected UserID::Gender::Age::Occupation::Zip-code")
    return users


def _read_movies(path: Path, problems: SourceProblems, report: ConvertReport) -> list[dict]:
    movies = MovieTable(report, "no genres listed: kept with no genres")
    first_line: dict[str, int] = {}
    for line, (iid, original, genre_text) in iter_delimited(
        path, SEP, problems, n_fields=3, encoding=ENCODING,
        field_names=("MovieID", "Title", "Genres"),
    ):
        iid = iid.strip()
        if duplicate_id(first_line, iid, path, line, "MovieID", problems):
            continue
        first_line[iid] = line
        original = original.strip()
        title, year = split_title_year(original)
        if year is None:
            report.repair("unknown-year",
                          "no (YYYY) at the end of the title: kept, no release-time filter",
                          data_problem(path, line, "Title", repr(original)))
        genres = [g.strip() for g in genre_text.split("|")
                  if g.strip() and g.strip().lower() not in ("(no genres listed)", "unknown")]
        movies.add(iid, title, year, genres, original,
                   data_problem(path, line, "Genres", repr(genre_text)))
    if not movies.items and not problems:
        problems.add(path, None, None, "no movies; expected MovieID::Title::Genres")
    return movies.finish()


def _read_ratings(
    path: Path, users: set[str], items: set[str], problems: SourceProblems, report: ConvertReport
) -> list[dict]:
    out: list[dict] = []
    for line, (uid, iid, rating_text, time_text) in iter_delimited(
        path, SEP, problems, n_fields=4, encoding=ENCODING,
        field_names=("UserID", "MovieID", "Rating", "Timestamp"),
    ):
        rating = parse_int(rating_text, path, line, "Rating", problems)
        seconds = parse_int(time_text, path, line, "Timestamp", problems)
        if rating is None or seconds is None:
            continue
        if not 1 <= rating <= 5:
            problems.add(path, line, "Rating", f"expected 1 to 5 stars, got {rating_text!r}")
            continue
        stamp = timestamp_from_unix(seconds, path, line, "Timestamp", problems)
        if stamp is None:
            continue
        uid, iid = uid.strip(), iid.strip()
        if not known_rating_ids(uid, iid, users, items, path, line, report, ("UserID", "MovieID"),
                                ("rating by a UserID missing from users.dat: dropped",
                                 "rating of a MovieID missing from movies.dat: dropped")):
            continue
        out.append({"user_id": uid, "item_id": iid, "timestamp": stamp,
                    "behavior_features": {"rating": rating}})
    if not out and not problems:
        problems.add(path, None, None, "no ratings; expected UserID::MovieID::Rating::Timestamp")
    return out


def convert(source: Path | None, project_path: Path, options: Mapping[str, Any]) -> ConvertReport:
    """Convert the ML-1M files in ``source`` into raws ``ml-1m``.

    Raises:
        ConfigError: a file missing from ``source``.
        DataError: malformed rows no rule covers, all listed as ``file:line: field: what``.
    """
    if source is None:
        raise ConfigError(f"{DATASET} needs --source DIR: the folder holding {SOURCE_FORMAT}")
    return convert_movielens(DATASET, source, FILES, SOURCE_FORMAT, project_path,
                             _read_users, _read_movies, _read_ratings)


CONVERTER = Converter(
    name=DATASET,
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    description="MovieLens-1M: 6,040 users rate 3,900 movies (2000-2003)",
)
