"""The unified raw format: three JSONL files per dataset, validated on load (DESIGN.md §2).

``<project>/raws/<D>_user_feature.jsonl``, ``<D>_item_feature.jsonl``, ``<D>_interaction.jsonl``.

:func:`load_raws` reads them into a :class:`RawDataset`: integer-indexed numpy arrays that scene
sampling, the choice models and the environment share. Every problem found while loading is
reported as ``file:line: field: what was expected``, all of them at once, and nothing is dropped
silently. A clean load is kept as a parsed copy (``<project>/cache/<D>.raws.npz``, keyed by the
three files' bytes), so the next load of the same files skips parsing and validation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.jsonl import has_bom, iter_jsonl, write_jsonl
from usermirrorer.errors import DataError, data_problem

__all__ = [
    "RawPaths",
    "RawDataset",
    "raw_paths",
    "load_raws",
    "write_raws",
    "describe_fields",
    "RawWrite",
    "format_time",
    "parse_time",
    "dataset_records",
]

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Exactly ``YYYY-MM-DD HH:MM:SS``: numpy alone also reads '1997-12-04 15:55+05' (19 characters,
# no seconds, an offset) and shifts it silently.
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# Behaviour features the strategies read as numbers, with the range they render them in
# ("rated 4/5", "12 plays"): a value outside it is a broken log line, not a preference.
BEHAVIOR_RANGES: dict[str, tuple[float, float]] = {
    "rating": (0.0, 5.0),
    "plays": (0.0, float("inf")),
    "hours_played": (0.0, float("inf")),
}
_MAX_PROBLEMS = 200
_PARSED_FORMAT = 1  # bump when RawDataset or the checks change: older parsed copies are then ignored
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawPaths:
    """Where the three raw files of one dataset live."""

    users: Path
    items: Path
    interactions: Path

    def __iter__(self):
        return iter((self.users, self.items, self.interactions))


def describe_fields(fields: Mapping[str, Any], sep: str = ", ") -> str:
    """``field: value`` pairs of a description dict, skipping empty values; lists joined."""
    parts = []
    for key, value in fields.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return sep.join(parts)


def raw_paths(project_path: str | os.PathLike, dataset: str) -> RawPaths:
    """Paths of the raw files of ``dataset`` under ``project_path/raws``."""
    root = Path(project_path) / "raws"
    return RawPaths(
        users=root / f"{dataset}_user_feature.jsonl",
        items=root / f"{dataset}_item_feature.jsonl",
        interactions=root / f"{dataset}_interaction.jsonl",
    )


def format_time(seconds: int | np.integer) -> str:
    """Unix seconds -> ``YYYY-MM-DD HH:MM:SS`` (UTC, the raw format's timestamp)."""
    return str(np.datetime64(int(seconds), "s")).replace("T", " ")


def parse_time(text: str) -> int:
    """``YYYY-MM-DD HH:MM:SS`` -> unix seconds (UTC). Raises ValueError on anything else.

    The one timestamp parser: the raw loader, scene files and the env's ``start_time`` use it.
    """
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise ValueError(f"expected 'YYYY-MM-DD HH:MM:SS', got {text!r}")
    try:
        return int(np.datetime64(text, "s").astype(np.int64))
    except ValueError:
        raise ValueError(f"expected a real date and time 'YYYY-MM-DD HH:MM:SS', got {text!r}") from None


def _check_behavior(behavior: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of one interaction's behaviour features as ``(field, what)`` pairs.

    The features of :data:`BEHAVIOR_RANGES` must be finite numbers (or null) in their range;
    any other number must be finite.
    """
    problems = []
    for key, value in behavior.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in BEHAVIOR_RANGES and value is not None:
            low, high = BEHAVIOR_RANGES[key]
            if not number or not (math.isfinite(value) and low <= value <= high):
                problems.append((f"behavior_features.{key}", f"expected a number from {low:g} to {high:g}, got {value!r}"))
        elif number and not math.isfinite(value):
            problems.append((f"behavior_features.{key}", f"expected a finite number, got {value!r}"))
    return problems


@dataclass(eq=False)
class RawDataset:
    """One dataset in memory, integer-indexed.

    Users and items are numbered ``0..n-1`` in file order. Interactions are sorted by user, then
    time (ties keep file order); the interactions of user ``u`` are rows
    ``user_ptr[u]:user_ptr[u+1]``. Behaviour features are columns aligned with the interaction
    rows: float arrays (NaN where absent) for numeric fields, object arrays otherwise.

    Attributes:
        name: dataset name (``ml-100k``, ...).
        user_ids, item_ids: external ids, index -> id.
        user_description, item_description: what the LLM may read, one dict per user / item.
        user_features, item_features: inputs of feature functions and filters.
        inter_user, inter_item: int32 indices per interaction.
        inter_time: int64 unix seconds per interaction.
        behavior: behaviour-feature columns per interaction.
        user_ptr: int64 CSR offsets, length ``n_users + 1``.
        inter_line: 1-based line of each interaction in its source file (0 if generated).
        byte_order_marks: names of the source files that started with a UTF-8 byte-order mark
            (stripped on load; counted in :meth:`summary`).
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_description: list[dict[str, Any]]
    user_features: list[dict[str, Any]]
    item_description: list[dict[str, Any]]
    item_features: list[dict[str, Any]]
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_time: np.ndarray
    behavior: dict[str, np.ndarray] = field(default_factory=dict)
    inter_line: np.ndarray | None = None
    byte_order_marks: tuple[str, ...] = ()
    user_ptr: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.inter_user)
        order = np.lexsort((np.arange(n), self.inter_time, self.inter_user))
        self.inter_user = np.ascontiguousarray(self.inter_user[order], dtype=np.int32)
        self.inter_item = np.ascontiguousarray(self.inter_item[order], dtype=np.int32)
        self.inter_time = np.ascontiguousarray(self.inter_time[order], dtype=np.int64)
        self.behavior = {k: v[order] for k, v in self.behavior.items()}
        if self.inter_line is not None:
            self.inter_line = self.inter_line[order]
        counts = np.bincount(self.inter_user, minlength=self.n_users)
        self.user_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._user_index: dict[str, int] | None = None
        self._item_index: dict[str, int] | None = None

    # sizes -------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.inter_user)

    # lookups -----------------------------------------------------------------------------
    @property
    def user_index(self) -> dict[str, int]:
        """External user id -> index."""
        if self._user_index is None:
            self._user_index = {uid: i for i, uid in enumerate(self.user_ids.tolist())}
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        """External item id -> index."""
        if self._item_index is None:
            self._item_index = {iid: i for i, iid in enumerate(self.item_ids.tolist())}
        return self._item_index

    def user_rows(self, user: int) -> slice:
        """Interaction rows of ``user`` (sorted by time)."""
        return slice(int(self.user_ptr[user]), int(self.user_ptr[user + 1]))

    def rows_of_users(self, user_ids) -> np.ndarray:
        """Interaction rows (ascending) of the users with these external ids (e.g. a split's
        train users: what the collaborative embeddings are fitted on)."""
        index = self.user_index
        wanted = np.array([index[str(u)] for u in user_ids], dtype=np.int64)
        return np.flatnonzero(np.isin(self.inter_user, wanted))

    def rows_before(self, user: int, time: int) -> slice:
        """Interaction rows of ``user`` strictly before ``time``."""
        start = int(self.user_ptr[user])
        stop = int(self.user_ptr[user + 1])
        return slice(start, start + int(np.searchsorted(self.inter_time[start:stop], time, "left")))

    def behavior_of(self, row: int) -> dict[str, Any]:
        """Behaviour features of one interaction row, NaN/None fields omitted."""
        out: dict[str, Any] = {}
        for key, column in self.behavior.items():
            value = column[row]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            if isinstance(value, np.floating) and float(value).is_integer():
                value = int(value)
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
        return out

    def item_popularity(self) -> np.ndarray:
        """Interaction count per item over the whole log."""
        return np.bincount(self.inter_item, minlength=self.n_items)

    def __repr__(self) -> str:
        span = ""
        if self.n_interactions:
            span = f", {format_time(self.inter_time.min())} .. {format_time(self.inter_time.max())}"
        if self.byte_order_marks:
            span += f"; UTF-8 byte-order mark stripped from {', '.join(self.byte_order_marks)}"
        return (
            f"RawDataset({self.name!r}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{self.n_interactions:,} interactions{span})"
        )

    def summary(self) -> dict[str, Any]:
        """Counts a CLI prints after loading or converting."""
        per_user = np.diff(self.user_ptr)
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "interactions_per_user_median": float(np.median(per_user)) if self.n_users else 0.0,
            "first": format_time(self.inter_time.min()) if self.n_interactions else None,
            "last": format_time(self.inter_time.max()) if self.n_interactions else None,
            "behavior_features": sorted(self.behavior),
            "byte_order_marks_stripped": len(self.byte_order_marks),
        }


