"""MIND (Microsoft News Dataset): news clicks together with the impressions they came from.

Source: the MIND release of Wu et al. (ACL 2020), https://msnews.github.io — one unzipped split
folder of ``MINDsmall_train.zip`` / ``MINDsmall_dev.zip`` / ``MINDlarge_train.zip``:

- ``behaviors.tsv`` — tab-separated, no header: impression id, user id, time
  (``11/15/2019 8:55:22 AM``), history (space-separated news ids clicked before the log
  window, may be empty), impressions (``N55689-1 N35729-0``: news id, 1 clicked / 0 not).
- ``news.tsv`` — tab-separated, no header: news id, category, subcategory, title, abstract,
  URL, title entities, abstract entities.

Raws: one interaction per click, at its impression's time, with the impression as behaviour
feature ``impression`` (the unclicked news shown plus this click, in the order shown): the
news strategy's ``logged_exposure_key``, so scenes replay real exposures instead of
synthesising them. History clicks have no time: with ``--history before-log`` (default) they
are placed one second apart just before the user's first impression and flagged
``before_log`` (rendered as "before the log"), with ``--history skip`` they are left out.

Rules: impressions without click labels (the test split) are dropped; news ids without a
``news.tsv`` record are removed from impression lists (repaired).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usermirrorer.errors import ConfigError
from usermirrorer.preprocessing.base import (
    Converter,
    ConverterOption,
    ConvertReport,
    SourceProblems,
    iter_delimited,
)
from usermirrorer.preprocessing.formats import RawTables, clean_text, find_source_file, parse_date

__all__ = ["CONVERTER", "convert"]

SOURCE_FORMAT = "MIND (msnews.github.io) split folder: behaviors.tsv + news.tsv, tab-separated"
_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_BEHAVIOR_FIELDS = ("impression id", "user id", "time", "history", "impressions")
_NEWS_FIELDS = ("news id", "category", "subcategory", "title", "abstract", "url",
                "title entities", "abstract entities")


def convert(source: Path, project_path: Path, options: dict[str, Any]) -> ConvertReport:
    """Convert one MIND split folder (see the module docstring)."""
    if options["history"] not in ("before-log", "skip"):
        raise ConfigError(f"--history must be 'before-log' or 'skip', got {options['history']!r}")
    report = ConvertReport("mind", str(source))
    problems = SourceProblems()
    tables = RawTables("mind", report)
    news_path = find_source_file(source, "news.tsv", source_format=SOURCE_FORMAT)
    behaviors_path = find_source_file(source, "behaviors.tsv", source_format=SOURCE_FORMAT)

    for line, f in iter_delimited(news_path, "\t", problems, n_fields=8, field_names=_NEWS_FIELDS):
        tables.add_item(
            f[0],
            {"title": clean_text(f[3]), "category": f[1], "subcategory": f[2],
             "abstract": clean_text(f[4], 240)},
            {"category": f[1], "subcategory": f[2]},
            where=f"{news_path}:{line}",
        )

    shown: set[str] = set()
    first_seen: dict[str, tuple[int, list[str]]] = {}  # user -> (earliest time, history)
    for line, f in iter_delimited(behaviors_path, "\t", problems, n_fields=5,
                                  field_names=_BEHAVIOR_FIELDS):
        where = f"{behaviors_path}:{line}"
        seconds = parse_date(f[2], _TIME_FORMAT)
        if seconds is None:
            problems.add(behaviors_path, line, "time", f"expected 'MM/DD/YYYY HH:MM:SS AM', got {f[2]!r}")
            continue
        tokens = f[4].split()
        if any("-" not in t for t in tokens):
            report.drop("unlabelled-impression", "impression without click labels (test split): "
                        "no chosen item", f"{where}: impressions: {f[4][:40]!r}")
            continue
        pairs = [t.rsplit("-", 1) for t in tokens]
        known = [(n, label) for n, label in pairs if n in tables.items]
        if len(known) < len(pairs):
            report.repair("unknown-news-in-impression", "news id without a news.tsv record "
                          "removed from the impression list", where, n=len(pairs) - len(known))
        clicks = [n for n, label in known if label == "1"]
        for click in clicks:
            impression = [n for n, label in known if label == "0" or n == click]
            tables.add_interaction(f[1], click, seconds,
                                   {"impression": impression, "impression_id": f[0]}, where)
            shown.update(impression)
        if f[1] not in first_seen or seconds < first_seen[f[1]][0]:
            first_seen[f[1]] = (seconds, f[3].split())
    problems.raise_if_any("mind", SOURCE_FORMAT)

    if options["history"] == "before-log":
        placed = 0
        for user, (start, history) in first_seen.items():
            for k, news in enumerate(history):
                tables.add_interaction(user, news, start - len(history) + k, {"before_log": True})
            placed += len(history)
        report.repair("history-before-log", "history click without a time: placed in order just "
                      "before the user's first impression, flagged before_log", n=placed)
    report.notes["impressions_as_exposures"] = True
    tables.write(project_path, shown_items=shown)
    return report


CONVERTER = Converter(
    name="mind",
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    options=(ConverterOption("history", str, "before-log",
                             "MIND: 'before-log' keeps history clicks just before the first "
                             "impression, 'skip' leaves them out"),),
    description="news clicks with their real impression lists (Microsoft News)",
)
