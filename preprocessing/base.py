"""What a converter is, what it reports, and the helpers every converter shares.

A converter turns one public dataset's original files into the unified raw format
(DESIGN.md §2). Each module of :mod:`usermirrorer.preprocessing` that defines a module-level
``CONVERTER`` (a :class:`Converter`, or a sequence of them for dataset families) is found by
:func:`converters` without being listed anywhere, so adding a dataset is adding one module.

Converters never drop or change a row silently: every repair or drop is counted in the
:class:`ConvertReport` under a named rule with the reason, and a few example locations
(``file:line: field: what``) are kept so a user can look at the rows themselves. Rows that no
rule covers are errors: they are collected in a :class:`SourceProblems` and raised together as
one :class:`~usermirrorer.errors.DataError`.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import pkgutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.cache import cache_dir
from usermirrorer.data_pipeline.raw import RawPaths, format_time, raw_paths, write_raws
from usermirrorer.errors import ConfigError, DataError, data_problem

__all__ = [
    "Converter",
    "ConverterOption",
    "ConvertReport",
    "RuleCount",
    "SourceProblems",
    "converters",
    "get_converter",
    "iter_delimited",
    "parse_int",
    "parse_float",
    "format_times",
    "timestamp_from_unix",
    "require_files",
    "write_raw_records",
    "ensure_raws",
    "cache_project",
    "locate_raws",
]

log = logging.getLogger(__name__)

_MAX_EXAMPLES = 3
_MAX_PROBLEMS = 200
# Unix seconds outside this window are not log times (1970..2100): almost surely a unit or
# parsing error (milliseconds, a swapped column).
_MIN_UNIX = 0
_MAX_UNIX = 4_102_444_800


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class RuleCount:
    """How often one repair or drop rule fired, why, and where (first few locations)."""

    rule: str
    reason: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"RuleCount({self.rule!r}: {self.count:,} — {self.reason})"


@dataclass
class ConvertReport:
    """What one conversion wrote, repaired and dropped.

    Attributes:
        dataset: the dataset name the raws were written under.
        source: where the original files were read from (or a generator description).
        users, items, interactions: records written.
        repaired: rule -> count of rows kept after a documented change.
        dropped: rule -> count of rows left out, with the reason.
        paths: the raw files written.
        seconds: wall time of the conversion.
        notes: free-form facts worth printing (e.g. the seed of a synthetic dataset).
    """

    dataset: str
    source: str = ""
    users: int = 0
    items: int = 0
    interactions: int = 0
    repaired: dict[str, RuleCount] = field(default_factory=dict)
    dropped: dict[str, RuleCount] = field(default_factory=dict)
    paths: RawPaths | None = None
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def repair(self, rule: str, reason: str, where: str | None = None, n: int = 1) -> None:
        """Count ``n`` rows kept after the change described by ``reason``.

        Args:
            rule: short stable name (``unknown-year``), the key of the summary table.
            reason: what was wrong and what was done, e.g. "no release year: kept, no
                release-time filter for this item".
            where: an example location, ``data_problem(file, line, field, what)``.
            n: how many rows this call covers (vectorised converters count in bulk).
        """
        self._count(self.repaired, rule, reason, where, n)

    def drop(self, rule: str, reason: str, where: str | None = None, n: int = 1) -> None:
        """Count ``n`` rows left out for ``reason`` (same arguments as :meth:`repair`)."""
        self._count(self.dropped, rule, reason, where, n)

    @staticmethod
    def _count(
        table: dict[str, RuleCount], rule: str, reason: str, where: str | None, n: int
    ) -> None:
        if n <= 0:
            return
        entry = table.setdefault(rule, RuleCount(rule, reason))
        entry.count += n
        if where is not None and len(entry.examples) < _MAX_EXAMPLES:
            entry.examples.append(where)

    @property
    def n_repaired(self) -> int:
        """Repairs over all rules (a row repaired under two rules counts twice)."""
        return sum(r.count for r in self.repaired.values())

    @property
    def n_dropped(self) -> int:
        """Rows left out (each under exactly one rule)."""
        return sum(r.count for r in self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON output and tests."""

        def rules(table: dict[str, RuleCount]) -> dict[str, dict[str, Any]]:
            return {
                k: {"count": v.count, "reason": v.reason, "examples": list(v.examples)}
                for k, v in table.items()
            }

        return {
            "dataset": self.dataset,
            "source": self.source,
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "repaired": rules(self.repaired),
            "dropped": rules(self.dropped),
            "paths": [str(p) for p in self.paths] if self.paths else [],
            "seconds": round(self.seconds, 3),
            "notes": dict(self.notes),
        }

    def __repr__(self) -> str:
        return (
            f"ConvertReport({self.dataset!r}: {self.users:,} users, {self.items:,} items, "
            f"{self.interactions:,} interactions, {self.n_repaired:,} repaired, "
            f"{self.n_dropped:,} dropped)"
        )


