"""The user simulator: scenes in, choice distributions (and rationales) out (DESIGN.md §5).

>>> sim = UserSimulator("smollm2-135m")                      # doctest: +SKIP
>>> result = sim.choice_probs(scene)                          # doctest: +SKIP
>>> result.probs                                              # doctest: +SKIP
array([0.31, 0.12, 0.27, 0.18, 0.12])
>>> choice = result.sample(np.random.default_rng(0))          # doctest: +SKIP

The simulator never samples the user's choice itself: it returns the distribution and the
caller draws from it with its own RNG (an env uses ``self.np_random``), so rollouts replay.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usermirrorer.errors import BackendError, ConfigError
from usermirrorer.sim.backends import Backend, make_backend
from usermirrorer.sim.prompts import (
    DEFAULT_PROMPTS,
    MODES,
    PromptSet,
    build_prompt,
    clean_thought,
    option_letters,
    scene_id,
    scene_text,
)

__all__ = ["SimOptions", "ChoiceResult", "UserSimulator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimOptions:
    """How the simulator queries the model.

    Attributes:
        mode: ``"direct"`` (letter right away) or ``"decision"`` (thought, then letter).
        n_thoughts: decision mode: thoughts sampled per scene; probabilities are their mean.
        temperature: decision mode: sampling temperature of thoughts (0 = greedy).
        top_p: decision mode: nucleus sampling mass.
        max_thought_tokens: decision mode: longest thought, in tokens.
        batch_size: scenes per backend call.
        seed: default seed of thought sampling.
        truncate_history: drop the oldest history lines of a scene whose prompt does not fit
            the model's context (logged), instead of raising :class:`BackendError`.
    """

    mode: str = "direct"
    n_thoughts: int = 1
    temperature: float = 1.0
    top_p: float = 0.9
    max_thought_tokens: int = 256
    batch_size: int = 8
    seed: int = 0
    truncate_history: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"SimOptions.mode={self.mode!r}; expected one of {list(MODES)}")
        for name in ("n_thoughts", "batch_size", "max_thought_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"SimOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ConfigError(f"SimOptions.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"SimOptions.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class ChoiceResult:
    """The simulated user's answer to one scene.

    Attributes:
        probs: ``(K,)`` float64 choice probabilities in the order of ``text.action_list``.
        rationales: decision mode: one thought per sample; ``[]`` in direct mode.
        thought_probs: decision mode: ``(n_thoughts, K)``, one distribution per thought
            (``probs`` is their mean); ``None`` in direct mode.
    """

    probs: np.ndarray
    rationales: list[str] = field(default_factory=list)
    thought_probs: np.ndarray | None = None

    def sample(self, rng: np.random.Generator) -> int:
        """Draw an option index from ``probs`` with the caller's generator."""
        return int(rng.choice(len(self.probs), p=self.probs))

    @property
    def top(self) -> int:
        """Index of the most likely option."""
        return int(np.argmax(self.probs))

    def __repr__(self) -> str:
        probs = np.array2string(self.probs, precision=3, separator=", ")
        extra = f", rationales={len(self.rationales)}" if self.rationales else ""
        return f"ChoiceResult(probs={probs}{extra})"


