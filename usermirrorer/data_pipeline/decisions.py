"""Decisions: N decision-mode thoughts per train scene from a strong or a weak LLM (DESIGN.md §7.1).

``usermirrorer decisions --dataset D --project-path W --model M --version strong|weak`` reads
``W/datasets/D_train.jsonl`` and appends one record per scene to
``W/decisions/D_decisions_<version>.jsonl``::

    {"scene_id": ..., "dataset": ..., "version": "strong", "model": ..., "seed": ...,
     "thoughts": ["Thought:\\nStimulus: ...", ...]}   # N thoughts, each cut before "Behavior: ["

Resuming: the scenes are cut into fixed chunks (``chunk_size`` scenes, in file order) and each
chunk's sampling seed depends only on the base seed and the chunk's index, so a chunk gives the
same thoughts whenever it runs. A re-run skips scenes already in the file; a chunk that was
only partly written (a crash mid-write) is recomputed whole and only its missing scenes are
appended, so the finished file is identical to an uninterrupted run's.

OpenAI Batch route (``--backend openai``): ``--batch-out FILE`` writes the requests of every
unfinished scene as an OpenAI Batch input file instead of calling a server; after the batch has
run (OpenAI's Batch API, or vLLM's ``run_batch``), ``--batch-in FILE`` reads its output file and
appends the decisions, exactly as a live run would have.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError, DataError, data_problem

__all__ = [
    "VERSIONS",
    "StageReport",
    "decisions_path",
    "train_scenes_path",
    "load_train_scenes",
    "chunk_rng",
    "run_resumable",
    "generate_decisions",
    "make_simulator",
    "run_decisions",
    "write_decisions_batch",
    "read_decisions_batch",
    "batch_scene_ids",
    "add_parser",
]

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


def train_scenes_path(project_path: str | os.PathLike, dataset: str, split: str = "train") -> Path:
    """``<project>/datasets/<D>_<split>.jsonl``."""
    return Path(project_path) / "datasets" / f"{dataset}_{split}.jsonl"


def decisions_path(project_path: str | os.PathLike, dataset: str, version: str) -> Path:
    """``<project>/decisions/<D>_decisions_<version>.jsonl``."""
    _check_version(version)
    return Path(project_path) / "decisions" / f"{dataset}_decisions_{version}.jsonl"


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ConfigError(f"version must be one of {list(VERSIONS)}, got {version!r}")


def load_train_scenes(project_path: str | os.PathLike, dataset: str, split: str = "train") -> list[dict[str, Any]]:
    """Read the scenes of a split and give each a unique ``scene_id``.

    A scene keeps its own ``scene_id``; otherwise it gets ``dataset:user_id:item_id:timestamp``
    (:func:`usermirrorer.sim.prompts.scene_id`). A repeated id gets ``#2``, ``#3`` ... in file
    order, so ids are unique and stable as long as the scene file does not change.

    Raises:
        DataError: the file is missing, empty, or a scene lacks the fields the stages need.
    """
    from usermirrorer.data_pipeline.jsonl import iter_jsonl
    from usermirrorer.sim.prompts import scene_id

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
        sid = scene_id(rec)
        seen[sid] = seen.get(sid, 0) + 1
        rec["scene_id"] = sid if seen[sid] == 1 else f"{sid}#{seen[sid]}"
        scenes.append(rec)
    if problems:
        raise DataError(f"{path}: malformed scenes", problems)
    if not scenes:
        raise DataError(f"scene file {path} is empty")
    return scenes


def chunk_rng(seed: int, chunk_index: int) -> np.random.Generator:
    """The generator of one chunk: depends only on the base seed and the chunk index."""
    return np.random.default_rng([int(seed), int(chunk_index)])


def run_resumable(
    items: Sequence[Mapping[str, Any]],
    out_path: Path,
    process: Callable[[list[Mapping[str, Any]], int], list[dict[str, Any]]],
    *,
    chunk_size: int,
    stage: str,
    progress: bool = True,
) -> StageReport:
    """Run ``process`` over fixed chunks of ``items`` and append its records to ``out_path``.

    ``process(chunk, chunk_index)`` must return one record per item, in order, each with the
    item's ``scene_id``. Items whose ``scene_id`` is already in ``out_path`` are skipped; a
    partly finished chunk is processed whole (same inputs -> same outputs) and only its
    missing records are written. Records are flushed per chunk, so a crash loses at most the
    chunk in flight.
    """
    import time

    from usermirrorer.data_pipeline.jsonl import JsonlAppender, done_keys

    if chunk_size < 1:
        raise ConfigError(f"chunk size must be >= 1, got {chunk_size}")
    start = time.perf_counter()
    done = done_keys(out_path, lambda r: r.get("scene_id"))
    report = StageReport(stage=stage, path=out_path, total=len(items))
    report.skipped = sum(1 for it in items if it["scene_id"] in done)
    chunks = [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
    todo = [(ci, ch) for ci, ch in enumerate(chunks) if any(it["scene_id"] not in done for it in ch)]
    bar = _progress(progress)
    # a log file gets no live bar: write one line per chunk instead
    log_lines = progress and not bar.console.is_terminal
    with bar, JsonlAppender(out_path) as out:
        task = bar.add_task(stage, total=len(items), completed=report.skipped)
        for ci, chunk in todo:
            records = process(chunk, ci)
            if len(records) != len(chunk):
                raise DataError(f"{stage}: chunk {ci} gave {len(records)} records for {len(chunk)} scenes")
            fresh = [r for it, r in zip(chunk, records) if it["scene_id"] not in done]
            out.write(fresh)
            report.written += len(fresh)
            bar.update(task, advance=len(fresh))
            if log_lines:
                bar.console.print(f"{stage}: {report.skipped + report.written}/{len(items)} scenes "
                                  f"({time.perf_counter() - start:.0f} s)")
    report.seconds = time.perf_counter() - start
    return report


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def generate_decisions(
    scenes: Sequence[Mapping[str, Any]],
    simulator: Any,
    n: int,
    rng: np.random.Generator,
    *,
    version: str,
    model: str,
) -> list[dict[str, Any]]:
    """Sample ``n`` decision-mode thoughts for each scene of a batch.

    Columns in: ``scene_id``, ``dataset``, ``text`` (profile, history, action_list).
    Columns out: ``scene_id``, ``dataset``, ``version``, ``model``, ``seed``, ``thoughts`` (``n``
    strings starting ``Thought:\\nStimulus:``, cut before ``Behavior: [``).

    Args:
        simulator: a :class:`~usermirrorer.sim.UserSimulator` (or anything with ``thoughts``).
        rng: draws the batch's sampling seed.
    """
    _require_columns(scenes, ("scene_id", "dataset", "text"), "generate_decisions")
    if n < 1:
        raise ConfigError(f"n (thoughts per scene) must be >= 1, got {n}")
    seed = int(rng.integers(0, 2**31 - 1))
    thoughts = simulator.thoughts(list(scenes), n, seed=seed)
    return [
        {"scene_id": s["scene_id"], "dataset": s["dataset"], "version": version, "model": model,
         "seed": seed, "thoughts": list(ts)}
        for s, ts in zip(scenes, thoughts)
    ]


def _require_columns(scenes: Iterable[Mapping[str, Any]], columns: Sequence[str], where: str) -> None:
    problems = []
    for i, s in enumerate(scenes):
        missing = [c for c in columns if c not in s]
        if missing:
            problems.append(data_problem("batch", i + 1, ",".join(missing), "missing column(s)"))
            if len(problems) >= 20:
                break
    if problems:
        raise DataError(f"{where}: scenes lack required columns {list(columns)}", problems)


def make_simulator(model: str, backend: str = "transformers", *, n_thoughts: int = 1, max_thought_tokens: int = 256,
                   temperature: float = 1.0, top_p: float = 0.9, batch_size: int = 8, **backend_kwargs: Any):
    """A decision-mode :class:`~usermirrorer.sim.UserSimulator` with the stage's sampling options."""
    from usermirrorer.sim import SimOptions, UserSimulator

    options = SimOptions(mode="decision", n_thoughts=n_thoughts, temperature=temperature, top_p=top_p,
                         max_thought_tokens=max_thought_tokens, batch_size=batch_size)
    return UserSimulator(model=model, backend=backend, options=options, **backend_kwargs)


def run_decisions(
    project_path: str | os.PathLike,
    dataset: str,
    model: str,
    version: str,
    *,
    n: int = 10,
    backend: str = "transformers",
    seed: int = 0,
    chunk_size: int = 4,
    max_thought_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 0.9,
    limit: int | None = None,
    simulator: Any = None,
    progress: bool = True,
    backend_kwargs: Mapping[str, Any] | None = None,
) -> StageReport:
    """Write ``decisions/<D>_decisions_<version>.jsonl`` for the train scenes (resumable).

    Args:
        model: registry name, folder or hub id of the LLM writing thoughts.
        version: "strong" or "weak" (names the output file).
        n: thoughts per scene (default 10, as in the paper).
        chunk_size: scenes per generation call (and per flush).
        limit: only the first ``limit`` train scenes (smoke runs).
        simulator: a ready simulator (tests); built from ``model``/``backend`` otherwise.
    """
    _check_version(version)
    scenes = load_train_scenes(project_path, dataset)
    if limit is not None:
        scenes = scenes[:limit]
    out_path = decisions_path(project_path, dataset, version)
    sim = simulator
    state: dict[str, Any] = {}

    def process(chunk: list[Mapping[str, Any]], ci: int) -> list[dict[str, Any]]:
        if "sim" not in state:  # build lazily: a finished file needs no model at all
            state["sim"] = sim or make_simulator(model, backend, n_thoughts=n, max_thought_tokens=max_thought_tokens,
                                                 temperature=temperature, top_p=top_p,
                                                 batch_size=max(n, chunk_size * n), **dict(backend_kwargs or {}))
        return generate_decisions(chunk, state["sim"], n, chunk_rng(seed, ci), version=version, model=model)

    return run_resumable(scenes, out_path, process, chunk_size=chunk_size, stage=f"decisions {dataset}/{version}",
                         progress=progress)


# --------------------------------------------------------------------------------------------
# OpenAI Batch route
# --------------------------------------------------------------------------------------------

def _todo_scenes(project_path: str | os.PathLike, dataset: str, out_path: Path, limit: int | None) -> list[dict[str, Any]]:
    from usermirrorer.data_pipeline.jsonl import done_keys

    scenes = load_train_scenes(project_path, dataset)
    scenes = scenes[:limit] if limit is not None else scenes
    done = done_keys(out_path, lambda r: r.get("scene_id"))
    return [s for s in scenes if s["scene_id"] not in done]


def batch_scene_ids(batch_output: str | os.PathLike) -> dict[int, str]:
    """Request index -> scene id, read from the ``custom_id`` of each Batch output line.

    The openai backend writes ``custom_id = "<index>|<kind>|<letter ids>|<scene id>"``.
    """
    from usermirrorer.sim.backends.openai_backend import read_batch_jsonl

    out: dict[int, str] = {}
    for line, record in read_batch_jsonl(batch_output):
        parts = str(record.get("custom_id", "")).split("|", 3)
        if len(parts) != 4 or not parts[0].isdigit():
            raise DataError("batch output line without a usermirrorer custom_id",
                            [data_problem(batch_output, line, "custom_id", f"got {record.get('custom_id')!r}")])
        out[int(parts[0])] = parts[3]
    return out


def write_decisions_batch(project_path: str | os.PathLike, dataset: str, model: str, version: str,
                          batch_file: str | os.PathLike, *, n: int = 10, seed: int = 0, max_thought_tokens: int = 256,
                          temperature: float = 1.0, top_p: float = 0.9, limit: int | None = None,
                          backend_kwargs: Mapping[str, Any] | None = None) -> int:
    """Write OpenAI Batch requests for the unfinished scenes; returns how many were written."""
    from usermirrorer.sim.backends import make_backend
    from usermirrorer.sim.prompts import DEFAULT_PROMPTS, build_prompt

    _check_version(version)
    scenes = _todo_scenes(project_path, dataset, decisions_path(project_path, dataset, version), limit)
    if not scenes:
        return 0
    backend = make_backend("openai", model, **dict(backend_kwargs or {}))
    prompts = [build_prompt(s, "decision", DEFAULT_PROMPTS) for s in scenes]
    backend.to_batch_jsonl(prompts, batch_file, n=n, temperature=temperature, top_p=top_p,
                           max_tokens=max_thought_tokens, stop=[DEFAULT_PROMPTS.behavior_marker], seed=seed)
    return len(scenes)


def read_decisions_batch(project_path: str | os.PathLike, dataset: str, model: str, version: str,
                         batch_output: str | os.PathLike, *, seed: int = 0,
                         backend_kwargs: Mapping[str, Any] | None = None) -> StageReport:
    """Append the decisions found in a finished Batch output file (train-file order, no repeats)."""
    import time

    from usermirrorer.data_pipeline.jsonl import JsonlAppender
    from usermirrorer.sim.backends import make_backend
    from usermirrorer.sim.prompts import DEFAULT_PROMPTS, clean_thought

    _check_version(version)
    start = time.perf_counter()
    out_path = decisions_path(project_path, dataset, version)
    scenes = {s["scene_id"]: s for s in _todo_scenes(project_path, dataset, out_path, None)}
    backend = make_backend("openai", model, **dict(backend_kwargs or {}))
    marker = DEFAULT_PROMPTS.behavior_marker
    texts = backend.from_batch_jsonl(batch_output, stop=[marker])
    ids = batch_scene_ids(batch_output)
    unknown = sorted({sid for sid in ids.values() if sid not in scenes})
    report = StageReport(stage=f"decisions {dataset}/{version} (batch)", path=out_path, total=len(ids))
    report.skipped = len(unknown)
    by_id = {ids[i]: conts for i, conts in enumerate(texts) if ids[i] in scenes}
    records = [
        {"scene_id": sid, "dataset": s["dataset"], "version": version, "model": model, "seed": seed,
         "thoughts": [clean_thought(DEFAULT_PROMPTS.decision_prefix + c, DEFAULT_PROMPTS) for c in by_id[sid]]}
        for sid, s in scenes.items() if sid in by_id
    ]
    with JsonlAppender(out_path) as out:
        out.write(records)
    report.written = len(records)
    report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def add_llm_stage_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``decisions`` and ``probs``."""
    p.add_argument("--dataset", required=True, help="dataset name: reads <project>/datasets/<D>_train.jsonl")
    p.add_argument("--project-path", required=True, help="working directory (DESIGN §2 layout)")
    p.add_argument("--model", required=True, help="registry name (smollm2-135m, tiny-random, ...), folder or hub id")
    p.add_argument("--version", required=True, choices=VERSIONS, help="which decisions file: strong or weak")
    p.add_argument("--backend", default="transformers", choices=("transformers", "vllm", "openai"))
    p.add_argument("--chunk-size", type=int, default=4, help="scenes per backend call and per flush to disk")
    p.add_argument("--limit", type=int, help="only the first N train scenes")
    p.add_argument("--dtype", help="transformers backend: torch dtype (e.g. bfloat16, float32)")
    p.add_argument("--base-url", help="openai backend: server URL")
    p.add_argument("--no-progress", action="store_true")


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """``--batch-out`` / ``--batch-in`` of the OpenAI Batch route (``--backend openai``)."""
    p.add_argument("--batch-out", metavar="FILE",
                   help="openai backend: write OpenAI Batch requests for the unfinished scenes here, call no server")
    p.add_argument("--batch-in", metavar="FILE",
                   help="openai backend: read a finished OpenAI Batch output file and append its results")


def check_batch_arguments(args: argparse.Namespace) -> None:
    if (args.batch_out or args.batch_in) and args.backend != "openai":
        raise ConfigError(f"--batch-out/--batch-in go with --backend openai, got --backend {args.backend}")
    if args.batch_out and args.batch_in:
        raise ConfigError("pass either --batch-out (write requests) or --batch-in (read results), not both")


def backend_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if getattr(args, "dtype", None):
        kwargs["dtype"] = args.dtype
    if getattr(args, "base_url", None):
        kwargs["base_url"] = args.base_url
    return kwargs


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer decisions``."""
    p = subparsers.add_parser(
        "decisions",
        help="N decision-mode thoughts per train scene (strong or weak model)",
        description=(
            "Sample --n decision-mode thoughts (Stimulus, Knowledge, Evaluation; temperature 1.0, "
            "top-p 0.9) for every scene of <project>/datasets/<D>_train.jsonl and append them to "
            "<project>/decisions/<D>_decisions_<version>.jsonl. Re-running resumes: finished scenes "
            "are skipped."
        ),
    )
    add_llm_stage_arguments(p)
    p.add_argument("--n", type=int, default=10, help="thoughts per scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-thought-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.9)
    add_batch_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    check_batch_arguments(args)
    kwargs = backend_kwargs_from_args(args)
    if args.batch_out:
        n = write_decisions_batch(args.project_path, args.dataset, args.model, args.version, args.batch_out, n=args.n,
                                  seed=args.seed, max_thought_tokens=args.max_thought_tokens,
                                  temperature=args.temperature, top_p=args.top_p, limit=args.limit,
                                  backend_kwargs=kwargs)
        console.print(f"wrote {n} batch requests to {args.batch_out}; run the batch, then pass its output to --batch-in")
        return 0
    if args.batch_in:
        report = read_decisions_batch(args.project_path, args.dataset, args.model, args.version, args.batch_in,
                                      seed=args.seed, backend_kwargs=kwargs)
        console.print(f"decisions: {report.written} scenes appended from {args.batch_in} -> {report.path}")
        return 0
    report = run_decisions(
        args.project_path, args.dataset, args.model, args.version, n=args.n, backend=args.backend,
        seed=args.seed, chunk_size=args.chunk_size, max_thought_tokens=args.max_thought_tokens,
        temperature=args.temperature, top_p=args.top_p, limit=args.limit, progress=not args.no_progress,
        backend_kwargs=kwargs,
    )
    console.print(f"decisions: {report.written} scenes written, {report.skipped} already done "
                  f"({report.seconds:.0f} s) -> {report.path}")
    return 0