class SourceProblems:
    """Collects problems in original files that no rule covers, to raise them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.total = 0

    def add(
        self, path: str | os.PathLike, line: int | None, field_name: str | None, what: str
    ) -> None:
        self.total += 1
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append(data_problem(path, line, field_name, what))

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total

    def raise_if_any(self, dataset: str, source_format: str = "") -> None:
        """Raise one DataError listing the problems (if any)."""
        if not self.total:
            return
        shown = "" if self.total == len(self.items) else f" (first {len(self.items)} listed)"
        expected = f"; expected {source_format}" if source_format else ""
        raise DataError(
            f"the original files of {dataset!r} have {self.total} problem(s){shown}{expected}",
            self.items,
        )

    def __repr__(self) -> str:
        return f"SourceProblems({self.total} problem(s))"


# ---------------------------------------------------------------------------------------------
# converters and their registry


@dataclass(frozen=True)
class ConverterOption:
    """An extra command-line option of a converter (e.g. ``--users`` of ``synthetic``).

    ``name`` is the flag without dashes, using ``-`` between words; the converter receives it
    in ``options`` under the same name with ``_`` (``max-items`` -> ``max_items``).
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


ConvertFn = Callable[[Path | None, Path, Mapping[str, Any]], ConvertReport]


@dataclass(frozen=True)
class Converter:
    """One dataset's converter: original files -> ``<project>/raws/<name>_*.jsonl``.

    Attributes:
        name: the dataset name (``ml-100k``), also the raws' file prefix.
        source_format: one line saying which release and which files are read.
        needs_source: whether ``--source DIR`` is required (False: the data ships with a
            package or is generated).
        convert: ``convert(source, project_path, options) -> ConvertReport``; writes the raws.
        options: extra options ``convert`` reads from ``options`` (defaults filled in).
        description: one sentence for listings (defaults to ``source_format``).
    """

    name: str
    source_format: str
    needs_source: bool
    convert: ConvertFn
    options: tuple[ConverterOption, ...] = ()
    description: str = ""

    def default_options(self) -> dict[str, Any]:
        return {opt.dest: opt.default for opt in self.options}

    def run(
        self,
        source: str | os.PathLike | None,
        project_path: str | os.PathLike,
        options: Mapping[str, Any] | None = None,
    ) -> ConvertReport:
        """Check the arguments, convert, and time it.

        Raises:
            ConfigError: ``source`` is required but missing, or is not a directory.
        """
        if source is None and self.needs_source:
            raise ConfigError(
                f"dataset {self.name!r} needs --source DIR: the folder holding {self.source_format}"
            )
        src = None if source is None else Path(source)
        if src is not None and not src.is_dir():
            raise ConfigError(
                f"--source {str(src)!r} is not a directory; expected the folder holding "
                f"{self.source_format}"
            )
        merged = self.default_options()
        merged.update({k: v for k, v in (options or {}).items() if v is not None})
        start = time.perf_counter()
        report = self.convert(src, Path(project_path), merged)
        report.seconds = time.perf_counter() - start
        return report

    def __repr__(self) -> str:
        return (f"Converter({self.name!r}, needs_source={self.needs_source}, "
                f"source={self.source_format!r})")


_converters: dict[str, Converter] | None = None


