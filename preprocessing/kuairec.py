"""KuaiRec 2.0: short videos Kuaishou users watched, with how much of each they watched.

Source: KuaiRec 2.0 of Gao et al. (CIKM 2022), https://kuairec.com — ``KuaiRec 2.0/data/``,
comma-separated with a header:

- ``big_matrix.csv`` / ``small_matrix.csv`` — ``user_id, video_id, play_duration,
  video_duration`` (ms), ``time`` (``2020-07-05 00:08:23.438``), ``date``, ``timestamp`` (unix
  seconds, float), ``watch_ratio`` (play / video duration; above 1 means re-watched);
- ``kuairec_caption_category.csv`` — ``video_id, manual_cover_text, caption, topic_tag,
  first/second/third_level_category_id/_name`` (Chinese text; ``UNKNOWN`` when absent);
- optional ``item_daily_features.csv`` (``video_id, date, author_id, video_type, upload_dt,
  ...``: the upload date), ``user_features.csv`` (``user_id, user_active_degree,
  follow_user_num, fans_user_num, friend_user_num, register_days, is_video_author, ...``).

A feed shows every video; a video counts as chosen when it was watched at least
``--min-watch-ratio`` times its length (default 2.0, the "like" threshold the dataset authors
suggest). Raws: one interaction per such view with its ``watch_ratio``. Rules: views under
the threshold are left out (counted); rows with no time at all are dropped (a few in the
published matrices), rows with only ``time`` are repaired from it; caption rows broken by
unquoted line breaks are dropped; upload dates give the release-time rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError, DataError, data_problem
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
    iter_csv,
    parse_date,
)

__all__ = ["CONVERTER", "convert"]

SOURCE_FORMAT = ("KuaiRec 2.0 data/: big_matrix.csv or small_matrix.csv + "
                 "kuairec_caption_category.csv [+ item_daily_features.csv, user_features.csv]")
_MATRIX_COLUMNS = ("user_id", "video_id", "time", "timestamp", "watch_ratio")
_CAPTION_COLUMNS = ("video_id", "manual_cover_text", "caption", "topic_tag",
                    "first_level_category_name", "second_level_category_name",
                    "third_level_category_name")


def _read_matrix(path: Path, report: ConvertReport, min_ratio: float):
    """The matrix as arrays (vectorised: the big matrix has 12.5M rows)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, usecols=list(_MATRIX_COLUMNS), dtype={"time": str},
                            keep_default_na=True)
        users = frame["user_id"].to_numpy(np.int64)
        videos = frame["video_id"].to_numpy(np.int64)
        ratio = frame["watch_ratio"].to_numpy(np.float64)
        seconds = frame["timestamp"].to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError("cannot read the KuaiRec matrix",
                        [data_problem(path, None, None, f"expected numeric {', '.join(_MATRIX_COLUMNS)} "
                                      f"columns ({exc})")]) from exc
    line = np.arange(len(frame)) + 2  # 1-based, after the header
    missing = np.isnan(seconds)
    for i in np.flatnonzero(missing & frame["time"].notna().to_numpy()):
        # 'time' is Beijing time (UTC+8), 'timestamp' is unix seconds.
        parsed = parse_date(frame["time"].iat[i].split(".")[0] + " +0800", "%Y-%m-%d %H:%M:%S %z")
        if parsed is not None:
            seconds[i], missing[i] = parsed, False
            report.repair("time-from-text", "no unix timestamp: taken from the 'time' column",
                          data_problem(path, line[i], "timestamp", "empty"))
    first = np.flatnonzero(missing)[:1]
    report.drop("no-time", "a view with neither timestamp nor time",
                data_problem(path, line[first[0]], "timestamp", "empty") if len(first) else None,
                n=int(missing.sum()))
    weak = ~missing & ~(ratio >= min_ratio)
    report.drop("below-watch-ratio", f"watched less than {min_ratio:g} times the video's "
                "length: seen in the feed, not chosen", n=int(weak.sum()))
    keep = ~missing & ~weak
    return users[keep], videos[keep], seconds[keep].astype(np.int64), ratio[keep], line[keep]


