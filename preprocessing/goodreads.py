"""Goodreads: books readers shelved, read and rated (the UCSD Book Graph).

Source: Wan & McAuley (RecSys 2018) / Wan et al. (ACL 2019),
https://mengtingwan.github.io/data/goodreads.html — JSON lines, usually gzipped:

- ``goodreads_interactions_<genre>.json.gz`` (or the full ``goodreads_interactions_dedup``) —
  ``user_id``, ``book_id``, ``review_id``, ``is_read``, ``rating`` (0 = not rated),
  ``review_text_incomplete``, ``date_added`` / ``date_updated`` / ``read_at`` / ``started_at``
  (``Mon Aug 21 04:28:15 -0700 2017``, or ``""``);
- ``goodreads_books_<genre>.json.gz`` (or ``goodreads_books``) — ``book_id``, ``title``,
  ``authors`` (``[{"author_id", "role"}]``), ``publication_year/month/day``, ``num_pages``,
  ``average_rating``, ``ratings_count``, ``popular_shelves`` (``[{"count", "name"}]``),
  ``description``, ... (numbers are strings; ``""`` when unknown);
- optional ``goodreads_book_authors.json.gz`` — ``author_id``, ``name``, ...

``--genre`` picks a genre subset (``poetry``, ``young_adult`` ...); without it the full files
are read, or the only genre subset in the folder.

Raws: one interaction per shelving, at ``date_added``, with the shelf (``read`` or
``to-read``), the rating when given and whether a review was written. Rules: books without a
publication year get no release-time rule (repaired); shelvings of books missing from the
books file are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usermirrorer.errors import ConfigError, data_problem
from usermirrorer.preprocessing.base import (
    Converter,
    ConverterOption,
    ConvertReport,
    SourceProblems,
)
from usermirrorer.preprocessing.formats import (
    RawTables,
    clean_text,
    find_source_file,
    iter_records,
    parse_date,
)

__all__ = ["CONVERTER", "convert"]

SOURCE_FORMAT = ("UCSD Goodreads: goodreads_interactions_<genre>.json.gz + goodreads_books_<genre>"
                 ".json.gz [+ goodreads_book_authors.json.gz], JSON lines")
_DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"
# Shelves that say how a reader stores a book, not what it is about.
_GENERIC_SHELVES = frozenset({
    "to-read", "currently-reading", "favorites", "favourites", "owned", "books-i-own",
    "my-books", "default", "library", "wish-list", "wishlist", "kindle", "ebook", "ebooks",
    "owned-books", "to-buy", "re-read", "dnf",
})


def _pick_genre(source: Path, genre: str | None) -> str:
    """File-name suffix: ``_<genre>``, ``""`` for the full files, or the only subset present."""
    if genre:
        return f"_{genre}"
    if find_source_file(source, "goodreads_interactions_dedup.json",
                        source_format=SOURCE_FORMAT, required=False):
        return ""
    found = sorted(p.name.split(".")[0].removeprefix("goodreads_interactions_")
                   for p in source.glob("goodreads_interactions_*.json*"))
    if len(found) != 1:
        raise ConfigError(f"{source} holds {len(found)} Goodreads genre subsets ({', '.join(found)}); "
                          "pick one with --genre" if found else f"{source} lacks {SOURCE_FORMAT}")
    return f"_{found[0]}"


def _number(text: Any) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _release(book: dict[str, Any]) -> int | None:
    year = _number(book.get("publication_year"))
    if year is None or year < 1:
        return None
    month = _number(book.get("publication_month")) or 1
    day = _number(book.get("publication_day")) or 1
    return parse_date(f"{year:04d}-{month:02d}-{day:02d}", "%Y-%m-%d") or parse_date(f"{year:04d}", "%Y")


def convert(source: Path, project_path: Path, options: dict[str, Any]) -> ConvertReport:
    """Convert Goodreads files in ``source`` (see the module docstring)."""
    suffix = _pick_genre(source, options.get("genre"))
    report = ConvertReport("goodreads", str(source))
    problems = SourceProblems()
    tables = RawTables("goodreads", report)
    full = suffix == ""
    inter_path = find_source_file(source, f"goodreads_interactions{suffix or '_dedup'}.json",
                                  source_format=SOURCE_FORMAT)
    books_path = find_source_file(source, f"goodreads_books{suffix}.json", source_format=SOURCE_FORMAT)
    authors_path = find_source_file(source, "goodreads_book_authors.json",
                                    source_format=SOURCE_FORMAT, required=False)

    authors: dict[str, str] = {}
    if authors_path is not None:
        for _, author in iter_records(authors_path, problems):
            authors[str(author.get("author_id"))] = clean_text(author.get("name"))
    for line, book in iter_records(books_path, problems):
        released = _release(book)
        if released is None:
            report.repair("no-publication-year", "no publication year: kept without a "
                          "release-time rule", data_problem(books_path, line, "publication_year",
                                                            repr(book.get("publication_year"))))
        shelves = [s.get("name") for s in book.get("popular_shelves") or []
                   if s.get("name") not in _GENERIC_SHELVES][:3]
        names = [authors.get(str(a.get("author_id")), "") for a in book.get("authors") or []
                 if not a.get("role")]
        rating, count = book.get("average_rating"), _number(book.get("ratings_count"))
        tables.add_item(str(book.get("book_id")), {
            "title": clean_text(book.get("title"), 120),
            "author": ", ".join(n for n in names if n),
            "published": _number(book.get("publication_year")),
            "pages": _number(book.get("num_pages")),
            "average rating": f"{rating} ({count:,} ratings)" if rating and count else "",
            "shelves": shelves,
            "about": clean_text(book.get("description"), 160),
        }, {"release_time": released, "shelves": shelves}, f"{books_path}:{line}")

    for line, event in iter_records(inter_path, problems):
        seconds = parse_date(event.get("date_added"), _DATE_FORMAT)
        if seconds is None or not event.get("user_id"):
            problems.add(inter_path, line, "date_added",
                         f"expected 'Mon Aug 21 04:28:15 -0700 2017', got {event.get('date_added')!r}")
            continue
        rating = event.get("rating")
        tables.add_interaction(str(event["user_id"]), str(event.get("book_id")), seconds, {
            "shelf": "read" if event.get("is_read") else "to-read",
            "rating": rating if isinstance(rating, int) and rating > 0 else None,
            "reviewed": bool(event.get("review_text_incomplete")) or None,
        }, (inter_path, line))
    problems.raise_if_any("goodreads", SOURCE_FORMAT)
    report.notes["subset"] = "full" if full else suffix.lstrip("_")
    tables.write(project_path)
    return report


CONVERTER = Converter(
    name="goodreads",
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    options=(ConverterOption("genre", str, None,
                             "Goodreads: genre subset of the file names (poetry, young_adult ...)"),),
    description="Goodreads shelvings and ratings of books (UCSD Book Graph)",
)