def converters() -> dict[str, Converter]:
    """Every converter defined in :mod:`usermirrorer.preprocessing`, by dataset name (sorted).

    Raises:
        ConfigError: two modules define converters with the same name.
    """
    global _converters
    if _converters is None:
        package = importlib.import_module("usermirrorer.preprocessing")
        found: dict[str, Converter] = {}
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            declared = getattr(module, "CONVERTER", None)
            if declared is None:
                continue
            for conv in [declared] if isinstance(declared, Converter) else list(declared):
                if not isinstance(conv, Converter):
                    raise ConfigError(
                        f"{module.__name__}.CONVERTER must be a Converter or a sequence of them, "
                        f"got {type(conv).__name__}"
                    )
                if conv.name in found:
                    raise ConfigError(
                        f"two converters are named {conv.name!r} (one in {module.__name__}); "
                        "rename one"
                    )
                found[conv.name] = conv
        _converters = dict(sorted(found.items()))
    return _converters


def get_converter(name: str) -> Converter:
    """The converter of dataset ``name``.

    Raises:
        ConfigError: no such converter; suggests close names and lists them all.
    """
    table = converters()
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=3)
    hint = f" did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"no converter for dataset {name!r};{hint} known: {', '.join(table)} "
        "(`usermirrorer preprocess --list` shows their source formats)"
    )


def ensure_raws(
    project_path: str | os.PathLike,
    dataset: str,
    source: str | os.PathLike | None = None,
    options: Mapping[str, Any] | None = None,
) -> ConvertReport | None:
    """Make sure ``<project>/raws/<dataset>_*.jsonl`` exist, converting the dataset if not.

    A dataset that ships with a package (ML-100K from ``recbole``) or is generated
    (``synthetic``) is converted without a source; any other needs ``source``.

    Returns:
        The conversion's report, or None when the raws were already there.

    Raises:
        ConfigError: the raws are missing and the dataset needs a source folder that was not
            given (the message names the command to run), or no converter has that name.
    """
    if all(p.exists() for p in raw_paths(project_path, dataset)):
        return None
    converter = get_converter(dataset)
    if source is None and converter.needs_source:
        raise ConfigError(
            f"no raws for dataset {dataset!r} under {Path(project_path) / 'raws'}; run "
            f"`usermirrorer preprocess {dataset} --source DIR --project-path {project_path}` first "
            f"(DIR: the folder holding {converter.source_format})"
        )
    return converter.run(source, project_path, dict(options or {}))


def cache_project() -> Path:
    """The project folder in the user cache where bundled datasets are converted on first use:
    ``$USERMIRRORER_CACHE/demo-project`` (default cache ``~/.cache/usermirrorer``)."""
    return cache_dir() / "demo-project"


def locate_raws(project_path: str | os.PathLike, dataset: str) -> Path:
    """The project folder to load ``dataset``'s raws from.

    ``project_path`` when ``<project_path>/raws`` holds them. Otherwise, for a dataset that
    needs no source files (ML-100K, carried by the ``recbole`` package; ``synthetic``), the
    user-cache project :func:`cache_project`, converted there on first use with one log line
    saying where. Any other dataset gets ``project_path`` back, so loading it reports the
    missing files and the ``usermirrorer preprocess`` command that writes them.
    """
    project = Path(project_path)
    if all(p.exists() for p in raw_paths(project, dataset)):
        return project
    converter = converters().get(dataset)
    if converter is None or converter.needs_source:
        return project
    cached = cache_project()
    report = ensure_raws(cached, dataset)
    if report is not None:
        log.warning("%s: no raws under %s; converted the bundled copy into %s in %.1f s (first use "
                    "only; later runs read it from there)", dataset, project.resolve() / "raws",
                    cached / "raws", report.seconds)
    return cached


# ---------------------------------------------------------------------------------------------
# reading original files


def require_files(source: Path, names: Sequence[str], source_format: str) -> list[Path]:
    """The paths of ``names`` under ``source``; one ConfigError naming every missing file."""
    paths = [source / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{source} lacks {', '.join(missing)}; expected {source_format}"
        )
    return paths


