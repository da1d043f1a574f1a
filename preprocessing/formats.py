"""Readers, parsers and a table builder that the public-dataset converters share.

The public datasets come as plain or gzipped files, as JSON lines or Python-literal lines
(Steam), as quoted CSV with a header (KuaiRec, MobileRec), with dates in half a dozen
formats. Each converter names its files and columns; everything else lives here once:

- :func:`find_source_file` finds ``name`` or ``name.gz`` (optionally in a sub-folder);
- :func:`iter_records` yields JSON / Python-literal objects per line, bad lines as problems;
- :func:`iter_csv` yields quoted-CSV rows as dicts, checking the header;
- :func:`parse_date` / :func:`clean_text` turn date strings and free text into what the raws hold;
- :class:`RawTables` links users, items and interactions, counts every drop by rule and
  writes the raws.

This module defines no ``CONVERTER``; the registry skips it.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from usermirrorer.data_pipeline.raw import RawPaths
from usermirrorer.errors import ConfigError, DataError, data_problem
from usermirrorer.preprocessing.base import (
    ConvertReport,
    SourceProblems,
    format_times,
    write_raw_records,
)

__all__ = [
    "RawTables",
    "clean_text",
    "find_source_file",
    "iter_csv",
    "iter_records",
    "open_text",
    "parse_date",
]

# Values the datasets use for "nothing here"; rendered text must not show them.
_PLACEHOLDERS = frozenset({"", "unknown", "none", "null", "nan", "n/a", "[]", "{}"})
_TAG = re.compile(r"<[^>]+>")
# Some CSV cells (KuaiRec captions, MobileRec descriptions) exceed csv's 128 KiB default.
csv.field_size_limit(1 << 24)


def find_source_file(
    source: Path, *names: str, source_format: str, required: bool = True
) -> Path | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists under ``source``.

    Names may contain a sub-folder (``interactions/mobilerec_final.csv``); the bare file name is
    tried directly under ``source`` as well, so both the published layout and a flat folder work.

    Raises:
        ConfigError: ``required`` and none exists; names every file looked for.
    """
    tried: list[str] = []
    for name in names:
        for candidate in (name, Path(name).name):
            for path in (source / candidate, source / f"{candidate}.gz"):
                if str(path) not in tried:
                    tried.append(str(path))
                if path.is_file():
                    return path
    if required:
        raise ConfigError(
            f"{source} lacks {' or '.join(names)} (also looked for .gz); expected {source_format}"
        )
    return None


def open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    """Open a plain or gzipped text file for reading."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def iter_records(
    path: Path, problems: SourceProblems, *, python_literal: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file.

    Args:
        path: plain or ``.gz`` file.
        problems: a line that is not an object is recorded here and skipped.
        python_literal: lines are Python dict literals (``{'a': True}``), as in the Steam
            files of Kang & McAuley; parsed with :func:`ast.literal_eval`, never ``eval``.
    """
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            line = line.strip()
            try:
                record = ast.literal_eval(line) if python_literal else json.loads(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                kind = "a Python dict literal" if python_literal else "JSON"
                problems.add(path, lineno, None, f"not valid {kind} ({type(exc).__name__}: "
                             f"{str(exc)[:80]}); the line may be truncated")
                continue
            if not isinstance(record, dict):
                problems.add(path, lineno, None, f"expected an object, got {type(record).__name__}")
                continue
            yield lineno, record


def iter_csv(
    path: Path,
    required: Sequence[str],
    problems: SourceProblems,
    *,
    sep: str = ",",
    encoding: str = "utf-8",
) -> Iterator[tuple[int, dict[str, str], bool]]:
    """Yield ``(line_number, row, complete)`` for each row of a quoted CSV file with a header.

    Quoted cells may hold separators and newlines; ``line_number`` is where the row starts.
    ``complete`` is False when the row has a different number of cells than the header (the
    caller drops it under its own rule: real files hold a few rows broken by unquoted
    newlines); missing cells read as ``""``.

    Raises:
        DataError: the header lacks a ``required`` column (names the file and the columns).
    """
    with open_text(path, encoding) as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, None)
        if header is None:
            raise DataError("empty file", [data_problem(path, 1, None, "expected a header line")])
        header = [h.strip().lstrip("\ufeff") for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(
                "CSV header lacks required columns",
                [data_problem(path, 1, None, f"missing column(s) {', '.join(missing)}; "
                              f"found {', '.join(header)}")],
            )
        start = reader.line_num + 1
        for cells in reader:
            lineno, start = start, reader.line_num + 1
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            complete = len(cells) == len(header)
            row = dict(zip(header, cells))
            for column in header[len(cells):]:
                row[column] = ""
            yield lineno, row, complete


def parse_date(text: Any, *formats: str) -> int | None:
    """Unix seconds of ``text`` in the first of ``formats`` that fits; None if none does.

    Dates without a zone are taken as UTC (the datasets do not say otherwise).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    for fmt in formats:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp())
    return None


def clean_text(value: Any, max_chars: int | None = None) -> str:
    """Readable text from a dataset field: HTML tags and entities removed, whitespace collapsed,
    placeholders (``UNKNOWN``, ``None``, ``[]``) turned into ``""``, lists joined, and cut at a
    word boundary to ``max_chars`` with an ellipsis."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    text = str(value)
    if "<" in text or "&" in text:  # the regex and unescape only where markup can be
        text = html.unescape(_TAG.sub(" ", text))
    text = " ".join(text.split())
    if text.lower() in _PLACEHOLDERS:
        return ""
    if max_chars is not None and len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0] if " " in text[:max_chars] else text[:max_chars]
        text = cut.rstrip(" ,;:.") + "…"
    return text


