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

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.jsonl import JsonlAppender
from usermirrorer.data_pipeline.ray_engine import RayEngine, check_shippable
from usermirrorer.data_pipeline.sampling.draws import check_seed
from usermirrorer.data_pipeline.training.stage import (
    StageReport,
    check_version,
    chunk_rng,
    load_train_scenes,
    require_columns,
    run_resumable,
    unfinished,
)
from usermirrorer.errors import ConfigError, DataError, data_problem
from usermirrorer.sim import SimOptions, UserSimulator
from usermirrorer.sim.backends import make_backend
from usermirrorer.sim.backends.openai_backend import read_batch_jsonl
from usermirrorer.sim.prompts import DEFAULT_PROMPTS, build_prompt, clean_thought

__all__ = [
    "decisions_path",
    "generate_decisions",
    "DecisionChunks",
    "make_simulator",
    "run_decisions",
    "write_decisions_batch",
    "read_decisions_batch",
    "batch_scene_ids",
]


def decisions_path(project_path: str | os.PathLike, dataset: str, version: str) -> Path:
    """``<project>/decisions/<D>_decisions_<version>.jsonl``."""
    check_version(version)
    return Path(project_path) / "decisions" / f"{dataset}_decisions_{version}.jsonl"


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
    require_columns(scenes, ("scene_id", "dataset", "text"), "generate_decisions")
    if n < 1:
        raise ConfigError(f"n (thoughts per scene) must be >= 1, got {n}")
    seed = int(rng.integers(0, 2**31 - 1))
    thoughts = simulator.thoughts(list(scenes), n, seed=seed)
    return [
        {"scene_id": s["scene_id"], "dataset": s["dataset"], "version": version, "model": model,
         "seed": seed, "thoughts": list(ts)}
        for s, ts in zip(scenes, thoughts)
    ]


def make_simulator(model: str, backend: str = "transformers", *, n_thoughts: int = 1, max_thought_tokens: int = 256,
                   temperature: float = 1.0, top_p: float = 0.9, batch_size: int = 8, **backend_kwargs: Any):
    """A decision-mode :class:`~usermirrorer.sim.UserSimulator` with the stage's sampling options."""
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
    fresh: bool = False,
    engine: RayEngine | None = None,
) -> StageReport:
    """Write ``decisions/<D>_decisions_<version>.jsonl`` for the train scenes (resumable).

    A resume must use the same model and sampling options (kept in ``<output>.params.json``);
    ``fresh`` starts over instead.

    Args:
        model: registry name, folder or hub id of the LLM writing thoughts.
        version: "strong" or "weak" (names the output file).
        n: thoughts per scene (default 10, as in the paper).
        chunk_size: scenes per generation call (and per flush).
        limit: only the first ``limit`` train scenes (smoke runs).
        simulator: a ready simulator (tests); built from ``model``/``backend`` otherwise.
        engine: run the chunks on Ray actors (one simulator per actor); the records equal a
            single-process run's (each chunk has its own seed), in order of completion.
    """
    check_version(version)
    check_seed(seed)
    scenes = load_train_scenes(project_path, dataset)
    if limit is not None:
        scenes = scenes[:limit]
    out_path = decisions_path(project_path, dataset, version)
    check_shippable(simulator, engine)
    process = DecisionChunks(model=model, version=version, n=n, seed=seed, backend=backend,
                             max_thought_tokens=max_thought_tokens, temperature=temperature, top_p=top_p,
                             batch_size=max(n, chunk_size * n), backend_kwargs=dict(backend_kwargs or {}),
                             simulator=simulator)
    params = {"model": model, "backend": backend, "n": n, "seed": seed, "chunk_size": chunk_size,
              "max_thought_tokens": max_thought_tokens, "temperature": temperature, "top_p": top_p}
    return run_resumable(scenes, out_path, process, chunk_size=chunk_size, stage=f"decisions {dataset}/{version}",
                         progress=progress, params=params, fresh=fresh,
                         made_by=f"usermirrorer decisions --dataset {dataset} --version {version}", engine=engine)


@dataclass
class DecisionChunks:
    """The decisions stage's per-chunk function (picklable: it runs on Ray actors too).

    ``load()`` builds the simulator once (a finished file needs no model at all, so the
    single-process run calls it lazily, on the first chunk); ``self(chunk, ci)`` is
    :func:`generate_decisions` under chunk ``ci``'s generator (:func:`~.stage.chunk_rng`).
    """

    model: str
    version: str
    n: int
    seed: int
    backend: str = "transformers"
    max_thought_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.9
    batch_size: int = 8
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    simulator: Any = None

    def load(self) -> None:
        if self.simulator is None:
            self.simulator = make_simulator(self.model, self.backend, n_thoughts=self.n,
                                            max_thought_tokens=self.max_thought_tokens,
                                            temperature=self.temperature, top_p=self.top_p,
                                            batch_size=self.batch_size, **self.backend_kwargs)

    def __call__(self, chunk: list[Mapping[str, Any]], ci: int) -> list[dict[str, Any]]:
        self.load()
        return generate_decisions(chunk, self.simulator, self.n, chunk_rng(self.seed, ci), version=self.version,
                                  model=self.model)


# --------------------------------------------------------------------------------------------
# OpenAI Batch route
# --------------------------------------------------------------------------------------------

def _todo_scenes(project_path: str | os.PathLike, dataset: str, out_path: Path, limit: int | None) -> list[dict[str, Any]]:
    return unfinished(load_train_scenes(project_path, dataset), out_path, limit)


def batch_scene_ids(batch_output: str | os.PathLike) -> dict[int, str]:
    """Request index -> scene id, read from the ``custom_id`` of each Batch output line.

    The openai backend writes ``custom_id = "<index>|<kind>|<letter ids>|<scene id>"``.
    """
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
    check_version(version)
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
    check_version(version)
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
         "thoughts": [clean_thought(DEFAULT_PROMPTS.decision_prefix + c, DEFAULT_PROMPTS) for c in by_id[sid]],
         "scene_fp": s["scene_fp"]}
        for sid, s in scenes.items() if sid in by_id
    ]
    with JsonlAppender(out_path) as out:
        out.write(records)
    report.written = len(records)
    report.seconds = time.perf_counter() - start
    return report
