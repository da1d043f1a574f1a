"""The LLM user simulator: prompts, model registry, backends, :class:`UserSimulator`, the choice
models (:func:`make_choice_model`, the one factory) and their evaluation (:func:`evaluate`).

>>> from usermirrorer.sim import UserSimulator, example_scenes
>>> scene = example_scenes("ml-100k", n=1)[0]      # doctest: +SKIP
>>> sim = UserSimulator("smollm2-135m")            # doctest: +SKIP
>>> sim.choice_probs(scene).probs                  # doctest: +SKIP

Importing this package does not import torch or transformers; backends load them when built.
"""

from usermirrorer.sim.choice_models import BASELINE_CHOICE_MODELS, ChoiceModel, load_pool, make_choice_model
from usermirrorer.sim.evaluation import Evaluation, ScoredScene, evaluate, evaluate_file
from usermirrorer.sim.examples import example_scenes
from usermirrorer.sim.models import resolve_model
from usermirrorer.sim.pool import LogLinearPool
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
from usermirrorer.sim.saved_pool import SavedPool
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
    "ChoiceModel",
    "BASELINE_CHOICE_MODELS",
    "make_choice_model",
    "LogLinearPool",
    "SavedPool",
    "load_pool",
    "evaluate",
    "evaluate_file",
    "Evaluation",
    "ScoredScene",
    "example_scenes",
]