def iter_delimited(
    path: str | os.PathLike,
    sep: str,
    problems: SourceProblems,
    *,
    n_fields: int | None = None,
    encoding: str = "utf-8",
    skip_lines: int = 0,
    field_names: Sequence[str] | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each non-blank line of a delimited text file.

    Lines are decoded one at a time, so a bad byte names its line. A line that cannot be
    decoded or has the wrong number of fields is recorded in ``problems`` (``file:line:
    field: what``) and skipped; the caller raises them all together at the end.

    Args:
        path: the file.
        sep: the field separator (``"\\t"``, ``"::"``, ``","`` ...). Fields are not unquoted.
        problems: where bad lines are recorded.
        n_fields: expected number of fields; None accepts any.
        encoding: text encoding of the file (``latin-1`` for the MovieLens ``.dat`` files).
        skip_lines: header lines to skip (still counted in line numbers).
        field_names: names used in messages (defaults to ``field 1``, ``field 2`` ...).
    """
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno <= skip_lines:
                continue
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                problems.add(path, lineno, None,
                             f"not valid {encoding} text ({exc.reason} at byte {exc.start})")
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if n_fields is not None and len(fields) != n_fields:
                names = f" ({', '.join(field_names)})" if field_names else ""
                missing = ""
                if field_names and len(fields) < n_fields:
                    missing = f"; missing from {field_names[len(fields)]!r} on"
                problems.add(
                    path, lineno, None,
                    f"expected {n_fields} fields{names} separated by {sep!r}, got {len(fields)}"
                    f"{missing}; the line may be truncated or contain the separator",
                )
                continue
            yield lineno, fields


def parse_int(
    text: str, path: str | os.PathLike, line: int, field_name: str, problems: SourceProblems
) -> int | None:
    """``int(text)``, or None after recording ``file:line: field: not an integer``."""
    try:
        return int(text.strip())
    except ValueError:
        problems.add(path, line, field_name, f"expected an integer, got {text!r}")
        return None


def parse_float(
    text: str, path: str | os.PathLike, line: int, field_name: str, problems: SourceProblems
) -> float | None:
    """``float(text)`` (finite), or None after recording the problem."""
    try:
        value = float(text.strip())
    except ValueError:
        problems.add(path, line, field_name, f"expected a number, got {text!r}")
        return None
    if not np.isfinite(value):
        problems.add(path, line, field_name, f"expected a finite number, got {text!r}")
        return None
    return value


def timestamp_from_unix(
    seconds: int | float, path: str | os.PathLike, line: int, field_name: str,
    problems: SourceProblems,
) -> str | None:
    """Unix seconds -> ``YYYY-MM-DD HH:MM:SS``; out-of-range values (before 1970 or after
    2100, e.g. milliseconds) are recorded as problems and give None."""
    if not _MIN_UNIX <= seconds < _MAX_UNIX:
        problems.add(
            path, line, field_name,
            f"expected unix seconds between 1970 and 2100, got {seconds!r}"
            + ("; milliseconds? divide by 1000" if seconds >= _MAX_UNIX else ""),
        )
        return None
    return format_time(int(seconds))


def format_times(seconds: np.ndarray) -> list[str]:
    """Vectorised :func:`~usermirrorer.data_pipeline.raw.format_time` for an int64 array."""
    as_datetime = np.asarray(seconds, dtype=np.int64).astype("datetime64[s]")
    stamps = np.datetime_as_string(as_datetime, unit="s")
    return np.char.replace(stamps, "T", " ").tolist()


# ---------------------------------------------------------------------------------------------
# writing


def write_raw_records(
    project_path: str | os.PathLike,
    dataset: str,
    users: Iterable[Mapping[str, Any]],
    items: Iterable[Mapping[str, Any]],
    interactions: Iterable[Mapping[str, Any]],
    report: ConvertReport,
) -> RawPaths:
    """Write the three raw files (:func:`~usermirrorer.data_pipeline.raw.write_raws`) and record
    their counts and paths in ``report``."""
    written = write_raws(project_path, dataset, users, items, interactions)
    report.users, report.items, report.interactions = written.users, written.items, written.interactions
    report.paths = written.paths
    return written.paths
