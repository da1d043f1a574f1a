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
from dataclasses import is_dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.errors import ConfigError
from usermirrorer.sim.baselines import CHOICE_MODELS, make_baseline
from usermirrorer.sim.mnl import fitted_mnl
from usermirrorer.sim.models import check_model_name
from usermirrorer.sim.prompts import PromptSet
from usermirrorer.sim.simulator import SimOptions, UserSimulator

__all__ = [
    "ChoiceModel",
    "BASELINE_CHOICE_MODELS",
    "NON_LLM_CHOICE_MODELS",
    "make_choice_model",
    "as_sim_options",
]

#: The non-LLM models the environment and the eval command accept by name (``mnl`` is fitted
#: on sampled train scenes when built).
BASELINE_CHOICE_MODELS: tuple[str, ...] = ("random", "popularity", "collaborative", "mnl")
#: Every non-LLM model :func:`make_choice_model` builds by name (the fidelity table adds
#: ``most-popular``).
NON_LLM_CHOICE_MODELS: tuple[str, ...] = (*CHOICE_MODELS, "mnl")


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
        model: an object with ``choice_probs`` (returned as is); a non-LLM name
            (``"random"``, ``"popularity"``, ``"most-popular"``, ``"collaborative"``:
            :mod:`usermirrorer.sim.baselines`; ``"mnl"``: :mod:`usermirrorer.sim.mnl`); otherwise an LLM for :class:`UserSimulator`
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
    if model in NON_LLM_CHOICE_MODELS:
        if ds is None:
            raise ConfigError(f"choice model {model!r} reads the interaction log: pass the dataset")
        kwargs = dict(options or {})
        if model == "mnl":  # options may carry fit_scenes, embedder, features, l2
            return fitted_mnl(ds, fit_rows=fit_rows, seed=seed, project_path=project_path, **kwargs)
        if model == "collaborative":
            kwargs = {"fit_rows": fit_rows, "seed": seed, "project_path": project_path, **kwargs}
        return make_baseline(model, ds, **kwargs)
    if backend != "openai":  # an OpenAI-compatible server names its models as it likes
        check_model_name(model, NON_LLM_CHOICE_MODELS)
    return UserSimulator(model, backend=backend, options=as_sim_options(options), prompts=prompts,
                         **dict(backend_kwargs or {}))
