"""MobileRec: Google Play apps users installed and reviewed.

Source: MobileRec of Maqbool et al. (SIGIR 2023), https://huggingface.co/datasets/recmeapp/mobilerec
— comma-separated with a header, quoted free text:

- ``interactions/mobilerec_final.csv`` — ``app_package, review, rating, votes, date``
  (``October 21, 2018``), ``uid``, ``formated_date`` (``2018-10-21``), ``unix_timestamp``
  (float seconds), ``app_category``;
- ``app_meta/app_meta.csv`` — ``app_package, app_name, developer_name, app_category,
  description, content_rating, num_reviews, price, avg_rating``.

Raws: one interaction per review (the file's proxy for an install), with the rating and
the review's first words. Rules: an
empty or zero ``unix_timestamp`` (a few dozen rows of the release) is repaired from
``formated_date``; rows with neither are dropped; reviews of apps missing from ``app_meta`` are
dropped.
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
    iter_csv,
    parse_date,
)

__all__ = ["CONVERTER", "convert"]

SOURCE_FORMAT = ("MobileRec (recmeapp/mobilerec): interactions/mobilerec_final.csv + "
                 "app_meta/app_meta.csv, quoted CSV with a header")
_INTERACTION_COLUMNS = ("app_package", "rating", "uid", "formated_date", "unix_timestamp")
_META_COLUMNS = ("app_package", "app_name", "developer_name", "app_category", "description",
                 "content_rating", "num_reviews", "price", "avg_rating")


def _positive(text: str) -> float | None:
    """``float(text)`` when it is a positive number (0 marks a missing value here)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def convert(source: Path, project_path: Path, options: dict[str, Any]) -> ConvertReport:
    """Convert the MobileRec folder ``source`` (see the module docstring)."""
    report = ConvertReport("mobilerec", str(source))
    problems = SourceProblems()
    tables = RawTables("mobilerec", report)
    inter_path = find_source_file(source, "interactions/mobilerec_final.csv", source_format=SOURCE_FORMAT)
    meta_path = find_source_file(source, "app_meta/app_meta.csv", source_format=SOURCE_FORMAT)

    for line, row, complete in iter_csv(meta_path, _META_COLUMNS, problems):
        if not complete:
            problems.add(meta_path, line, None, "wrong number of cells; is a quote missing?")
            continue
        rating = _positive(row["avg_rating"])
        tables.add_item(row["app_package"], {
            "title": clean_text(row["app_name"], 80),
            "developer": clean_text(row["developer_name"]),
            "category": clean_text(row["app_category"]),
            "price": clean_text(row["price"]),
            "content rating": clean_text(row["content_rating"]),
            "average rating": f"{rating:.1f}" if rating else "",
            "reviews": clean_text(row["num_reviews"]),
            "about": clean_text(row["description"], 160),
        }, {}, f"{meta_path}:{line}")

    for line, row, complete in iter_csv(inter_path, _INTERACTION_COLUMNS, problems):
        if not complete:
            problems.add(inter_path, line, None, "wrong number of cells; is a quote missing?")
            continue
        where = data_problem(inter_path, line, "unix_timestamp", repr(row["unix_timestamp"]))
        stamp = _positive(row["unix_timestamp"])
        seconds = None if stamp is None else int(stamp)
        if seconds is None:
            seconds = parse_date(row["formated_date"], "%Y-%m-%d")
            if seconds is None:
                report.drop("no-time", "neither unix_timestamp nor formated_date holds a date", where)
                continue
            report.repair("time-from-date", "empty or zero unix_timestamp: taken from "
                          "formated_date (day resolution)", where)
        rating = _positive(row["rating"])
        tables.add_interaction(row["uid"], row["app_package"], seconds,
                               {"rating": None if rating is None else int(rating),
                                "review": clean_text(row.get("review"), 120)},
                               (inter_path, line))
    problems.raise_if_any("mobilerec", SOURCE_FORMAT)
    tables.write(project_path)
    return report


CONVERTER = Converter(
    name="mobilerec",
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    description="Google Play app reviews with ratings (MobileRec)",
)
