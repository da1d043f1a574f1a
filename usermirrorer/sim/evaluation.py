"""Evaluating a choice model on logged scenes: probabilities, sampled behaviours, metrics (DESIGN.md §8).

:func:`evaluate` is the one loop: it feeds the scenes to ``model.choice_probs`` in batches
(timing each batch, checking each distribution), draws ``repeats`` behaviours per scene and
returns an :class:`Evaluation` whose :meth:`~Evaluation.summary` holds the
:mod:`usermirrorer.sim.metrics` numbers. The ``usermirrorer eval`` command and the reproduce
pipeline run it over a scenes file with :func:`evaluate_file` (per-scene records appended as
they come, so a re-run resumes); the fidelity benchmark runs it under its own per-row cache.

**Sampling behaviours.** Two seeded schemes, because two published result sets use them:

- ``"per-scene"`` (eval command): scene ``s`` gets its own generator
  :func:`scene_rng` ``(seed, scene_id(s))``, so its behaviours do not depend on batching,
  resuming or which other scenes are evaluated;
- ``"shared"`` (fidelity benchmark): one ``np.random.default_rng(seed)`` draws an
  ``(n, repeats)`` block for the scenes in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from usermirrorer.data_pipeline.jsonl import JsonlAppender, check_run_params, done_keys, iter_jsonl
from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.data_pipeline.ray_engine import RayEngine, check_shippable, in_process
from usermirrorer.data_pipeline.sampling.draws import check_seed
from usermirrorer.data_pipeline.scene import scene_fingerprint, scene_id, scene_target
from usermirrorer.errors import ConfigError, DataError, data_problem
from usermirrorer.sim import metrics
from usermirrorer.sim.choice_models import BASELINE_CHOICE_MODELS, ChoiceModel, make_choice_model
from usermirrorer.sim.prompts import load_prompts
from usermirrorer.sim.saved_pool import is_pool_file
from usermirrorer.sim.simulator import SimOptions

__all__ = [
    "SAMPLING",
    "scene_rng",
    "sample_hits",
    "ScoredScene",
    "Evaluation",
    "evaluate",
    "evaluate_file",
    "EvalChunks",
]

SAMPLING = ("per-scene", "shared")


def scene_rng(seed: int, sid: str) -> np.random.Generator:
    """The generator of scene ``sid``'s behaviours under ``seed`` (the ``"per-scene"`` scheme)."""
    return np.random.default_rng([int(seed), zlib.crc32(sid.encode("utf-8"))])


def sample_hits(probs: Sequence[np.ndarray], targets: Sequence[int], repeats: int, seed: int,
                scene_ids: Sequence[str] | None = None) -> np.ndarray:
    """How many of ``repeats`` behaviours drawn per scene equal the real item (int64, per scene).

    Args:
        probs: per-scene distributions (lengths may differ).
        targets: the real item's position per scene.
        repeats: behaviours per scene.
        seed: sampling seed.
        scene_ids: given: one generator per scene (``"per-scene"``); None: one generator for
            all (``"shared"``).
    """
    if scene_ids is None:
        return metrics.sampled_hits(list(probs), targets, repeats, np.random.default_rng(seed))
    return np.array([metrics.sampled_hits([p], [t], repeats, scene_rng(seed, sid))[0]
                     for p, t, sid in zip(probs, targets, scene_ids)], dtype=np.int64).reshape(-1)


@dataclass
class ScoredScene:
    """One scene's answer.

    Attributes:
        index: position of the scene in :func:`evaluate`'s input.
        scene_id: :func:`~usermirrorer.data_pipeline.scene.scene_id` of the scene.
        group: its group (e.g. dataset), None when :func:`evaluate` got no groups.
        scene: the scene itself.
        target: the real item's position.
        probs: ``(K,)`` float64 choice probabilities.
        seconds: this scene's share of its batch's model time.
        rationales: decision mode: the thoughts (may be empty).
        thought_probs: decision mode: one distribution per thought; else None.
        scores: likelihood mode: the option scores before the temperature; else None.
        likelihood: likelihood mode: ``(3, K)`` context / neutral log-likelihoods and token counts.
        hits: sampled behaviours equal to the real item (None without ``repeats``).
    """

    index: int
    scene_id: str
    group: str | None
    scene: Mapping[str, Any] = field(repr=False)
    target: int
    probs: np.ndarray
    seconds: float
    rationales: list[str] = field(default_factory=list, repr=False)
    thought_probs: np.ndarray | None = field(default=None, repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)
    likelihood: np.ndarray | None = field(default=None, repr=False)
    hits: int | None = None


