"""The LLM user simulator: prompts, model registry, backends and :class:`UserSimulator`.

>>> from usermirrorer.sim import UserSimulator
>>> sim = UserSimulator("smollm2-135m")            # doctest: +SKIP
>>> sim.choice_probs(scene).probs                  # doctest: +SKIP

Importing this package does not import torch or transformers; backends load them when built.
"""

from usermirrorer.sim.models import resolve_model
from usermirrorer.sim.prompts import (
    DEFAULT_PROMPTS,
    LETTERS,
    MAX_OPTIONS,
    Prompt,
    PromptSet,
    build_messages,
    build_prompt,
    load_prompts,
    scene_id,
)
from usermirrorer.sim.simulator import ChoiceResult, SimOptions, UserSimulator

__all__ = [
    "UserSimulator",
    "SimOptions",
    "ChoiceResult",
    "PromptSet",
    "Prompt",
    "DEFAULT_PROMPTS",
    "LETTERS",
    "MAX_OPTIONS",
    "load_prompts",
    "build_messages",
    "build_prompt",
    "scene_id",
    "resolve_model",
]
