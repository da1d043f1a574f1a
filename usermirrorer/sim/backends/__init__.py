"""LLM backends behind one interface (:class:`~usermirrorer.sim.backends.base.Backend`).

Backends are resolved by name and imported only when asked for, so ``import usermirrorer``
never pulls vLLM or an HTTP client:

====================  ===================================================================
name                  class
====================  ===================================================================
``"transformers"``    :class:`usermirrorer.sim.backends.transformers_backend.TransformersBackend` (CPU/GPU)
``"vllm"``            ``usermirrorer.sim.backends.vllm_backend.VLLMBackend`` (GPU)
``"openai"``          ``usermirrorer.sim.backends.openai_backend.OpenAIBackend`` (servers)
====================  ===================================================================
"""

from __future__ import annotations

import importlib
from typing import Any

from usermirrorer.errors import ConfigError, MissingDependency
from usermirrorer.sim.backends.base import Backend, renormalise_logprobs
from usermirrorer.sim.models import resolve_model

__all__ = ["Backend", "BACKENDS", "make_backend", "renormalise_logprobs"]

# name -> ("module:Class", whether the model name goes through the local model registry)
BACKENDS: dict[str, tuple[str, bool]] = {
    "transformers": ("usermirrorer.sim.backends.transformers_backend:TransformersBackend", True),
    "vllm": ("usermirrorer.sim.backends.vllm_backend:VLLMBackend", True),
    # An OpenAI-compatible server names its models itself: pass the name through untouched.
    "openai": ("usermirrorer.sim.backends.openai_backend:OpenAIBackend", False),
}
_ALIASES = {"hf": "transformers", "huggingface": "transformers"}


def make_backend(name: str, model: str, **kwargs: Any) -> Backend:
    """Build the backend called ``name`` for ``model``.

    Args:
        name: ``"transformers"`` (alias ``"hf"``), ``"vllm"`` or ``"openai"``.
        model: a model registry name (see :func:`usermirrorer.sim.models.resolve_model`), a
            local folder or a hub id; for ``"openai"`` the server's model name.
        **kwargs: passed to the backend class.

    Raises:
        ConfigError: unknown backend name.
        MissingDependency: the backend's library is not installed (names the pip extra).
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not known; expected one of {sorted(BACKENDS)}")
    target, resolves_model = BACKENDS[key]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"backend {key!r} is not part of this installation (module {module_name} missing)") from None
        if exc.name and not exc.name.startswith("usermirrorer"):
            raise MissingDependency(exc.name.split(".")[0], key) from exc
        raise
    if resolves_model:
        model = resolve_model(model)
    return getattr(module, class_name)(model, **kwargs)