@dataclass
class Evaluation:
    """A choice model's answers on scenes.

    Attributes:
        scored: the answered scenes, in input order.
        repeats: behaviours sampled per scene (None: none drawn).
        complete: False when a time budget stopped the run before the last scene.
    """

    scored: list[ScoredScene]
    repeats: int | None
    complete: bool = True

    @property
    def scene_ids(self) -> list[str]:
        return [s.scene_id for s in self.scored]

    @property
    def probs(self) -> list[np.ndarray]:
        return [s.probs for s in self.scored]

    @property
    def targets(self) -> np.ndarray:
        return np.array([s.target for s in self.scored], dtype=np.int64)

    @property
    def hits(self) -> np.ndarray:
        return np.array([s.hits for s in self.scored], dtype=np.int64)

    @property
    def seconds(self) -> float:
        return float(sum(s.seconds for s in self.scored))

    def summary(self, overall: str | None = "all") -> dict[str, metrics.FidelitySummary]:
        """:func:`usermirrorer.sim.metrics.summarize_by_group` per group (one ``"all"`` group
        without groups), plus an ``overall`` row when there are several groups."""
        if self.repeats is None:
            raise ConfigError("this evaluation drew no behaviours (repeats=None): it has no accuracy")
        groups = [s.group if s.group is not None else "all" for s in self.scored]
        return metrics.summarize_by_group(groups, self.probs, self.targets, self.hits, self.repeats, overall)