def convert(source: Path, project_path: Path, options: dict[str, Any]) -> ConvertReport:
    """Convert ``KuaiRec 2.0/data`` in ``source`` (see the module docstring)."""
    if options["matrix"] not in ("big", "small"):
        raise ConfigError(f"--matrix must be 'big' or 'small', got {options['matrix']!r}")
    report = ConvertReport("kuairec", str(source))
    problems = SourceProblems()
    tables = RawTables("kuairec", report)

    def found(name: str, required: bool = True) -> Path | None:
        return find_source_file(source, f"KuaiRec 2.0/data/{name}", f"data/{name}", name,
                                source_format=SOURCE_FORMAT, required=required)

    uploads: dict[str, tuple[int | None, str]] = {}
    daily = found("item_daily_features.csv", False)
    if daily is not None:
        for _, row, _ in iter_csv(daily, ("video_id", "upload_dt", "video_duration"), problems):
            if row["video_id"] not in uploads:
                uploads[row["video_id"]] = (parse_date(row["upload_dt"], "%Y-%m-%d"),
                                            row["video_duration"])
    captions = found("kuairec_caption_category.csv")
    for line, row, complete in iter_csv(captions, _CAPTION_COLUMNS, problems):
        if not complete or not row["video_id"].isdigit():
            report.drop("broken-caption-row", "a caption row cut by an unquoted line break",
                        data_problem(captions, line, "video_id", repr(row["video_id"][:30])))
            continue
        released, length = uploads.get(row["video_id"], (None, ""))
        path = [clean_text(row[f"{level}_level_category_name"])
                for level in ("first", "second", "third")]
        millis = float(length) if length.replace(".", "", 1).isdigit() else 0.0
        title = clean_text(row["caption"], 100) or clean_text(row["manual_cover_text"], 100)
        cover = clean_text(row["manual_cover_text"], 60)
        tables.add_item(row["video_id"], {
            "title": title,
            "cover text": cover if cover != title else "",
            "category": " > ".join(p for p in path if p),
            "topics": clean_text(row["topic_tag"].strip("[]").replace(",", ", ")),
            "length": f"{millis / 1000:.0f} s" if millis else "",
        }, {"release_time": released}, f"{captions}:{line}")

    people = found("user_features.csv", False)
    if people is not None:
        for line, row, complete in iter_csv(people, ("user_id", "user_active_degree",
                                                     "follow_user_num", "fans_user_num",
                                                     "register_days"), problems):
            if not complete:
                problems.add(people, line, None, "wrong number of cells; quote cells holding commas")
                continue
            tables.add_user(row["user_id"], {
                "activity": clean_text(row["user_active_degree"]).replace("_", " "),
                "follows": row["follow_user_num"], "fans": row["fans_user_num"],
                "on Kuaishou for": f"{row['register_days']} days" if row["register_days"] else "",
            })

    matrix = found(f"{options['matrix']}_matrix.csv")
    users, videos, seconds, ratio, lines = _read_matrix(matrix, report, options["min_watch_ratio"])
    problems.raise_if_any("kuairec", SOURCE_FORMAT)
    for user, video, second, r, line in zip(users.tolist(), videos.tolist(), seconds.tolist(),
                                            ratio.round(2).tolist(), lines.tolist()):
        tables.add_interaction(str(user), str(video), second, {"watch_ratio": r},
                               (matrix, line))
    report.notes["matrix"] = matrix.name
    tables.write(project_path)
    return report


CONVERTER = Converter(
    name="kuairec",
    source_format=SOURCE_FORMAT,
    needs_source=True,
    convert=convert,
    options=(
        ConverterOption("matrix", str, "big", "KuaiRec: 'big' (sparse log) or 'small' (dense) matrix"),
        ConverterOption("min-watch-ratio", float, 2.0,
                        "KuaiRec: a view counts as chosen from this watch ratio on"),
    ),
    description="Kuaishou short-video views with watch ratios (KuaiRec 2.0)",
)
