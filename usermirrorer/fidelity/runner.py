"""Run one choice model over one variant's eval scenes: probabilities, timing, resume.

A *choice model* is anything with ``choice_probs(list_of_scenes) -> list[ChoiceResult]``: the
LLM :class:`~usermirrorer.sim.UserSimulator` or a log-only baseline of
:mod:`usermirrorer.sim.baselines`. :class:`ModelSpec` names one row of the benchmark table;
:func:`build_choice_model` makes the model it names (through
:func:`usermirrorer.sim.choice_models.make_choice_model`); :func:`run_model` feeds it the scenes
with :func:`usermirrorer.sim.evaluation.evaluate`, which times every chunk, and appends the
answers to a JSONL cache, so an interrupted run resumes where it stopped and the recorded
seconds still add up to the model's cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.jsonl import JsonlAppender, iter_jsonl
from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.errors import ConfigError
from usermirrorer.sim.choice_models import make_choice_model
from usermirrorer.sim.evaluation import ScoredScene, evaluate
from usermirrorer.sim.prompts import MODES
from usermirrorer.sim.simulator import SimOptions

__all__ = [
    "MODEL_KINDS",
    "ModelSpec",
    "ModelRun",
    "build_choice_model",
    "run_model",
    "slug",
]

MODEL_KINDS = ("random", "popularity", "most-popular", "collaborative", "content", "cooccurrence", "mnl", "llm",
               "pool")


@dataclass(frozen=True)
class ModelSpec:
    """One row of the fidelity table.

    Attributes:
        label: the row's name.
        kind: ``random``, ``popularity`` (p ~ 1 + causal count), ``most-popular`` (argmax of
            the causal count), ``collaborative``, ``content`` (text-embedding similarity to the
            history, one fitted weight), ``cooccurrence`` (item co-occurrence with the recent
            history, one fitted weight), ``mnl`` (the learned multinomial logit), ``llm`` or
            ``pool`` (rows derived from other rows' answers by the benchmark, never built here).
        model: LLM registry name or folder (``kind == "llm"``).
        mode: LLM mode: ``direct``, ``decision`` or ``likelihood``; ``-`` for log-only models.
        limit: evaluate only the first ``limit`` scenes of each variant (None: all).
        role: ``baseline``, ``base LLM``, ``fine-tuned`` or ``extra`` (command line).
        n_thoughts, max_thought_tokens: decision-mode settings.
        debias: direct mode: letter-position debiasing (:data:`usermirrorer.sim.simulator.DEBIAS`).
        fit_on: fitted log-only rows: the train-user scenes they learn from, ``both``
            constructions or only ``standard`` / ``popularity-matched`` ones.
        fit_scenes: fitted log-only rows: how many train-user scenes were sampled to fit them
            (part of the key, so a cached fit is not reused under another count; 0: not fitted).
        batch_size: scenes per backend call.
        note: shown in the table.
    """

    label: str
    kind: str
    model: str | None = None
    mode: str = "-"
    limit: int | None = None
    role: str = "baseline"
    n_thoughts: int = 1
    max_thought_tokens: int = 128
    batch_size: int = 8
    note: str = ""
    debias: str = "none"
    fit_on: str = "both"
    fit_scenes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model kind {self.kind!r} is not known; expected one of {list(MODEL_KINDS)}")
        if self.kind == "llm":
            if not self.model:
                raise ConfigError(f"row {self.label!r}: an llm row needs a model name or folder")
            if self.mode not in MODES:
                raise ConfigError(f"row {self.label!r}: mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"row {self.label!r}: limit must be >= 1 or None, got {self.limit}")

    @property
    def key(self) -> str:
        """Identity of this row's outputs (anything that changes them changes the key)."""
        ignore = {"label", "limit", "role", "note", "batch_size"}
        if self.mode != "decision":  # thought settings do not change a direct-mode answer
            ignore |= {"n_thoughts", "max_thought_tokens"}
        if self.debias == "none":  # rows cached before debiasing existed keep their key
            ignore |= {"debias"}
        if self.fit_on == "both":
            ignore |= {"fit_on"}
        if not self.fit_scenes:
            ignore |= {"fit_scenes"}
        fields = {k: v for k, v in asdict(self).items() if k not in ignore}
        if self.kind == "llm" and self.model:
            fields["model_stamp"] = model_stamp(self.model)
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
        return f"{slug(self.label)}-{digest}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_stamp(model: str) -> str:
    """A local folder's weights change when it is retrained: fold their mtime and size in."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    parts = []
    for f in sorted(path.glob("*.safetensors")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return model + "|" + ",".join(parts)


def slug(text: str) -> str:
    """File-name-safe lower-case version of ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


@dataclass
class ModelRun:
    """A model's answers on one variant.

    Attributes:
        spec: the row.
        variant: scene variant.
        scene_ids: evaluated scenes, in scene order.
        probs: ``(n, K)`` choice probabilities.
        item_pos: ``(n,)`` the real item's position.
        seconds: model time spent on these scenes (summed over runs when resumed).
        rationales: decision mode: the first thought per scene (may be empty).
        scores: likelihood mode: ``(n, K)`` option scores before the temperature (None otherwise).
        likelihood: likelihood mode: ``(n, 3, K)`` context / neutral log-likelihoods and token
            counts of the options (None otherwise).
        resumed: scenes read back from the cache instead of computed now.
        planned: scenes the row was meant to answer.
        complete: False when a time budget stopped the row before ``planned``.
    """

    spec: ModelSpec
    variant: str
    scene_ids: list[str]
    probs: np.ndarray
    item_pos: np.ndarray
    seconds: float
    rationales: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None
    likelihood: np.ndarray | None = None
    resumed: int = 0
    planned: int = 0
    complete: bool = True

    @property
    def scenes_per_second(self) -> float:
        return len(self.scene_ids) / self.seconds if self.seconds > 0 else float("inf")

    def __repr__(self) -> str:
        return (f"ModelRun({self.spec.label!r}, {self.variant}, n={len(self.scene_ids)}, "
                f"{self.scenes_per_second:.2f} scenes/s, resumed={self.resumed})")


def build_choice_model(spec: ModelSpec, ds: RawDataset | None = None, fit_rows: np.ndarray | None = None,
                       seed: int = 0, backend_kwargs: Mapping[str, Any] | None = None,
                       fit_scenes: Sequence[Mapping[str, Any]] | None = None, embedder: str | None = "minilm",
                       project_path: str | os.PathLike | None = None) -> Any:
    """Make the choice model a row names.

    Args:
        spec: the row.
        ds: the dataset (log-only models read counts / fit embeddings from it).
        fit_rows: interaction rows the collaborative embedding is fitted on (the train users'
            rows: the eval users' future must not leak into it).
        seed: decision-mode sampling seed.
        backend_kwargs: extra arguments of the LLM backend (``dtype`` ...).
        fit_scenes: train-user scenes the ``mnl`` / ``content`` / ``cooccurrence`` rows are fitted on.
        embedder, project_path: text embedder of their content feature and its cache folder.
    """
    if spec.kind == "llm":
        options = SimOptions(mode=spec.mode, n_thoughts=spec.n_thoughts, max_thought_tokens=spec.max_thought_tokens,
                             batch_size=spec.batch_size, seed=seed, truncate_history=True, debias=spec.debias)
        return make_choice_model(spec.model, options=options, backend_kwargs=backend_kwargs)
    if spec.kind == "pool":
        raise ConfigError(f"row {spec.label!r} is derived from other rows' answers; it has no model to build")
    if ds is None:
        raise ConfigError(f"row {spec.label!r} ({spec.kind}) needs the raw dataset")
    if spec.kind in ("mnl", "content", "cooccurrence"):
        if not fit_scenes:
            raise ConfigError(f"row {spec.label!r} ({spec.kind}) is fitted on train-user scenes: pass fit_scenes")
        options: dict[str, Any] = {"fit_scenes": list(fit_scenes), "embedder": embedder}
        if spec.kind in ("content", "cooccurrence"):  # one feature: a scorer with a fitted temperature
            options["features"] = (spec.kind,)
        return make_choice_model("mnl", ds, options=options, fit_rows=fit_rows, seed=seed, project_path=project_path)
    return make_choice_model(spec.kind, ds, fit_rows=fit_rows, seed=seed)


def run_model(
    spec: ModelSpec,
    scenes_by_variant: Mapping[str, Sequence[Mapping[str, Any]]],
    make_model: Callable[[], Any],
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = 16,
    progress: Any = None,
    budget_seconds: float | None = None,
) -> dict[str, ModelRun]:
    """Evaluate one row on every variant (resuming from ``cache_dir`` when possible).

    Scene ``i`` of each variant is scored next to scene ``i`` of the others: the variants
    render the same interaction with different options, so an LLM backend with prefix
    sharing computes their common profile + history prefix once. A chunk's time is split
    evenly over its scenes.

    Args:
        spec: the row (``spec.limit`` cuts each variant's scenes).
        scenes_by_variant: variant name -> its scenes, in order.
        make_model: builds the choice model; called only if some scene is not cached.
        cache_dir: folder of per-row JSONL caches (``<cache_dir>/<variant>/<row key>.jsonl``);
            None: no cache.
        chunk_size: scenes per ``choice_probs`` call (and per cache flush).
        progress: a ``rich.progress.Progress`` to add a task to, or None.
        budget_seconds: stop computing new answers after this much time; the run then holds
            the scenes answered so far (a prefix of each variant's order) and ``complete`` is
            False. None: no limit.

    Returns:
        variant -> :class:`ModelRun`.

    Raises:
        DataError: the model returned a distribution of the wrong length or not summing to 1.
    """
    variants = list(scenes_by_variant)
    chosen = {v: list(scenes_by_variant[v][: spec.limit] if spec.limit else scenes_by_variant[v]) for v in variants}
    cached: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in variants}
    paths: dict[str, Path | None] = {v: None for v in variants}
    for v in variants:
        if cache_dir is not None:
            paths[v] = Path(cache_dir) / v / f"{spec.key}.jsonl"
            if paths[v].exists():
                JsonlAppender(paths[v]).close()  # cuts a torn last line left by a crash
                cached[v] = {r["scene_id"]: r for _, r in iter_jsonl(paths[v])}
    longest = max((len(x) for x in chosen.values()), default=0)
    todo = [(v, chosen[v][i]) for i in range(longest) for v in variants
            if i < len(chosen[v]) and str(chosen[v][i]["scene_id"]) not in cached[v]]
    total = sum(len(x) for x in chosen.values())
    resumed = {v: len(chosen[v]) - sum(1 for w, _ in todo if w == v) for v in variants}
    task = None
    if progress is not None:
        task = progress.add_task(spec.label, total=total, completed=total - len(todo))
    complete = True
    if todo:
        appenders: dict[str, JsonlAppender] = {}

        def build(_group: None) -> Any:
            model = make_model()
            appenders.update({v: JsonlAppender(p) for v, p in paths.items() if p is not None})
            return model

        def keep(batch: list[ScoredScene]) -> None:
            records: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for scored in batch:
                variant = todo[scored.index][0]
                record = {"scene_id": str(scored.scene["scene_id"]), "probs": scored.probs.tolist(),
                          "seconds": scored.seconds, "rationale": scored.rationales[0] if scored.rationales else ""}
                if scored.scores is not None:
                    record["scores"] = np.asarray(scored.scores, dtype=np.float64).tolist()
                if scored.likelihood is not None:
                    record["likelihood"] = np.asarray(scored.likelihood, dtype=np.float64).tolist()
                cached[variant][record["scene_id"]] = record
                records[variant].append(record)
            for variant, recs in records.items():
                if recs and variant in appenders:
                    appenders[variant].write(recs)
            if task is not None:
                progress.update(task, advance=len(batch))

        try:
            run = evaluate([scene for _, scene in todo], build, repeats=None,
                           batch_size=chunk_size, targets=[int(scene["item_pos"]) for _, scene in todo],
                           budget_seconds=budget_seconds, on_batch=keep, label=f"row {spec.label!r}")
            complete = run.complete
        finally:
            for appender in appenders.values():
                appender.close()
    out: dict[str, ModelRun] = {}
    for v in variants:
        got = cached[v]
        answered = [s for s in chosen[v] if str(s["scene_id"]) in got]
        ids = [str(s["scene_id"]) for s in answered]
        out[v] = ModelRun(
            spec=spec, variant=v, scene_ids=ids,
            # a budget can end a run before a variant's first answer: an empty (0, 0), not a crash
            probs=(np.array([got[i]["probs"] for i in ids], dtype=np.float64).reshape(len(ids), -1)
                   if ids else np.empty((0, 0))),
            item_pos=np.array([int(s["item_pos"]) for s in answered], dtype=np.int64),
            seconds=float(sum(got[i]["seconds"] for i in ids)),
            rationales=[got[i].get("rationale", "") for i in ids], resumed=resumed[v],
            scores=(np.array([got[i]["scores"] for i in ids], dtype=np.float64).reshape(len(ids), -1)
                    if ids and all("scores" in got[i] for i in ids) else None),
            likelihood=(np.array([got[i]["likelihood"] for i in ids], dtype=np.float64).reshape(len(ids), 3, -1)
                        if ids and all("likelihood" in got[i] for i in ids) else None),
            planned=len(chosen[v]), complete=complete and len(answered) == len(chosen[v]),
        )
    return out
