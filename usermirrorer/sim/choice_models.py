"""Choice models — anything that answers "which option does the user pick?" — and the one factory.

A *choice model* has ``choice_probs(scenes, **kwargs) -> list[ChoiceResult]``: the LLM
:class:`~usermirrorer.sim.UserSimulator`, or a non-LLM model of :mod:`usermirrorer.sim.baselines`
read from the log alone. The environment, the eval command, the fidelity benchmark and the
reproduce pipeline all build theirs with :func:`make_choice_model`:

>>> make_choice_model("popularity", ds)                                  # doctest: +SKIP
PopularityChoiceModel(dataset='ml-100k', temperature=1.0, skip_quantile=0.9)
>>> make_choice_model("smollm2-135m", options=SimOptions(mode="decision"))  # doctest: +SKIP
UserSimulator(model='smollm2-135m', backend=..., mode='decision')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim.baselines import CHOICE_MODELS, make_baseline
from usermirrorer.sim.mnl import MultinomialLogitChoiceModel, fitted_mnl
from usermirrorer.sim.models import check_model_name
from usermirrorer.sim.outside_option import QuantileOutsideOption
from usermirrorer.sim.pool import LogLinearPool
from usermirrorer.sim.prompts import PromptSet
from usermirrorer.sim.saved_pool import PoolMember, SavedPool, is_pool_file
from usermirrorer.sim.simulator import SimOptions, UserSimulator

__all__ = [
    "ChoiceModel",
    "BASELINE_CHOICE_MODELS",
    "NON_LLM_CHOICE_MODELS",
    "make_choice_model",
    "as_sim_options",
    "load_pool",
    "pool_member_model",
]

#: The non-LLM models the environment and the eval command accept by name (``mnl`` and
#: ``cooccurrence``, the MNL on its co-occurrence feature alone, are fitted on sampled train
#: scenes when built).
BASELINE_CHOICE_MODELS: tuple[str, ...] = ("random", "popularity", "collaborative", "cooccurrence", "mnl")
#: Every non-LLM model :func:`make_choice_model` builds by name (the fidelity table adds
#: ``most-popular``).
NON_LLM_CHOICE_MODELS: tuple[str, ...] = (*CHOICE_MODELS, "cooccurrence", "mnl")


@runtime_checkable
class ChoiceModel(Protocol):
    """What the environment needs from a simulator: ``UserSimulator`` or a non-LLM model."""

    def choice_probs(self, scenes: list[dict[str, Any]], **kwargs: Any) -> list[Any]: ...


def as_sim_options(options: SimOptions | Mapping[str, Any] | None, what: str = "options") -> SimOptions:
    """``options`` as a :class:`SimOptions` (None: the defaults; a dict: its fields).

    Raises:
        ConfigError: anything else (``what`` names the argument in the message).
    """
    if options is None:
        return SimOptions()
    if isinstance(options, Mapping):
        return SimOptions(**options)
    if is_dataclass(options):
        return options
    raise ConfigError(f"{what} must be a SimOptions or a dict, got {type(options).__name__}")


def make_choice_model(
    model: str | ChoiceModel,
    ds: RawDataset | None = None,
    *,
    backend: str = "transformers",
    options: SimOptions | Mapping[str, Any] | None = None,
    prompts: PromptSet | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
    project_path: str | os.PathLike | None = None,
    fit_rows: np.ndarray | None = None,
    seed: int = 0,
) -> ChoiceModel:
    """The choice model ``model`` names (or ``model`` itself when it is one already).

    Args:
        model: an object with ``choice_probs`` (returned as is); a pool file written by
            ``usermirrorer fit-pool`` (a ``.json`` path: :func:`load_pool`); a non-LLM name
            (``"random"``, ``"popularity"``, ``"most-popular"``, ``"collaborative"``:
            :mod:`usermirrorer.sim.baselines`; ``"mnl"``: :mod:`usermirrorer.sim.mnl`;
            ``"cooccurrence"``: that MNL on its item co-occurrence feature alone); otherwise an
            LLM for :class:`UserSimulator`
            (``"smollm2-135m"``, ``"tiny-random"``, a local folder, a hub id).
        ds: the dataset a non-LLM model reads its counts from / fits its embedding on.
        backend: LLM backend name (``transformers``, ``vllm``, ``openai``).
        options: for an LLM, a :class:`SimOptions` or a dict of its fields; for a non-LLM
            model, its keyword arguments (``temperature``, ``skip_quantile``, collaborative
            ``dim`` / ``embedding``).
        prompts: LLM prompt texts (default: the built-in ones).
        backend_kwargs: passed to the LLM backend constructor (``dtype``, ``num_threads`` ...).
        project_path: collaborative: cache its embedding under ``<project>/embeddings/``.
        fit_rows: collaborative: the interaction rows the embedding is fitted on (None: all).
        seed: collaborative: randomized-SVD seed (an LLM's sampling seed is ``options.seed``).

    Raises:
        ConfigError: ``model`` is neither a name nor a choice model, a misspelt name ("did you
            mean 'popularity'?", raised before any hub lookup), a non-LLM model without ``ds``,
            or an option the model does not take.
    """
    if not isinstance(model, str):
        if not callable(getattr(model, "choice_probs", None)):
            raise ConfigError(
                f"model must be a name or an object with choice_probs(scenes), got {type(model).__name__}"
            )
        return model
    if is_pool_file(model):
        if ds is None:
            raise ConfigError(f"the pool {model} has log-only members that read the interaction log: pass the dataset")
        return load_pool(model, ds, backend=backend, backend_kwargs=backend_kwargs, project_path=project_path)
    if model in NON_LLM_CHOICE_MODELS:
        if ds is None:
            raise ConfigError(f"choice model {model!r} reads the interaction log: pass the dataset")
        kwargs = dict(options or {})
        if model == "cooccurrence":
            kwargs["features"] = ("cooccurrence",)
        if model in ("mnl", "cooccurrence"):  # options may carry fit_scenes, embedder, features, l2
            return fitted_mnl(ds, fit_rows=fit_rows, seed=seed, project_path=project_path, **kwargs)
        if model == "collaborative":
            kwargs = {"fit_rows": fit_rows, "seed": seed, "project_path": project_path, **kwargs}
        return make_baseline(model, ds, **kwargs)
    if backend != "openai":  # an OpenAI-compatible server names its models as it likes
        check_model_name(model, NON_LLM_CHOICE_MODELS)
    return UserSimulator(model, backend=backend, options=as_sim_options(options), prompts=prompts,
                         **dict(backend_kwargs or {}))


def pool_member_model(member: PoolMember, ds: RawDataset, train_rows: np.ndarray | None, seed: int = 0, *,
                      model_dir: str | None = None, backend: str = "transformers",
                      backend_kwargs: Mapping[str, Any] | None = None,
                      project_path: str | os.PathLike | None = None) -> ChoiceModel:
    """The choice model a saved pool's member describes (:mod:`usermirrorer.sim.saved_pool`).

    Args:
        member: the member.
        ds: the dataset.
        train_rows: interaction rows its collaborative embeddings are fitted on (the pool's
            train users' rows).
        seed: the embeddings' seed.
        model_dir: an ``llm`` member's checkpoint (default: ``member.model``).
        backend, backend_kwargs: how an ``llm`` member runs.
        project_path: where embeddings are cached.
    """
    if member.kind == "llm":
        unknown = sorted(set(member.options) - {f.name for f in fields(SimOptions)})
        if unknown:
            raise DataError(f"pool member {member.name!r}: options {unknown} are not SimOptions fields "
                            f"(expected some of {[f.name for f in fields(SimOptions)]})")
        simulator = make_choice_model(model_dir or member.model, backend=backend, options=dict(member.options),
                                      backend_kwargs=backend_kwargs)
        if simulator.options.mode != "likelihood":
            return simulator
        # "none of these" scored as a text is almost never likely; it scores at the 0.9 quantile
        # of catalog items instead, the rule of the log-only members beside it
        return QuantileOutsideOption(simulator, ds)
    if member.kind == "mnl":
        options = {k: v for k, v in member.options.items() if k in ("embedder", "l2", "skip_quantile")}
        model = MultinomialLogitChoiceModel(ds, fit_rows=train_rows, project_path=project_path, seed=seed,
                                            features=tuple((member.state or {}).get("features", ())), **options)
        return model.set_fitted_state(member.state or {})
    kwargs: dict[str, Any] = {"fit_rows": train_rows, "seed": seed} if member.kind == "collaborative" else {}
    return make_choice_model(member.kind, ds, project_path=project_path, **kwargs)


def load_pool(path: str | os.PathLike, ds: RawDataset, *, backend: str = "transformers",
              backend_kwargs: Mapping[str, Any] | None = None,
              project_path: str | os.PathLike | None = None) -> LogLinearPool:
    """The fitted :class:`~usermirrorer.sim.pool.LogLinearPool` a pool file describes, its
    members rebuilt on ``ds`` (an LLM member loads its checkpoint; the others take seconds).

    Raises:
        DataError: a malformed file, a pool fitted on another dataset, train users absent from
            ``ds``, an MNL state that does not fit its features.
    """
    saved = SavedPool.read(path)
    if saved.dataset != ds.name:
        raise DataError(f"{path}: the pool was fitted on {saved.dataset!r}, not {ds.name!r}; load it with that "
                        "dataset or fit one on this one with `usermirrorer fit-pool`")
    train_rows = None
    if saved.train_users:
        missing = [u for u in saved.train_users if u not in ds.user_index]
        if missing:
            raise DataError(f"{path}: field 'train_users': {len(missing)} of {len(saved.train_users)} users are not "
                            f"in {ds.name} (first: {missing[0]!r}); was the dataset converted differently?")
        train_rows = ds.rows_of_users(saved.train_users)
    members = [pool_member_model(m, ds, train_rows, saved.seed, model_dir=saved.member_model(m), backend=backend,
                                 backend_kwargs=backend_kwargs, project_path=project_path)
               for m in saved.members]
    pool = LogLinearPool(members, weights=saved.weights, names=[m.name for m in saved.members], gate=saved.gate)
    pool.fit_report = dict(saved.fit)
    pool.source = str(path)
    return pool