# Where a record came from: a ready message, or (file, line) formatted only when reported —
# large logs hold millions of events, so the hot loops pass the cheap tuple.
Where = str | tuple[Path, int] | None


def _where(where: Where) -> str | None:
    if isinstance(where, tuple):
        return f"{where[0]}:{where[1]}"
    return where


def _compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values so descriptions hold only what is known."""
    return {k: v for k, v in fields.items()
            if not (v is None or v == "" or (type(v) in (list, dict) and not v))}


class RawTables:
    """Users, items and interactions of one conversion, linked and counted before writing.

    Converters add what they read; :meth:`write` then drops interactions of items without a
    record, exact duplicate events, and (by default) users and items that no interaction
    mentions — each under a rule in the report — and writes the three raw files.

    Users need no record of their own: a user seen only in interactions gets empty fields.
    """

    def __init__(self, dataset: str, report: ConvertReport):
        self.dataset = dataset
        self.report = report
        self.users: dict[str, tuple[dict, dict]] = {}
        self.items: dict[str, tuple[dict, dict]] = {}
        self._events: list[tuple[str, str, int, dict, Where]] = []

    def add_user(self, user_id: str, description: Mapping[str, Any] | None = None,
                 features: Mapping[str, Any] | None = None, where: str | None = None) -> None:
        """Add a user record; a repeated id is dropped (first record kept)."""
        if user_id in self.users:
            self.report.drop("duplicate-user", "a second record of the same user id; the first "
                             "is kept", where)
            return
        self.users[user_id] = (_compact(description or {}), _compact(features or {}))

    def add_item(self, item_id: str, description: Mapping[str, Any] | None = None,
                 features: Mapping[str, Any] | None = None, where: str | None = None) -> None:
        """Add an item record; a repeated id is dropped (first record kept)."""
        if item_id in self.items:
            self.report.drop("duplicate-item", "a second record of the same item id; the first "
                             "is kept", where)
            return
        self.items[item_id] = (_compact(description or {}), _compact(features or {}))

    def add_interaction(self, user_id: str, item_id: str, seconds: int,
                        behavior: Mapping[str, Any] | None = None, where: Where = None) -> None:
        """Add one event: ``user_id`` chose ``item_id`` at unix ``seconds``."""
        self._events.append((user_id, item_id, int(seconds), _compact(behavior or {}), where))

    def __len__(self) -> int:
        return len(self._events)

    def write(self, project_path: str | os.PathLike, *, keep_unused_items: bool = False,
              shown_items: set[str] | None = None) -> RawPaths:
        """Link, count drops, and write ``<project>/raws/<dataset>_*.jsonl``.

        Args:
            keep_unused_items: keep items no interaction mentions (a full catalog); by default
                they are dropped, since metadata files often cover far more items than the log.
            shown_items: items to keep although no interaction chose them (those in logged
                impression lists, which scenes show).

        Raises:
            DataError: nothing is left to write (names the rules that removed everything).
        """
        report = self.report
        kept: list[tuple[str, str, int, dict]] = []
        seen: set[tuple[str, str, int]] = set()
        for user, item, seconds, behavior, where in self._events:
            if item not in self.items:
                report.drop("unknown-item", "the item has no record in the item file, so it "
                            "cannot be described", _where(where))
                continue
            key = (user, item, seconds)
            if key in seen:
                report.drop("duplicate-interaction", "the same user, item and time appear twice; "
                            "one is kept", _where(where))
                continue
            seen.add(key)
            kept.append((user, item, seconds, behavior))
        if not kept:
            rules = ", ".join(f"{r.rule} ({r.count})" for r in report.dropped.values()) or "none"
            raise DataError(f"no interactions of {self.dataset!r} are left to write; "
                            f"drop rules that fired: {rules}")

        used_users = dict.fromkeys(user for user, _, _, _ in kept)
        used_items = {item for _, item, _, _ in kept} | (shown_items or set())
        unused = sum(1 for u in self.users if u not in used_users)
        report.drop("user-without-interactions", "a user record with no kept interaction",
                    n=unused)
        if not keep_unused_items:
            report.drop("item-without-interactions", "an item record no kept interaction mentions "
                        "(pass a full catalog with keep_unused_items)",
                        n=sum(1 for i in self.items if i not in used_items))

        empty: tuple[dict, dict] = ({}, {})
        users = (
            {"user_id": u, "user_description": self.users.get(u, empty)[0],
             "user_features": self.users.get(u, empty)[1]}
            for u in used_users
        )
        items = (
            {"item_id": i, "item_description": d, "item_features": f}
            for i, (d, f) in self.items.items()
            if keep_unused_items or i in used_items
        )
        stamps = format_times([seconds for _, _, seconds, _ in kept])
        interactions = (
            {"user_id": u, "item_id": i, "timestamp": stamp, "behavior_features": b}
            for (u, i, _, b), stamp in zip(kept, stamps)
        )
        return write_raw_records(project_path, self.dataset, users, items, interactions, report)

    def __repr__(self) -> str:
        return (f"RawTables({self.dataset!r}: {len(self.users):,} users, {len(self.items):,} "
                f"items, {len(self._events):,} interactions added)")