# ---------------------------------------------------------------------------------------------
# loading


class _Problems:
    """Collects problems up to a cap, so one bad file reports many lines at once."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.truncated = False

    def add(self, path: Path, line: int | None, field_name: str | None, what: str) -> None:
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append(data_problem(path, line, field_name, what))
        else:
            self.truncated = True

    def raise_if_any(self, dataset: str) -> None:
        if self.items:
            extra = " (only the first ones are listed)" if self.truncated else ""
            raise DataError(
                f"the raw files of dataset {dataset!r} have {len(self.items)} problem(s){extra}; "
                "fix the lines below (format: DESIGN.md §2)",
                self.items,
            )


def _read_entities(path: Path, kind: str, problems: _Problems):
    """Read a user or item file: ids, descriptions, features."""
    id_key, desc_key, feat_key = f"{kind}_id", f"{kind}_description", f"{kind}_features"
    ids: list[str] = []
    descriptions: list[dict] = []
    features: list[dict] = []
    first_line: dict[str, int] = {}
    if not path.exists():
        raise DataError(
            f"missing raw file {path}",
            [data_problem(path, None, None, "file not found; run `usermirrorer preprocess` first")],
        )
    problems_before = len(problems.items)
    bad_lines: list[str] = []
    for lineno, record in iter_jsonl(path, bad_lines):
        entity_id = record.get(id_key)
        if id_key not in record:
            problems.add(path, lineno, id_key, "missing key; expected a string id")
            continue
        if not isinstance(entity_id, str) or not entity_id:
            problems.add(path, lineno, id_key, f"expected a non-empty string, got {entity_id!r}")
            continue
        if entity_id in first_line:
            problems.add(path, lineno, id_key,
                         f"duplicate id {entity_id!r} (first seen on line {first_line[entity_id]})")
            continue
        ok = True
        for key in (desc_key, feat_key):
            if key not in record:
                problems.add(path, lineno, key, "missing key; expected an object ({} if empty)")
                ok = False
            elif not isinstance(record[key], dict):
                problems.add(path, lineno, key,
                             f"expected an object, got {type(record[key]).__name__}")
                ok = False
        if not ok:
            continue
        first_line[entity_id] = lineno
        ids.append(entity_id)
        descriptions.append(record[desc_key])
        features.append(record[feat_key])
    problems.items.extend(bad_lines)
    if not ids and len(problems.items) == problems_before:
        problems.add(path, None, None, f"empty file; expected one {kind} per line")
    return ids, descriptions, features


def _behavior_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    keys: dict[str, None] = {}
    for row in rows:
        for key in row:
            keys.setdefault(key, None)
    columns: dict[str, np.ndarray] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        numeric = all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
        )
        if numeric:
            columns[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            columns[key] = _object_column(values)
    return columns


def load_raws(project_path: str | os.PathLike, dataset: str, parsed_copy: bool = True) -> RawDataset:
    """Load and validate the raw files of ``dataset``.

    Checks: every line is a JSON object; required keys present with the right types; ids are
    unique; interactions reference known users and items; timestamps are
    ``YYYY-MM-DD HH:MM:SS``; no file is empty. A leading UTF-8 byte-order mark is benign: it is
    stripped and counted (``summary()["byte_order_marks_stripped"]``).

    Args:
        project_path: the project folder holding ``raws/``.
        dataset: the dataset name ``<D>`` of the raw files.
        parsed_copy: read the parsed copy ``<project>/cache/<D>.raws.npz`` when it was made from
            these exact bytes, and write one after a clean parse (a folder that cannot be written
            just goes without). ``False`` always parses.

    Raises:
        DataError: listing every problem as ``file:line: field: what was expected``.
    """
    paths = raw_paths(project_path, dataset)
    copy = Path(project_path) / "cache" / f"{dataset}.raws.npz"
    digest = _raws_digest(paths) if parsed_copy else None
    if digest is not None:
        ds = _read_parsed(copy, dataset, digest)
        if ds is not None:
            return ds
    ds = _parse_raws(paths, dataset)
    if digest is not None:
        _write_parsed(copy, ds, digest)
    return ds


def _parse_raws(paths: RawPaths, dataset: str) -> RawDataset:
    problems = _Problems()
    user_ids, user_desc, user_feat = _read_entities(paths.users, "user", problems)
    item_ids, item_desc, item_feat = _read_entities(paths.items, "item", problems)
    user_index = {uid: i for i, uid in enumerate(user_ids)}
    item_index = {iid: i for i, iid in enumerate(item_ids)}

    path = paths.interactions
    if not path.exists():
        raise DataError(
            f"missing raw file {path}",
            [data_problem(path, None, None, "file not found; run `usermirrorer preprocess` first")],
        )
    users: list[int] = []
    items: list[int] = []
    times: list[str] = []
    lines: list[int] = []
    behaviors: list[dict] = []
    problems_before = len(problems.items)
    bad_lines: list[str] = []
    for lineno, record in iter_jsonl(path, bad_lines):
        ok = True
        for key, index in (("user_id", user_index), ("item_id", item_index)):
            if key not in record:
                problems.add(path, lineno, key, "missing key")
                ok = False
            elif record[key] not in index:
                kind = "user" if key == "user_id" else "item"
                where = paths.users if kind == "user" else paths.items
                problems.add(path, lineno, key,
                             f"unknown {kind} {record[key]!r}: not in {where.name}")
                ok = False
        stamp = record.get("timestamp")
        if "timestamp" not in record:
            problems.add(path, lineno, "timestamp", "missing key; expected 'YYYY-MM-DD HH:MM:SS'")
            ok = False
        elif not isinstance(stamp, str) or not _TIME_RE.fullmatch(stamp):
            # the real date is checked by the vectorised parse below
            problems.add(path, lineno, "timestamp", f"expected 'YYYY-MM-DD HH:MM:SS', got {stamp!r}")
            ok = False
        behavior = record.get("behavior_features")
        if "behavior_features" not in record:
            problems.add(path, lineno, "behavior_features", "missing key; expected an object ({} if none)")
            ok = False
        elif not isinstance(behavior, dict):
            problems.add(path, lineno, "behavior_features",
                         f"expected an object, got {type(behavior).__name__}")
            ok = False
        else:
            for key, what in _check_behavior(behavior):
                problems.add(path, lineno, key, what)
                ok = False
        if not ok:
            continue
        users.append(user_index[record["user_id"]])
        items.append(item_index[record["item_id"]])
        times.append(stamp)
        lines.append(lineno)
        behaviors.append(behavior)
    problems.items.extend(bad_lines)

    inter_time = np.zeros(len(times), dtype=np.int64)
    if times:
        try:
            inter_time = np.array(times, dtype="datetime64[s]").astype(np.int64)
        except ValueError:
            # Vectorised parse failed somewhere: find each bad line to name it.
            for i, stamp in enumerate(times):
                try:
                    inter_time[i] = parse_time(stamp)
                except ValueError as exc:
                    problems.add(path, lines[i], "timestamp",
                                 f"expected 'YYYY-MM-DD HH:MM:SS', got {stamp!r} ({exc})")
    elif len(problems.items) == problems_before:
        problems.add(path, None, None, "empty file; expected one interaction per line")
    problems.raise_if_any(dataset)

    return RawDataset(
        name=dataset,
        user_ids=np.array(user_ids, dtype=object),
        item_ids=np.array(item_ids, dtype=object),
        user_description=user_desc,
        user_features=user_feat,
        item_description=item_desc,
        item_features=item_feat,
        inter_user=np.array(users, dtype=np.int32),
        inter_item=np.array(items, dtype=np.int32),
        inter_time=inter_time,
        behavior=_behavior_columns(behaviors),
        inter_line=np.array(lines, dtype=np.int64),
        byte_order_marks=tuple(p.name for p in paths if has_bom(p)),
    )


# ---------------------------------------------------------------------------------------------
# the parsed copy


def _raws_digest(paths: RawPaths) -> str | None:
    """blake2b of the three raw files' bytes (None when one is missing: parsing names it)."""
    h = hashlib.blake2b(f"usermirrorer raws {_PARSED_FORMAT}".encode(), digest_size=16)
    try:
        for path in paths:
            with path.open("rb") as fh:
                h.update(hashlib.file_digest(fh, "blake2b").digest())
    except OSError:
        return None
    return h.hexdigest()