def evaluate(
    scenes: Sequence[Mapping[str, Any]],
    model: ChoiceModel | Callable[[str | None], ChoiceModel],
    *,
    repeats: int | None = 10,
    seed: int = 0,
    batch_size: int = 8,
    sampling: str = "per-scene",
    groups: Sequence[str] | None = None,
    targets: Sequence[int] | None = None,
    choice_kwargs: Callable[[int], Mapping[str, Any]] | None = None,
    budget_seconds: float | None = None,
    on_batch: Callable[[list[ScoredScene]], None] | None = None,
    label: str = "the choice model",
) -> Evaluation:
    """Answer every scene with ``model`` and draw ``repeats`` behaviours per scene.

    Args:
        scenes: the scenes, each with ``text.action_list`` and the real item (``item_pos``).
        model: a choice model, or ``group -> choice model`` (called once per group, with None
            when there are no groups, and only if that group has scenes).
        repeats: behaviours sampled per scene; None: probabilities only.
        seed: sampling seed (see the module docstring).
        batch_size: scenes per ``choice_probs`` call.
        sampling: ``"per-scene"`` or ``"shared"`` (module docstring).
        groups: one group per scene (e.g. its dataset): batches never mix groups and the
            groups run in order of first appearance. None: batches follow the input order.
        targets: the real item's position per scene (default: ``scene_target`` of each).
        choice_kwargs: ``batch start within its group -> keyword arguments`` of
            ``choice_probs`` (e.g. ``mode``, a per-batch ``seed``); None: no arguments.
        budget_seconds: start no new batch after this much time (the model's construction
            included); the evaluation then holds the scenes answered so far and
            ``complete`` is False.
        on_batch: called with each batch's :class:`ScoredScene` list as it is answered (to
            write results incrementally); hits are set already with ``"per-scene"`` sampling.
        label: names the model in error messages.

    Raises:
        ConfigError: an unknown ``sampling`` or a batch size below 1.
        DataError: a scene without a valid real-item position, or a distribution of the
            wrong length / not summing to 1.
    """
    if sampling not in SAMPLING:
        raise ConfigError(f"sampling must be one of {list(SAMPLING)}, got {sampling!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    keys = [None] * len(scenes) if groups is None else [str(g) for g in groups]
    members: dict[str | None, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    per_scene = repeats is not None and sampling == "per-scene"
    scored: list[ScoredScene] = []
    complete = True
    for key, indices in members.items():
        chooser = model if callable(getattr(model, "choice_probs", None)) else model(key)
        for start in range(0, len(indices), batch_size):
            if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
                complete = False
                break
            chunk = indices[start:start + batch_size]
            kwargs = dict(choice_kwargs(start)) if choice_kwargs is not None else {}
            began = time.perf_counter()
            results = chooser.choice_probs([scenes[i] for i in chunk], **kwargs)
            spent = time.perf_counter() - began
            batch = []
            for i, result in zip(chunk, results):
                scene = scenes[i]
                probs = np.asarray(result.probs, dtype=np.float64)
                _check_probs(probs, scene, label)
                item = ScoredScene(
                    index=i, scene_id=scene_id(scene), group=key, scene=scene,
                    target=int(targets[i]) if targets is not None else scene_target(scene),
                    probs=probs, seconds=spent / len(chunk),
                    rationales=list(getattr(result, "rationales", None) or []),
                    thought_probs=getattr(result, "thought_probs", None),
                    scores=getattr(result, "scores", None),
                    likelihood=getattr(result, "likelihood", None),
                )
                if per_scene:
                    item.hits = int(sample_hits([probs], [item.target], repeats, seed, [item.scene_id])[0])
                batch.append(item)
            scored.extend(batch)
            if on_batch is not None:
                on_batch(batch)
        if not complete:
            break
    scored.sort(key=lambda s: s.index)
    if repeats is not None and sampling == "shared" and scored:
        hits = sample_hits([s.probs for s in scored], [s.target for s in scored], repeats, seed)
        for item, h in zip(scored, hits):
            item.hits = int(h)
    return Evaluation(scored=scored, repeats=repeats, complete=complete)


def _check_probs(probs: np.ndarray, scene: Mapping[str, Any], label: str) -> None:
    k = len(scene["text"]["action_list"])
    if probs.shape != (k,) or not np.all(np.isfinite(probs)) or abs(probs.sum() - 1.0) > 1e-4 or (probs < 0).any():
        raise DataError(
            f"{label} returned {probs!r} for scene {scene.get('scene_id')!r}; expected {k} "
            "non-negative probabilities summing to 1 (one per option)"
        )


# ---------------------------------------------------------------------------------------------
# a scenes file, resumable (the `usermirrorer eval` command, the reproduce pipeline)


class _ModelPerDataset:
    """The choice model per dataset: one simulator for all, or one baseline per raw dataset."""

    def __init__(self, model: str | ChoiceModel, project_path: str | os.PathLike | None, **llm: Any):
        self.name = model
        self.project_path = project_path
        self.baseline = isinstance(model, str) and model in BASELINE_CHOICE_MODELS
        # a pool file (usermirrorer fit-pool) has log-only members: one pool per dataset, like a baseline
        self.pool = is_pool_file(model)
        self._llm = llm
        self._models: dict[str, ChoiceModel] = {}
        if not self.baseline and not self.pool:
            self.model = make_choice_model(model, **llm)

    def __call__(self, dataset: str) -> ChoiceModel:
        if not self.baseline and not self.pool:
            return self.model
        if dataset not in self._models:
            if not self.project_path:
                raise ConfigError(f"--model {self.name!r} reads the interaction log: pass --project-path")
            ds = load_raws(self.project_path, dataset)
            self._models[dataset] = make_choice_model(self.name, ds) if self.baseline else make_choice_model(
                self.name, ds, backend=self._llm.get("backend", "transformers"),
                backend_kwargs=self._llm.get("backend_kwargs"), project_path=self.project_path)
        return self._models[dataset]

    @property
    def description(self) -> str:
        if self.baseline:
            return self.name
        if self.pool:
            return f"the pool {self.name} (its members answer in the modes it was fitted in)"
        return repr(getattr(self.model, "backend", self.model))


class _SeedPerScene:
    """Decision mode: one scene per model call, its thoughts sampled under a seed of its own.

    A batch of thoughts is sampled under one seed, so a scene's thoughts would depend on its
    batch mates (and so on ``--limit`` and resuming); alone, they depend on (seed, scene id) only.
    """

    def __init__(self, models: Callable[[str], ChoiceModel], seed: int):
        self.models, self.seed = models, seed
        self.description = models.description

    def __call__(self, dataset: str) -> ChoiceModel:
        return _SceneSeeded(self.models(dataset), self.seed)


class _SceneSeeded:
    def __init__(self, model: ChoiceModel, seed: int):
        self.model, self.seed = model, seed

    def choice_probs(self, scenes: Sequence[Mapping[str, Any]], **kwargs: Any) -> list[Any]:
        out = []
        for scene in scenes:
            own = int(scene_rng(self.seed, scene_id(scene)).integers(2**31 - 1))
            out.extend(self.model.choice_probs([scene], **{**kwargs, "seed": own}))
        return out


def _eval_chunks(scenes: Sequence[dict[str, Any]], batch_size: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """The batches :func:`evaluate` makes (per dataset, in order of first appearance), numbered."""
    members: dict[str, list[dict[str, Any]]] = {}
    for scene in scenes:
        members.setdefault(str(scene.get("dataset", "")), []).append(scene)
    batches = [group[i:i + batch_size] for group in members.values() for i in range(0, len(group), batch_size)]
    return list(enumerate(batches))


@dataclass
class EvalChunks:
    """The eval stage's per-batch function (picklable: it runs on Ray actors too).

    ``load()`` builds the choice model(s) once; ``self(batch, ci)`` answers one batch of scenes
    of one dataset with :func:`evaluate` (``"per-scene"`` sampling, so a scene's record does
    not depend on its batch) and returns the output records, each with ``_seconds`` (its share
    of the model time, for the speed column; the writer drops it).
    """

    model: str | ChoiceModel
    name: str
    project_path: str | os.PathLike | None
    mode: str
    repeat: int
    seed: int
    n_thoughts: int = 1
    llm: dict[str, Any] = field(default_factory=dict)
    models: Any = None

    def load(self) -> None:
        if self.models is None:
            models = _ModelPerDataset(self.model, self.project_path, **self.llm)
            self.models = _SeedPerScene(models, self.seed) if self.mode == "decision" else models

    @property
    def description(self) -> str:
        self.load()
        return self.models.description

    def __call__(self, chunk: list[dict[str, Any]], ci: int) -> list[dict[str, Any]]:
        self.load()
        evaluation = evaluate(chunk, self.models, repeats=self.repeat, seed=self.seed, batch_size=len(chunk),
                              groups=[str(s.get("dataset", "")) for s in chunk],
                              choice_kwargs=lambda start: {"mode": self.mode, "n_thoughts": self.n_thoughts},
                              label=f"--model {self.name!r}")
        return [self._record(s) for s in evaluation.scored]

    def _record(self, s: ScoredScene) -> dict[str, Any]:
        rec = {
            "scene_id": s.scene_id, "dataset": s.group, "user_id": s.scene.get("user_id"),
            "item_id": s.scene.get("item_id"), "item_pos": s.target, "n_options": len(s.probs),
            "probs": [round(float(p), 6) for p in s.probs], "hits": s.hits, "repeat": self.repeat,
            "model": self.name, "mode": self.mode, "_seconds": s.seconds,
        }
        if s.rationales:
            rec["rationales"] = s.rationales
        if s.thought_probs is not None:
            rec["thought_probs"] = np.round(s.thought_probs, 6).tolist()
        return rec


def _run_params(name: str, mode: str, repeat: int, seed: int, baseline: bool, backend: str, dtype: str,
                prompts: str | os.PathLike | None, truncate_history: bool, n_thoughts: int, max_thought_tokens: int,
                temperature: float, top_p: float, likelihood_score: str, score_temperature: float) -> dict[str, Any]:
    """What makes an eval output's numbers: a resume must match it (its own mode's options only)."""
    params: dict[str, Any] = {"model": name, "mode": mode, "repeat": repeat, "seed": seed}
    if not baseline:
        prompt_text = Path(prompts).read_bytes() if prompts and Path(prompts).is_file() else b""
        params.update(backend=backend, dtype=dtype, truncate_history=truncate_history,
                      prompts=hashlib.sha256(prompt_text).hexdigest()[:16] if prompts else None)
    if mode == "decision":
        params.update(n_thoughts=n_thoughts, max_thought_tokens=max_thought_tokens, temperature=temperature,
                      top_p=top_p)
    if mode == "likelihood":
        params.update(likelihood_score=likelihood_score, score_temperature=score_temperature)
    return params


def _finished(out_path: Path, fingerprints: Mapping[str, str]) -> set[str]:
    """Scene ids already in ``out_path``; a result about another version of its scene is refused."""
    done = done_keys(out_path, lambda r: r.get("scene_id"))
    problems = []
    for lineno, rec in iter_jsonl(out_path) if done else ():
        fp, sid = rec.get("scene_fp"), rec.get("scene_id")
        if fp is not None and sid in fingerprints and fp != fingerprints[sid]:
            problems.append(data_problem(out_path, lineno, "scene_fp", f"scene {sid!r} has changed since this "
                                         "result was written (was the scene file re-sampled?)"))
    if problems:
        raise DataError(f"{out_path} holds results for other scenes than --input; pass --fresh to start over",
                        problems)
    return done


def _load_scenes(path: Path, limit: int | None) -> list[tuple[int, dict]]:
    if not path.exists():
        raise ConfigError(f"--input {str(path)!r} does not exist; build scenes with `usermirrorer scenes` first")
    scenes = []
    for lineno, record in iter_jsonl(path):
        scenes.append((lineno, record))
        if limit is not None and len(scenes) >= limit:
            break
    if not scenes:
        raise DataError("no scenes to evaluate", [data_problem(path, None, None, "the file has no records")])
    return scenes


def evaluate_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    model: str | ChoiceModel = "smollm2-135m",
    *,
    mode: str = "direct",
    repeat: int = 10,
    n_thoughts: int = 1,
    max_thought_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 0.9,
    backend: str = "transformers",
    batch_size: int = 8,
    limit: int | None = None,
    seed: int = 0,
    dtype: str = "auto",
    share_prefix: bool = True,
    threads: int | None = None,
    prompts: str | os.PathLike | None = None,
    truncate_history: bool = False,
    project_path: str | os.PathLike | None = None,
    console: Any = None,
    likelihood_score: str = "pmi",
    score_temperature: float = 1.0,
    fresh: bool = False,
    engine_kwargs: dict[str, Any] | None = None,
    engine: RayEngine | None = None,
) -> dict[str, Any]:
    """Evaluate a choice model on a scenes file; resumable; prints a table per dataset.

    Appends one record per scene to ``output`` as it goes (``scene_id, dataset, user_id,
    item_id, item_pos, n_options, probs, hits, repeat, model, mode`` + ``rationales`` and
    ``thought_probs`` in decision mode); scenes already there are skipped. Behaviours are
    drawn with the ``"per-scene"`` scheme. The metrics cover every finished record of the
    input's scenes (this run's and earlier ones) and are written to
    ``<output>.summary.json``.

    Args:
        input: scenes JSONL (e.g. ``<project>/datasets/<D>_eval.jsonl``).
        output: per-scene results JSONL.
        model: LLM name / folder, a baseline name (``random``, ``popularity``,
            ``collaborative``: one per dataset, from ``project_path``), or a choice model.
        mode, n_thoughts, max_thought_tokens, temperature, top_p, truncate_history,
            likelihood_score, score_temperature: the simulator's
            :class:`~usermirrorer.sim.SimOptions` (``seed`` and ``batch_size`` too).
        repeat: behaviours sampled per scene.
        backend: LLM backend; ``dtype``, ``share_prefix`` and ``threads`` set the
            ``transformers`` one.
        batch_size: scenes per model call.
        limit: only the first ``limit`` scenes of ``input``.
        seed: behaviour sampling seed; in decision mode each scene's thoughts are sampled
            under a seed of its own (from ``seed`` and its scene id), so they do not depend on
            batching, ``limit`` or resuming (decision mode asks the model one scene at a time).
        fresh: delete ``output`` first; a resume with other parameters (model, mode, seed
            ...) is refused otherwise (the parameters are kept in ``<output>.params.json``).
        prompts: YAML/JSON file overriding prompt texts.
        project_path: project folder with ``raws/`` (baselines).
        console: a ``rich`` console (default: a new one, 160 columns wide off a terminal).
        engine_kwargs: ``vllm`` backend: engine settings (``tensor_parallel_size``,
            ``data_parallel_size``, ``gpu_memory_utilization``, ``enable_prefix_caching`` ...).
        engine: score the batches on Ray actors (one model per actor; ``model`` must then be a
            name, not an object). Every scene's behaviours have their own seed, so the
            records equal a single-process run's; they are appended in order of completion.

    Returns:
        The summary written to ``<output>.summary.json``.
    """
    if repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1 (or left out for every scene), got {limit}")
    check_seed(seed)
    if engine_kwargs and backend != "vllm":
        raise ConfigError(f"engine_kwargs {sorted(engine_kwargs)} set the vLLM engine, but backend is {backend!r}; "
                          "use backend='vllm' or drop them")
    baseline = isinstance(model, str) and model in BASELINE_CHOICE_MODELS
    check_shippable(None if isinstance(model, str) else model, engine, "choice model", "pass its name as model=")
    if prompts and (baseline or is_pool_file(model)):
        raise ConfigError(f"--prompts sets LLM prompt texts, but --model {model!r} is not an LLM; drop --prompts")
    in_path, out_path = Path(input), Path(output)
    if out_path.resolve() == in_path.resolve() or out_path.exists() and in_path.exists() and out_path.samefile(in_path):
        raise ConfigError(f"--output {str(out_path)!r} is the --input scene file; results would be appended to "
                          "the scenes. Pass another --output")
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # a log file or pipe: do not squeeze the table to 80 columns
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    scenes = _load_scenes(in_path, limit)
    ids: list[str] = []
    for lineno, scene in scenes:
        scene_target(scene, f"{in_path}:{lineno}")
        ids.append(scene_id(scene))
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError("scene ids are not unique; resuming needs them", [data_problem(in_path, None, "scene_id", f"{dup!r} repeats")])
    check_run_params(out_path, _run_params(name, mode, repeat, seed, baseline, backend, dtype, prompts,
                                           truncate_history, n_thoughts, max_thought_tokens, temperature, top_p,
                                           likelihood_score, score_temperature), fresh=fresh)
    fingerprints = {sid: scene_fingerprint(s) for sid, (_, s) in zip(ids, scenes)}
    done = _finished(out_path, fingerprints)
    todo = [(lineno, s) for sid, (lineno, s) in zip(ids, scenes) if sid not in done]
    console.print(f"[bold]usermirrorer eval[/]: {len(scenes)} scenes, {len(scenes) - len(todo)} already in {out_path}, "
                  f"{len(todo)} to score")

    seconds: dict[str, float] = {}
    counted: dict[str, int] = {}
    if todo:
        llm: dict[str, Any] = {}
        if not baseline:
            backend_kwargs: dict[str, Any] = {}
            if backend in ("transformers", "hf"):
                backend_kwargs = {"dtype": dtype, "share_prefix": share_prefix, "num_threads": threads,
                                  "remember_rows": False}  # eval scenes do not repeat: keep only shared prefixes
            elif backend == "vllm":
                backend_kwargs = dict(engine_kwargs or {})
            llm = {"backend": backend, "backend_kwargs": backend_kwargs,
                   "prompts": load_prompts(prompts) if prompts else None,
                   "options": SimOptions(mode=mode, n_thoughts=n_thoughts, temperature=temperature, top_p=top_p,
                                         max_thought_tokens=max_thought_tokens, batch_size=batch_size, seed=seed,
                                         truncate_history=truncate_history, likelihood_score=likelihood_score,
                                         score_temperature=score_temperature)}
        process = EvalChunks(model=model, name=name, project_path=project_path, mode=mode, repeat=repeat, seed=seed,
                             n_thoughts=n_thoughts, llm=llm)
        if engine is None:
            process.load()
            console.print(f"model: {process.description}, mode: {mode}")
        else:
            console.print(f"model: {name} on {engine.workers} Ray worker(s), mode: {mode}")
        chunks = _eval_chunks([s for _, s in todo], batch_size)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        with progress, JsonlAppender(out_path) as out:
            task = progress.add_task("scoring", total=len(todo))
            results = in_process(process, chunks) if engine is None else engine.map_chunks(process, chunks)
            for _, records in results:
                for rec in records:
                    spent = rec.pop("_seconds")
                    seconds[rec["dataset"]] = seconds.get(rec["dataset"], 0.0) + spent
                    counted[rec["dataset"]] = counted.get(rec["dataset"], 0) + 1
                    rec["scene_fp"] = fingerprints[rec["scene_id"]]
                out.write(records)
                progress.advance(task, len(records))

    # Metrics over every finished record of the input scenes (this run and earlier ones).
    wanted = set(ids)
    finished = {}
    for _, rec in iter_jsonl(out_path):
        if rec.get("scene_id") in wanted:
            finished[rec["scene_id"]] = rec
    records = [finished[i] for i in ids if i in finished]
    summary = _summarize(records)
    speed = {d: counted[d] / seconds[d] for d in counted if seconds.get(d, 0) > 0}
    _print_table(console, summary, speed, name, mode, repeat)
    summary_path = out_path.with_name(out_path.name + ".summary.json")
    payload = {
        "model": name, "mode": mode, "input": str(in_path), "repeat": records[0]["repeat"] if records else repeat,
        "log_loss_unit": "nats", "accuracy_ci": "95% normal approximation over scenes",
        "datasets": {k: {**v.to_dict(), "scenes_per_s": speed.get(k)} for k, v in summary.items()},
    }
    summary_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    console.print(f"per-scene results: {out_path}\nsummary: {summary_path}")
    return payload


def _summarize(records: list[dict]) -> dict[str, metrics.FidelitySummary]:
    if not records:
        return {}
    repeats = {r["repeat"] for r in records}
    if len(repeats) > 1:
        raise ConfigError(f"the output file mixes --repeat values {sorted(repeats)}; use a fresh --output")
    return metrics.summarize_by_group(
        [r["dataset"] for r in records],
        [np.asarray(r["probs"], dtype=np.float64) for r in records],
        [r["item_pos"] for r in records],
        [r["hits"] for r in records],
        repeats.pop(),
    )


def _print_table(console: Any, summary: dict, speed: dict[str, float], model: str, mode: str, repeat: int) -> None:
    table = Table(title=f"eval: {model} ({mode}), accuracy over {repeat} sampled behaviours per scene")
    for col, justify in (("dataset", "left"), ("n", "right"), ("acc % [95% CI]", "right"), ("top-1 %", "right"), ("random %", "right"),
                         ("log-loss nats", "right"), ("ECE", "right"), ("choice share A.. %", "left"),
                         ("real item at A.. %", "left"), ("scenes/s", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for group, s in summary.items():
        ci = f"{100 * s.accuracy:.1f} [{100 * s.ci_low:.1f}, {100 * s.ci_high:.1f}]" if np.isfinite(s.ci_low) else f"{100 * s.accuracy:.1f}"
        share = " ".join(f"{100 * x:.0f}" for x in s.letter_share)
        tshare = " ".join(f"{100 * x:.0f}" for x in s.target_share)
        sp = speed.get(group)
        table.add_row(group, str(s.n), ci, f"{100 * s.top1_accuracy:.1f}", f"{100 * s.random_accuracy:.1f}", f"{s.log_loss:.3f}", f"{s.ece:.3f}",
                      share, tshare, f"{sp:.2f}" if sp else "—")
    console.print(table)
