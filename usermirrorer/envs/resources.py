"""Loading the heavy things an environment needs — the dataset and the choice model — once.

``gymnasium.make`` is called many times in one process (``check_env`` re-makes the env per
render mode, sync vector envs make one env per slot), and loading an LLM or re-reading a log
each time would multiply memory and start-up time. Both loaders keep a small cache keyed by
what determines the result (file path and modification times; model name, backend and options),
so equal requests share one object. Pass objects instead of names to bypass the caches.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from usermirrorer.data_pipeline.raw import RawDataset, load_raws, raw_paths
from usermirrorer.errors import ConfigError
from usermirrorer.sim.choice_models import (  # ChoiceModel, BASELINE_CHOICE_MODELS: re-exported
    BASELINE_CHOICE_MODELS,
    ChoiceModel,
    as_sim_options,
    make_choice_model,
)
from usermirrorer.sim.saved_pool import is_pool_file

__all__ = [
    "ChoiceModel",
    "BASELINE_CHOICE_MODELS",
    "load_dataset",
    "load_choice_model",
    "clear_caches",
]

_MAX_MODELS = 2
_MAX_DATASETS = 4

_datasets: OrderedDict[tuple, RawDataset] = OrderedDict()
_models: OrderedDict[tuple, Any] = OrderedDict()
# Keyed by id(dataset); the dataset is stored with the model so the id cannot be reused.
_baselines: OrderedDict[tuple, tuple[RawDataset, Any]] = OrderedDict()


def _remember(cache: OrderedDict, key: tuple, value: Any, limit: int) -> Any:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def load_dataset(dataset: str | RawDataset, project_path: str | os.PathLike = ".") -> RawDataset:
    """The dataset named ``dataset`` under ``project_path/raws`` (cached), or ``dataset`` itself.

    Raises:
        DataError: the raw files are missing or invalid (the message says how to create them).
    """
    if isinstance(dataset, RawDataset):
        return dataset
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"dataset must be a dataset name or a RawDataset, got {dataset!r}")
    paths = raw_paths(project_path, dataset)
    stamps = tuple(p.stat().st_mtime_ns if p.exists() else None for p in paths)
    key = (str(Path(project_path).resolve()), dataset, stamps)
    if key in _datasets:
        _datasets.move_to_end(key)
        return _datasets[key]
    return _remember(_datasets, key, load_raws(project_path, dataset), _MAX_DATASETS)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def load_choice_model(
    model: str | ChoiceModel,
    ds: RawDataset,
    *,
    backend: str = "transformers",
    mode: str | None = None,
    n_thoughts: int | None = None,
    sim_options: Any = None,
    backend_kwargs: dict[str, Any] | None = None,
    project_path: str | os.PathLike | None = None,
) -> ChoiceModel:
    """Build (or reuse) the choice model an environment queries
    (:func:`usermirrorer.sim.choice_models.make_choice_model`, cached).

    Args:
        model: an object with ``choice_probs`` (used as is); a pool file written by
            ``usermirrorer fit-pool`` (its members keep the modes they were fitted in: ``mode``
            and ``sim_options`` do not apply); a baseline name
            (``"random"``, ``"popularity"``, ``"collaborative"``: :mod:`usermirrorer.sim.baselines`);
            otherwise an LLM name for :class:`usermirrorer.sim.UserSimulator`
            (``"smollm2-135m"``, ``"tiny-random"``, a local folder, a hub id).
        ds: the dataset (baselines are fitted on it).
        backend: LLM backend name (``transformers``, ``vllm``, ``openai``).
        mode: ``"direct"`` or ``"decision"``; overrides ``sim_options.mode``.
        n_thoughts: decision-mode thoughts per scene; overrides ``sim_options.n_thoughts``.
        sim_options: a ``SimOptions`` or a dict of its fields.
        backend_kwargs: passed to the backend constructor.
        project_path: the dataset's project folder; the collaborative baseline caches its
            embedding under ``<project>/embeddings/``.
    """
    if not isinstance(model, str):
        return make_choice_model(model)
    if is_pool_file(model):  # usermirrorer fit-pool's file: members rebuilt on this dataset
        key = ("pool", str(Path(model).resolve()), id(ds), backend, _freeze(dict(backend_kwargs or {})))
        if key not in _models:
            built = make_choice_model(model, ds, backend=backend, backend_kwargs=backend_kwargs,
                                      project_path=project_path)
            return _remember(_models, key, built, _MAX_MODELS)
        _models.move_to_end(key)
        return _models[key]
    if model in BASELINE_CHOICE_MODELS:
        key = (model, id(ds))
        if key not in _baselines:
            built = make_choice_model(model, ds, project_path=project_path)
            _remember(_baselines, key, (ds, built), _MAX_DATASETS * 3)
        return _baselines[key][1]

    options = as_sim_options(sim_options, "sim_options")
    changes = {}
    if mode is not None:
        changes["mode"] = mode
    if n_thoughts is not None:
        changes["n_thoughts"] = n_thoughts
    options = replace(options, **changes)
    kwargs = dict(backend_kwargs or {})
    key = ("llm", model, backend, _freeze(asdict(options)), _freeze(kwargs))
    if key in _models:
        _models.move_to_end(key)
        return _models[key]
    simulator = make_choice_model(model, backend=backend, options=options, backend_kwargs=kwargs)
    return _remember(_models, key, simulator, _MAX_MODELS)


def clear_caches() -> None:
    """Forget cached datasets and models (frees their memory once nothing else holds them)."""
    _datasets.clear()
    _models.clear()
    _baselines.clear()