def _read_parsed(path: Path, dataset: str, digest: str) -> RawDataset | None:
    """The parsed copy at ``path`` if it was made from the files with ``digest``, else None."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes())
            if meta.get("digest") != digest:
                return None
            objects = json.loads(npz["objects"].tobytes())
            # numeric columns are stored by position: a feature name may not be a safe file name
            behavior = {key: npz[f"behavior_{i}"] for i, key in enumerate(meta["numeric_behavior"])}
            for key, values in objects["behavior"].items():
                behavior[key] = _object_column(values)
            return RawDataset(
                name=dataset, user_ids=_object_column(objects["user_ids"]),
                item_ids=_object_column(objects["item_ids"]),
                user_description=objects["user_description"], user_features=objects["user_features"],
                item_description=objects["item_description"], item_features=objects["item_features"],
                inter_user=npz["inter_user"], inter_item=npz["inter_item"], inter_time=npz["inter_time"],
                behavior={key: behavior[key] for key in meta["behavior_order"]},
                inter_line=npz["inter_line"], byte_order_marks=tuple(meta["byte_order_marks"]),
            )
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        # a damaged or foreign file: parse again
        log.info("ignoring the parsed copy %s (%s); parsing the raws", path, exc)
        return None


def _object_column(values: list) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _write_parsed(path: Path, ds: RawDataset, digest: str) -> None:
    numeric = {k: v for k, v in ds.behavior.items() if v.dtype != object}
    objects = {
        "user_ids": ds.user_ids.tolist(), "item_ids": ds.item_ids.tolist(),
        "user_description": ds.user_description, "user_features": ds.user_features,
        "item_description": ds.item_description, "item_features": ds.item_features,
        "behavior": {k: v.tolist() for k, v in ds.behavior.items() if v.dtype == object},
    }
    meta = {"digest": digest, "numeric_behavior": list(numeric), "behavior_order": list(ds.behavior),
            "byte_order_marks": list(ds.byte_order_marks)}
    arrays = {f"behavior_{i}": v for i, v in enumerate(numeric.values())}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            np.savez(fh, meta=_json_bytes(meta), objects=_json_bytes(objects), inter_user=ds.inter_user,
                     inter_item=ds.inter_item, inter_time=ds.inter_time, inter_line=ds.inter_line, **arrays)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only project: every load parses, nothing else changes
        log.info("could not write the parsed copy %s (%s)", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class RawWrite:
    """What :func:`write_raws` wrote: the three paths and the number of records in each."""

    paths: RawPaths
    users: int
    items: int
    interactions: int


def write_raws(
    project_path: str | os.PathLike,
    dataset: str,
    users: Iterable[Mapping[str, Any]],
    items: Iterable[Mapping[str, Any]],
    interactions: Iterable[Mapping[str, Any]],
) -> RawWrite:
    """Write the three raw files of ``dataset`` (each atomically): the one writer of raws.

    Records must already be in the raw format (DESIGN.md §2); converters build them. Use
    :func:`load_raws` afterwards to validate.
    """
    paths = raw_paths(project_path, dataset)
    return RawWrite(
        paths=paths,
        users=write_jsonl(paths.users, (dict(r) for r in users)),
        items=write_jsonl(paths.items, (dict(r) for r in items)),
        interactions=write_jsonl(paths.interactions, (dict(r) for r in interactions)),
    )


def dataset_records(ds: RawDataset):
    """The raw records of an in-memory dataset (users, items, interactions) for :func:`write_raws`."""
    users = (
        {"user_id": uid, "user_description": d, "user_features": f}
        for uid, d, f in zip(ds.user_ids.tolist(), ds.user_description, ds.user_features)
    )
    items = (
        {"item_id": iid, "item_description": d, "item_features": f}
        for iid, d, f in zip(ds.item_ids.tolist(), ds.item_description, ds.item_features)
    )
    stamps = np.datetime_as_string(ds.inter_time.astype("datetime64[s]"), unit="s")
    interactions = (
        {
            "user_id": ds.user_ids[ds.inter_user[row]],
            "item_id": ds.item_ids[ds.inter_item[row]],
            "timestamp": str(stamps[row]).replace("T", " "),
            "behavior_features": ds.behavior_of(row),
        }
        for row in range(ds.n_interactions)
    )
    return users, items, interactions
