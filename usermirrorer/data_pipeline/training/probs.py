"""Probs: the predictor's letter distribution after each thought (DESIGN.md §7.2).

``usermirrorer probs --dataset D --project-path W --model M --version strong|weak`` reads the
train scenes and ``W/decisions/D_decisions_<version>.jsonl`` and appends one record per scene
to ``W/probs/D_probs_<version>.jsonl``::

    {"scene_id": ..., "dataset": ..., "version": "strong", "model": <predictor>,
     "probs": [[p_A, p_B, ...], ...]}    # one row per thought, in the decisions' order

Each row is the predictor's next-token distribution over the option letters after
``<thought>\\nBehavior: [``, restricted to the K letters and renormalised.

Resuming works like decisions (fixed chunks, skip finished scene ids, recompute a partly
written chunk). The backend's prefix cache is cleared before each chunk, so a chunk's numbers
never depend on which chunk ran before it and a resumed run writes the same bytes.

OpenAI Batch route (``--backend openai``): ``--batch-out FILE`` writes one scoring request per
thought of every unfinished scene; ``--batch-in FILE`` reads the finished batch output and
appends the distributions.
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
from usermirrorer.data_pipeline.training.decisions import batch_scene_ids, decisions_path
from usermirrorer.data_pipeline.training.stage import (
    StageReport,
    check_version,
    load_train_scenes,
    require_columns,
    run_resumable,
    stage_records,
    unfinished,
)
from usermirrorer.errors import DataError, data_problem
from usermirrorer.sim import SimOptions, UserSimulator
from usermirrorer.sim.backends import make_backend
from usermirrorer.sim.prompts import build_prompt

__all__ = ["probs_path", "score_decisions", "ProbsChunks", "join_decisions", "run_probs", "write_probs_batch", "read_probs_batch"]


def probs_path(project_path: str | os.PathLike, dataset: str, version: str) -> Path:
    """``<project>/probs/<D>_probs_<version>.jsonl``."""
    check_version(version)
    return Path(project_path) / "probs" / f"{dataset}_probs_{version}.jsonl"


def score_decisions(scenes: Sequence[Mapping[str, Any]], simulator: Any, *, version: str, model: str) -> list[dict[str, Any]]:
    """Letter distribution after every thought of every scene of a batch.

    Columns in: ``scene_id``, ``dataset``, ``text``, ``thoughts`` (list of strings).
    Columns out: ``scene_id``, ``dataset``, ``version``, ``model``, ``probs`` (one list of K
    floats per thought, rows summing to 1).

    Args:
        simulator: a :class:`~usermirrorer.sim.UserSimulator` (or anything with ``score_thoughts``).
    """
    require_columns(scenes, ("scene_id", "dataset", "text", "thoughts"), "score_decisions")
    rows = simulator.score_thoughts(list(scenes), [list(s["thoughts"]) for s in scenes])
    out = []
    for scene, arr in zip(scenes, rows):
        arr = np.asarray(arr, dtype=np.float64)
        k = len(scene["text"]["action_list"])
        if arr.shape != (len(scene["thoughts"]), k):
            raise DataError(f"score_decisions: scene {scene['scene_id']!r}: predictor returned shape {arr.shape}, "
                            f"expected ({len(scene['thoughts'])}, {k})")
        out.append({"scene_id": scene["scene_id"], "dataset": scene["dataset"], "version": version,
                    "model": model, "probs": arr.tolist()})
    return out


def join_decisions(project_path: str | os.PathLike, dataset: str, version: str) -> list[dict[str, Any]]:
    """Train scenes that have decisions of ``version``, each with its ``thoughts`` (file order).

    Raises:
        DataError: no decisions file or an empty one, a decision whose scene id is not in the
            train file, or one written about another version of its scene.
    """
    scenes = load_train_scenes(project_path, dataset)
    dpath = decisions_path(project_path, dataset, version)
    by_id = {s["scene_id"]: s for s in scenes}
    thoughts: dict[str, list[str]] = {}
    made_by = f"usermirrorer decisions --dataset {dataset} --version {version}"
    for lineno, rec in stage_records(dpath, by_id, made_by=made_by):
        sid = rec.get("scene_id")
        if sid not in by_id:
            raise DataError("decisions for unknown scenes",
                            [data_problem(dpath, lineno, "scene_id", f"{sid!r} is not in the train scene file; "
                                          "was the scene file re-sampled after the decisions were written?")])
        thoughts[sid] = rec["thoughts"]
    return [{**s, "thoughts": thoughts[s["scene_id"]]} for s in scenes if s["scene_id"] in thoughts]


def run_probs(
    project_path: str | os.PathLike,
    dataset: str,
    model: str,
    version: str,
    *,
    backend: str = "transformers",
    chunk_size: int = 4,
    limit: int | None = None,
    simulator: Any = None,
    progress: bool = True,
    backend_kwargs: Mapping[str, Any] | None = None,
    fresh: bool = False,
    engine: RayEngine | None = None,
) -> StageReport:
    """Write ``probs/<D>_probs_<version>.jsonl`` for every scene with decisions (resumable).

    A resume must use the same predictor (kept in ``<output>.params.json``); ``fresh`` starts over.

    Args:
        model: the predictor (registry name, folder or hub id).
        version: which decisions to score ("strong" or "weak").
        chunk_size: scenes per flush; all their thoughts are scored in one call.
        limit: only the first ``limit`` scenes that have decisions.
        engine: run the chunks on Ray actors (one predictor per actor); same records as a
            single-process run, in order of completion.
    """
    scenes = join_decisions(project_path, dataset, version)
    if limit is not None:
        scenes = scenes[:limit]
    out_path = probs_path(project_path, dataset, version)
    check_shippable(simulator, engine)
    process = ProbsChunks(model=model, version=version, backend=backend,
                          backend_kwargs=dict(backend_kwargs or {}), simulator=simulator)
    return run_resumable(scenes, out_path, process, chunk_size=chunk_size, stage=f"probs {dataset}/{version}",
                         progress=progress, params={"model": model, "backend": backend, "chunk_size": chunk_size},
                         fresh=fresh, made_by=f"usermirrorer probs --dataset {dataset} --version {version}",
                         engine=engine)


@dataclass
class ProbsChunks:
    """The probs stage's per-chunk function (picklable: it runs on Ray actors too).

    ``load()`` builds the predictor once; ``self(chunk, ci)`` clears the backend's prefix cache
    (a chunk must not depend on what the previous chunk left there, so any actor gives the
    same numbers) and runs :func:`score_decisions`.
    """

    model: str
    version: str
    backend: str = "transformers"
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    simulator: Any = None

    def load(self) -> None:
        if self.simulator is None:
            self.simulator = UserSimulator(model=self.model, backend=self.backend,
                                           options=SimOptions(mode="decision", batch_size=8), **self.backend_kwargs)

    def __call__(self, chunk: list[Mapping[str, Any]], ci: int) -> list[dict[str, Any]]:
        self.load()
        clear = getattr(getattr(self.simulator, "backend", None), "clear_cache", None)
        if callable(clear):
            clear()
        return score_decisions(chunk, self.simulator, version=self.version, model=self.model)


def _todo(project_path: str | os.PathLike, dataset: str, version: str, limit: int | None) -> list[dict[str, Any]]:
    return unfinished(join_decisions(project_path, dataset, version), probs_path(project_path, dataset, version), limit)


def write_probs_batch(project_path: str | os.PathLike, dataset: str, model: str, version: str,
                      batch_file: str | os.PathLike, *, limit: int | None = None,
                      backend_kwargs: Mapping[str, Any] | None = None) -> int:
    """Write one OpenAI Batch scoring request per thought of the unfinished scenes; returns the count."""
    scenes = _todo(project_path, dataset, version, limit)
    prompts = [build_prompt(s, "decision", thought=t) for s in scenes for t in s["thoughts"]]
    if not prompts:
        return 0
    backend = make_backend("openai", model, **dict(backend_kwargs or {}))
    backend.to_batch_jsonl(prompts, batch_file, letters=[list(p.letters) for p in prompts])
    return len(prompts)


def read_probs_batch(project_path: str | os.PathLike, dataset: str, model: str, version: str,
                     batch_output: str | os.PathLike, *,
                     backend_kwargs: Mapping[str, Any] | None = None) -> StageReport:
    """Append the distributions of a finished Batch output file (every thought of a scene needed)."""
    start = time.perf_counter()
    out_path = probs_path(project_path, dataset, version)
    scenes = _todo(project_path, dataset, version, None)
    backend = make_backend("openai", model, **dict(backend_kwargs or {}))
    logprobs = backend.from_batch_jsonl(batch_output)
    ids = batch_scene_ids(batch_output)
    rows: dict[str, list[list[float]]] = {}
    for i, lp in enumerate(logprobs):
        p = np.exp(np.asarray(lp, dtype=np.float64))
        rows.setdefault(ids[i], []).append((p / p.sum()).tolist())
    records, problems = [], []
    for s in scenes:
        got = rows.get(s["scene_id"])
        if got is None:
            continue
        if len(got) != len(s["thoughts"]):
            problems.append(data_problem(batch_output, None, "custom_id", f"scene {s['scene_id']!r}: {len(got)} results "
                                         f"for {len(s['thoughts'])} thoughts"))
            continue
        records.append({"scene_id": s["scene_id"], "dataset": s["dataset"], "version": version, "model": model,
                        "probs": got, "scene_fp": s["scene_fp"]})
    if problems:
        raise DataError("batch output does not match the decisions", problems)
    with JsonlAppender(out_path) as out:
        out.write(records)
    report = StageReport(stage=f"probs {dataset}/{version} (batch)", path=out_path, total=len(scenes))
    report.written, report.seconds = len(records), time.perf_counter() - start
    return report