class UserSimulator:
    """An LLM that plays a user choosing from an exposure list.

    Args:
        model: registry name (``"smollm2-135m"``, ``"tiny-random"``, ``"usermirrorer-llama-3b"``,
            ``"usermirrorer-qwen-3b"``), local folder or hub id.
        backend: ``"transformers"``, ``"vllm"``, ``"openai"``, or a ready object with
            ``letter_logprobs`` and ``generate`` (e.g. a fake backend in tests).
        options: :class:`SimOptions` (defaults: direct mode, batch 8).
        prompts: :class:`~usermirrorer.sim.prompts.PromptSet` (defaults: our prompts; use
            :func:`~usermirrorer.sim.prompts.load_prompts` for a checkpoint's own).
        **backend_kwargs: passed to the backend (``dtype``, ``device``, ``share_prefix`` ...).
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        backend: str | Backend = "transformers",
        options: SimOptions | None = None,
        prompts: PromptSet | None = None,
        **backend_kwargs: Any,
    ):
        self.options = options or SimOptions()
        self.prompts = prompts or DEFAULT_PROMPTS
        self.model = model
        if isinstance(backend, str):
            self.backend = make_backend(backend, model, **backend_kwargs)
        else:
            if backend_kwargs:
                raise ConfigError(f"backend_kwargs {sorted(backend_kwargs)} given with a ready backend object; pass them to it")
            for method in ("letter_logprobs", "generate"):
                if not callable(getattr(backend, method, None)):
                    raise ConfigError(f"backend object {backend!r} has no {method}() method (see sim/backends/base.py)")
            self.backend = backend
        self._warned_no_lengths = False

    def __deepcopy__(self, memo: dict) -> UserSimulator:
        # A loaded model is shared, not copied: gymnasium's env checker and spec re-creation
        # deep-copy env kwargs, and a simulator holds torch modules and tokenizers.
        return self

    def __repr__(self) -> str:
        return f"UserSimulator(model={self.model!r}, backend={self.backend!r}, mode={self.options.mode!r})"

    # ------------------------------------------------------------------ public API
    def choice_probs(
        self,
        scenes: dict | list[dict],
        mode: str | None = None,
        n_thoughts: int | None = None,
        seed: int | None = None,
    ) -> ChoiceResult | list[ChoiceResult]:
        """Choice distribution of the simulated user for each scene.

        Args:
            scenes: one scene dict or a list of them (DESIGN.md §2 records; at least
                ``text.profile``, ``text.history``, ``text.action_list``).
            mode: ``"direct"`` or ``"decision"``; default ``options.mode``.
            n_thoughts: decision mode: thoughts per scene; default ``options.n_thoughts``.
            seed: decision mode: sampling seed; default ``options.seed``.

        Returns:
            One :class:`ChoiceResult` for one scene, else a list in input order.

        Raises:
            ConfigError: more than 26 options, unknown mode.
            DataError: a malformed scene.
            BackendError: a prompt that does not fit the model (see ``truncate_history``).
        """
        single = isinstance(scenes, dict)
        batch = [scenes] if single else list(scenes)
        mode = mode or self.options.mode
        if mode not in MODES:
            raise ConfigError(f"mode {mode!r} is not known; expected one of {list(MODES)}")
        if mode == "direct":
            results = self._direct(batch)
        else:
            n = int(n_thoughts or self.options.n_thoughts)
            thoughts = self.thoughts(batch, n, seed)
            per_scene = self.score_thoughts(batch, thoughts)
            results = [
                ChoiceResult(probs=_normalise(tp.mean(axis=0)), rationales=th, thought_probs=tp)
                for th, tp in zip(thoughts, per_scene)
            ]
        return results[0] if single else results

    def thoughts(self, scenes: list[dict], n: int, seed: int | None = None) -> list[list[str]]:
        """Sample ``n`` decision-mode thoughts per scene.

        Each thought is the text the model wrote in answer to the decision prompt, starting
        with the prefix ``Thought:\\nStimulus:`` and cut before ``Behavior: [`` (generation stops
        there, or at ``max_thought_tokens``).
        """
        if n < 1:
            raise ConfigError(f"n (thoughts per scene) must be >= 1, got {n}")
        seed = self.options.seed if seed is None else int(seed)
        scenes = self._prepare(scenes, "decision", extra_tokens=self.options.max_thought_tokens + 8)
        prompts = [build_prompt(s, "decision", self.prompts) for s in scenes]
        per_call = max(1, self.options.batch_size // n)
        out: list[list[str]] = []
        for chunk_index, start in enumerate(range(0, len(prompts), per_call)):
            chunk = prompts[start : start + per_call]
            texts = self.backend.generate(
                chunk,
                n=n,
                temperature=self.options.temperature,
                top_p=self.options.top_p,
                max_tokens=self.options.max_thought_tokens,
                stop=[self.prompts.behavior_marker],
                # distinct but reproducible per chunk
                seed=seed * 1_000_003 + chunk_index,
            )
            for prompt, conts in zip(chunk, texts):
                out.append([clean_thought(prompt.assistant_prefix + c, self.prompts) for c in conts])
        return out

    def score_thoughts(self, scenes: list[dict], thoughts: list[list[str]]) -> list[np.ndarray]:
        """Letter distribution after ``<thought>\\nBehavior: [`` for every thought of every scene.

        Returns:
            For each scene an ``(n_thoughts, K)`` float64 array (rows sum to 1).
        """
        if len(scenes) != len(thoughts):
            raise ConfigError(f"got {len(scenes)} scenes but {len(thoughts)} thought lists")
        scenes = self._prepare(scenes, "decision", extra_tokens=0, thoughts=thoughts)
        flat = [
            build_prompt(scene, "decision", self.prompts, thought=t)
            for scene, ts in zip(scenes, thoughts)
            for t in ts
        ]
        rows = self._letter_probs(flat)
        out, i = [], 0
        for ts, scene in zip(thoughts, scenes):
            k = len(scene["text"]["action_list"])
            out.append(np.stack(rows[i : i + len(ts)]) if ts else np.zeros((0, k)))
            i += len(ts)
        return out

    # ------------------------------------------------------------------ internals
    def _direct(self, scenes: list[dict]) -> list[ChoiceResult]:
        scenes = self._prepare(scenes, "direct", extra_tokens=0)
        prompts = [build_prompt(s, "direct", self.prompts) for s in scenes]
        return [ChoiceResult(probs=p) for p in self._letter_probs(prompts)]

    def _letter_probs(self, prompts: list) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        size = self.options.batch_size
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            logprobs = self.backend.letter_logprobs(chunk, [list(p.letters) for p in chunk])
            out.extend(_normalise(np.exp(np.asarray(lp, dtype=np.float64))) for lp in logprobs)
        return out

    def _prepare(
        self, scenes: list[dict], mode: str, extra_tokens: int, thoughts: list[list[str]] | None = None
    ) -> list[dict]:
        """Validate scenes and, if asked, cut histories that do not fit the context."""
        for scene in scenes:
            _, _, actions = scene_text(scene)
            option_letters(len(actions), f"scene {scene_id(scene)!r}")
        if not self.options.truncate_history:
            return scenes
        lengths_of = getattr(self.backend, "prompt_lengths", None)
        context = getattr(self.backend, "context_length", None)
        if lengths_of is None or context is None:
            if not self._warned_no_lengths:
                log.warning("truncate_history=True, but backend %r cannot count tokens; histories are not cut", self.backend)
                self._warned_no_lengths = True
            return scenes
        longest = [max(ts, key=len) if ts else None for ts in thoughts] if thoughts else [None] * len(scenes)
        out = []
        for scene, thought in zip(scenes, longest):
            out.append(self._fit(scene, mode, thought, context - extra_tokens, lengths_of))
        return out

    def _fit(self, scene: dict, mode: str, thought: str | None, budget: int, lengths_of) -> dict:
        def length(s: dict) -> int:
            return lengths_of([build_prompt(s, mode, self.prompts, thought=thought)])[0]

        n = length(scene)
        if n <= budget:
            return scene
        lines = scene["text"]["history"].split("\n")
        # Binary search the fewest oldest lines to drop (the strategies render oldest first).
        lo, hi = 1, len(lines)
        fitted, dropped = None, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            trial = copy.deepcopy(scene)
            trial["text"]["history"] = "\n".join(lines[mid:])
            if length(trial) <= budget:
                fitted, dropped, hi = trial, mid, mid - 1
            else:
                lo = mid + 1
        if fitted is None:
            raise BackendError(
                f"scene {scene_id(scene)!r}: the prompt is {n} tokens and still exceeds the budget of {budget} tokens "
                "with the whole history removed; shorten the profile or exposure items"
            )
        log.warning(
            "scene %r: prompt of %d tokens exceeds %d; dropped the %d oldest history line(s)",
            scene_id(scene), n, budget, dropped,
        )
        return fitted


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    total = p.sum()
    return p / total if total > 0 else np.full(p.shape, 1.0 / len(p))
