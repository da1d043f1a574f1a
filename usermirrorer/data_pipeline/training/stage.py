"""The toolkit every resumable LLM stage uses (decisions, probs): scene loading, chunk seeds,
the append-and-resume loop and its report.

A stage cuts its scenes into fixed chunks (``chunk_size`` scenes, in file order); a chunk's
random generator depends only on the base seed and the chunk's index (:func:`chunk_rng`), so a
chunk gives the same records whenever it runs. :func:`run_resumable` skips scene ids already
in the output, recomputes a partly written chunk whole and appends only its missing records:
a crash loses at most the chunk in flight, and the finished file equals an uninterrupted run's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from usermirrorer.data_pipeline.jsonl import JsonlAppender, check_run_params, done_keys, iter_jsonl
from usermirrorer.data_pipeline.ray_engine import RayEngine, in_process
from usermirrorer.data_pipeline.scene import scene_fingerprint, scene_id
from usermirrorer.errors import ConfigError, DataError, data_problem

__all__ = [
    "VERSIONS",
    "StageReport",
    "check_version",
    "train_scenes_path",
    "load_train_scenes",
    "unfinished",
    "stage_records",
    "require_columns",
    "chunk_rng",
    "run_resumable",
]

# The two decision-writing models of DESIGN.md §7.1: their files are named by these.
VERSIONS = ("strong", "weak")


@dataclass
class StageReport:
    """What one run of a resumable LLM stage did."""

    stage: str
    path: Path
    total: int = 0
    skipped: int = 0
    written: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"StageReport({self.stage}: {self.written} written, {self.skipped} already done, "
                f"{self.total} total, {self.seconds:.1f} s -> {self.path})")


def check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ConfigError(f"version must be one of {list(VERSIONS)}, got {version!r}")


def train_scenes_path(project_path: str | os.PathLike, dataset: str, split: str = "train") -> Path:
    """``<project>/datasets/<D>_<split>.jsonl``."""
    return Path(project_path) / "datasets" / f"{dataset}_{split}.jsonl"


def load_train_scenes(project_path: str | os.PathLike, dataset: str, split: str = "train") -> list[dict[str, Any]]:
    """Read the scenes of a split and give each a unique ``scene_id``.

    A scene keeps its own ``scene_id``; otherwise it gets ``dataset:user_id:item_id:timestamp``
    (:func:`usermirrorer.data_pipeline.scene.scene_id`). A repeated id gets ``#2``, ``#3`` ... in file
    order, so ids are unique and stable as long as the scene file does not change. Each scene
    also gets ``scene_fp`` (:func:`~usermirrorer.data_pipeline.scene.scene_fingerprint`), which
    every stage record carries: a record about another version of a scene is refused.

    Raises:
        DataError: the file is missing, empty, or a scene lacks the fields the stages need.
    """
    path = train_scenes_path(project_path, dataset, split)
    if not path.exists():
        raise DataError(f"scene file {path} does not exist; run `usermirrorer scenes` for {dataset!r} first")
    scenes: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    problems: list[str] = []
    for lineno, rec in iter_jsonl(path):
        text = rec.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("action_list"), list):
            problems.append(data_problem(path, lineno, "text.action_list", "missing; expected a scene record (DESIGN §2)"))
            continue
        if not isinstance(rec.get("item_pos"), int):
            problems.append(data_problem(path, lineno, "item_pos", f"expected an integer, got {rec.get('item_pos')!r}"))
        rec.setdefault("dataset", dataset)
        rec.setdefault("choice_cnt", len(text["action_list"]))
        rec["scene_fp"] = scene_fingerprint(rec)
        sid = scene_id(rec)
        seen[sid] = seen.get(sid, 0) + 1
        rec["scene_id"] = sid if seen[sid] == 1 else f"{sid}#{seen[sid]}"
        scenes.append(rec)
    if problems:
        raise DataError(f"{path}: malformed scenes", problems)
    if not scenes:
        raise DataError(f"scene file {path} is empty")
    return scenes


def require_columns(scenes: Iterable[Mapping[str, Any]], columns: Sequence[str], where: str) -> None:
    problems = []
    for i, s in enumerate(scenes):
        missing = [c for c in columns if c not in s]
        if missing:
            problems.append(data_problem("batch", i + 1, ",".join(missing), "missing column(s)"))
            if len(problems) >= 20:
                break
    if problems:
        raise DataError(f"{where}: scenes lack required columns {list(columns)}", problems)


def chunk_rng(seed: int, chunk_index: int) -> np.random.Generator:
    """The generator of one chunk: depends only on the base seed and the chunk index."""
    return np.random.default_rng([int(seed), int(chunk_index)])


def stage_records(
    path: Path, scenes: Mapping[str, Mapping[str, Any]], *, made_by: str, required: bool = True
) -> list[tuple[int, dict[str, Any]]]:
    """``(line, record)`` of a stage file, checked against the current scenes (by ``scene_id``).

    Args:
        path: the stage file (decisions, probs).
        scenes: the current scenes by ``scene_id`` (from :func:`load_train_scenes`).
        made_by: the command that writes ``path``, named in the errors.
        required: an input of this stage: a missing or empty file is an error (a failed run
            leaves an empty file; it is not a finished stage). False for a stage's own output.

    Raises:
        DataError: a missing or empty required file, or records about another version of
            their scene (``scene_fp`` differs: the scene file was re-sampled since).
    """
    if not path.exists():
        if required:
            raise DataError(f"{path} does not exist; run `{made_by}` first")
        return []
    records = list(iter_jsonl(path))
    if not records and required:
        raise DataError(f"{path} holds no records (did `{made_by}` fail?); run it again")
    problems = []
    for lineno, rec in records:
        scene = scenes.get(rec.get("scene_id"))
        fp = rec.get("scene_fp")
        if scene is not None and fp is not None and fp != scene.get("scene_fp"):
            problems.append(data_problem(path, lineno, "scene_fp", f"scene {rec['scene_id']!r} has changed since "
                                         "this record was written (was the scene file re-sampled?)"))
    if problems:
        raise DataError(f"{path} was written for other scenes than the current scene file; "
                        f"run `{made_by}` again with --fresh", problems)
    return records


def run_resumable(
    items: Sequence[Mapping[str, Any]],
    out_path: Path,
    process: Callable[[list[Mapping[str, Any]], int], list[dict[str, Any]]],
    *,
    chunk_size: int,
    stage: str,
    progress: bool = True,
    params: Mapping[str, Any] | None = None,
    fresh: bool = False,
    made_by: str | None = None,
    engine: RayEngine | None = None,
) -> StageReport:
    """Run ``process`` over fixed chunks of ``items`` and append its records to ``out_path``.

    ``process(chunk, chunk_index)`` must return one record per item, in order, each with the
    item's ``scene_id``. Items whose ``scene_id`` is already in ``out_path`` are skipped; a
    partly finished chunk is processed whole (same inputs -> same outputs) and only its
    missing records are written. Records are flushed per chunk, so a crash loses at most the
    chunk in flight. Each record gets its item's ``scene_fp``.

    Args:
        params: the run's parameters, stored next to the output; a resume with other ones is
            refused (:func:`~usermirrorer.data_pipeline.jsonl.check_run_params`).
        fresh: delete the output first and start over.
        made_by: the command, named in errors (default: ``stage``).
        engine: a :class:`~usermirrorer.data_pipeline.ray_engine.RayEngine` to run the chunks
            on Ray actors (``process`` must then be picklable, with a ``load()``); their
            records arrive in order of completion and are written as they arrive, so the
            file's line order may differ from a single-process run's, its records do not.
            None: every chunk in turn, in this process.

    Raises:
        ConfigError: a chunk size below 1, or ``params`` differ from the output's.
        DataError: the output holds records about other versions of the scenes.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk size must be >= 1, got {chunk_size}")
    start = time.perf_counter()
    check_run_params(out_path, dict(params or {}), fresh=fresh)
    by_id = {it["scene_id"]: it for it in items}
    done = done_keys(out_path, lambda r: r.get("scene_id"))  # also cuts a torn last line
    stage_records(out_path, by_id, made_by=made_by or stage, required=False)
    report = StageReport(stage=stage, path=out_path, total=len(items))
    report.skipped = sum(1 for it in items if it["scene_id"] in done)
    chunks = [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
    todo = [(ci, ch) for ci, ch in enumerate(chunks) if any(it["scene_id"] not in done for it in ch)]
    bar = progress_bar(progress)
    # a log file gets no live bar: write one line per chunk instead
    log_lines = progress and not bar.console.is_terminal
    with bar, JsonlAppender(out_path) as out:
        task = bar.add_task(stage, total=len(items), completed=report.skipped)
        chunk_of = dict(todo)
        results = in_process(process, todo) if engine is None else engine.map_chunks(process, todo)
        for ci, records in results:
            chunk = chunk_of[ci]
            if len(records) != len(chunk):
                raise DataError(f"{stage}: chunk {ci} gave {len(records)} records for {len(chunk)} scenes")
            new = [_with_fingerprint(r, it) for it, r in zip(chunk, records) if it["scene_id"] not in done]
            out.write(new)
            report.written += len(new)
            bar.update(task, advance=len(new))
            if log_lines:
                bar.console.print(f"{stage}: {report.skipped + report.written}/{len(items)} scenes "
                                  f"({time.perf_counter() - start:.0f} s)")
    report.seconds = time.perf_counter() - start
    return report


def _with_fingerprint(record: dict[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    if "scene_fp" in item and "scene_fp" not in record:
        record = {**record, "scene_fp": item["scene_fp"]}
    return record


def progress_bar(enabled: bool):
    """The training layer's rich progress bar (description, bar, n/total, elapsed, remaining)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)




def unfinished(scenes: Sequence[dict[str, Any]], out_path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` scenes (all when None) whose ``scene_id`` is not yet in ``out_path``."""
    scenes = scenes[:limit] if limit is not None else scenes
    done = done_keys(out_path, lambda r: r.get("scene_id"))
    return [s for s in scenes if s["scene_id"] not in done]
