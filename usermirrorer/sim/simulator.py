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
from usermirrorer.sim.backends.base import SequenceScores
from usermirrorer.sim.prompts import (
    DEFAULT_PROMPTS,
    MODES,
    PromptSet,
    build_likelihood_prompt,
    build_prompt,
    clean_thought,
    option_letters,
    scene_id,
    scene_text,
)

__all__ = ["SimOptions", "ChoiceResult", "UserSimulator", "LIKELIHOOD_SCORES", "DEBIAS", "likelihood_scores",
           "debias_orders"]

# How likelihood mode turns an option text's log-likelihood into a score (DESIGN.md §5):
# "pmi" subtracts its log-likelihood in the neutral context (its prior), "sum" is the raw
# log-likelihood, "mean" divides it by the option's token count.
LIKELIHOOD_SCORES = ("pmi", "sum", "mean")
# Option texts whose neutral-context log-likelihood is remembered (a catalog's worth).
_PRIOR_CACHE_SIZE = 200_000
# Position debiasing of the letter distribution in direct mode (DESIGN.md §5): average over
# option orders mapped back ("reversed": 2 orders, "cyclic": all K shifts), or divide out the
# model's letter prior estimated once from a few scenes in every cyclic order ("prior", PriDe).
DEBIAS = ("none", "reversed", "cyclic", "prior")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimOptions:
    """How the simulator queries the model.

    Attributes:
        mode: ``"direct"`` (letter right away), ``"decision"`` (thought, then letter) or
            ``"likelihood"`` (each option text scored as the answer; no letters).
        n_thoughts: decision mode: thoughts sampled per scene; probabilities are their mean.
        temperature: decision mode: sampling temperature of thoughts (0 = greedy).
        top_p: decision mode: nucleus sampling mass.
        max_thought_tokens: decision mode: longest thought, in tokens.
        batch_size: scenes per backend call.
        seed: default seed of thought sampling.
        truncate_history: drop the oldest history lines of a scene whose prompt does not fit
            the model's context (logged), instead of raising :class:`BackendError`.
        likelihood_score: likelihood mode: ``"pmi"`` (log-likelihood after the profile and
            history minus that after a neutral context), ``"sum"`` or ``"mean"`` (per token).
        score_temperature: likelihood mode: probabilities are ``softmax(score / T)``; fit it
            on train scenes with :func:`usermirrorer.sim.metrics.fit_temperature`.
        prior_weight: likelihood mode, ``"pmi"``: the weight ``w`` of the neutral-context
            log-likelihood subtracted (``1``: PMI; fit with :func:`~usermirrorer.sim.metrics.fit_prior_weight`).
        debias: direct mode: ``"none"``, ``"reversed"`` (score the reversed list too, average),
            ``"cyclic"`` (all K cyclic shifts, averaged) or ``"prior"`` (PriDe: the letter prior
            is estimated from the first ``debias_scenes`` scenes of each list length in every
            cyclic order, then divided out of every distribution). The orders share the
            profile and history, so a prefix-caching backend recomputes only the option lines.
        debias_scenes: ``"prior"``: scenes per list length the letter prior is estimated on.
    """

    mode: str = "direct"
    n_thoughts: int = 1
    temperature: float = 1.0
    top_p: float = 0.9
    max_thought_tokens: int = 256
    batch_size: int = 8
    seed: int = 0
    truncate_history: bool = False
    likelihood_score: str = "pmi"
    score_temperature: float = 1.0
    prior_weight: float = 1.0
    debias: str = "none"
    debias_scenes: int = 8

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
        if self.likelihood_score not in LIKELIHOOD_SCORES:
            raise ConfigError(f"SimOptions.likelihood_score={self.likelihood_score!r}; expected one of "
                              f"{list(LIKELIHOOD_SCORES)}")
        if self.debias not in DEBIAS:
            raise ConfigError(f"SimOptions.debias={self.debias!r}; expected one of {list(DEBIAS)}")
        if self.debias != "none" and self.mode != "direct":
            raise ConfigError(f"SimOptions.debias={self.debias!r} works on the letter distribution of direct "
                              f"mode; got mode={self.mode!r}")
        if int(self.debias_scenes) < 1:
            raise ConfigError(f"SimOptions.debias_scenes must be >= 1, got {self.debias_scenes}")
        if not self.score_temperature > 0:
            raise ConfigError(f"SimOptions.score_temperature must be > 0, got {self.score_temperature}")


@dataclass
class ChoiceResult:
    """The simulated user's answer to one scene.

    Attributes:
        probs: ``(K,)`` float64 choice probabilities in the order of ``text.action_list``.
        rationales: decision mode: one thought per sample; ``[]`` in direct mode.
        thought_probs: decision mode: ``(n_thoughts, K)``, one distribution per thought
            (``probs`` is their mean); ``None`` in direct mode.
        scores: likelihood mode: ``(K,)`` option scores before the temperature
            (``probs = softmax(scores / T)``), kept so a temperature can be fitted afterwards.
        likelihood: likelihood mode: ``(3, K)``: each option's log-likelihood after the scene's
            context, after the neutral context (NaN unless the score is ``"pmi"``), and its
            token count; every scoring rule can be recomputed from it.
    """

    probs: np.ndarray
    rationales: list[str] = field(default_factory=list)
    thought_probs: np.ndarray | None = None
    scores: np.ndarray | None = None
    likelihood: np.ndarray | None = None

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
        # neutral-context log-likelihood and token count of each option text seen (PMI)
        self._priors: dict[str, tuple[float, int]] = {}
        # debias="prior": the estimated letter prior per list length
        self._letter_priors: dict[int, np.ndarray] = {}

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
            mode: ``"direct"``, ``"decision"`` or ``"likelihood"``; default ``options.mode``.
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
        elif mode == "likelihood":
            results = self._likelihood(batch)
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
        debias = self.options.debias
        if debias in ("none", "prior"):
            probs = self._letter_probs([build_prompt(s, "direct", self.prompts) for s in scenes])
            if debias == "prior":
                probs = self._divide_letter_prior(scenes, probs)
            return [ChoiceResult(probs=p) for p in probs]
        return [ChoiceResult(probs=p) for p in self._order_averaged(scenes, debias)]

    def _per_order(self, scenes: list[dict], debias: str) -> tuple[list[list[list[int]]], list[list[np.ndarray]]]:
        """For each scene its option orders and the letter distribution under each (letter positions)."""
        orders = [debias_orders(len(scene_text(s)[2]), debias) for s in scenes]
        prompts = [build_prompt(_with_order(s, order), "direct", self.prompts)
                   for s, scene_orders in zip(scenes, orders) for order in scene_orders]
        flat = iter(self._letter_probs(prompts))
        return orders, [[next(flat) for _ in scene_orders] for scene_orders in orders]

    def _order_averaged(self, scenes: list[dict], debias: str) -> list[np.ndarray]:
        """Letter distributions averaged over option orders, each mapped back to the scene's order."""
        orders, per_order = self._per_order(scenes, debias)
        return [_mapped_back(o, p) for o, p in zip(orders, per_order)]

    def _divide_letter_prior(self, scenes: list[dict], probs: list[np.ndarray]) -> list[np.ndarray]:
        """PriDe: ``p(option) ~ p(its letter) / prior(letter)``, the prior estimated once per list length.

        Under order ``o`` the model's letter ``j`` gets ``prior(j) * p(option o[j])`` (up to a
        constant), so ``log prior(j)`` is the mean over the estimation scenes and their cyclic
        orders of ``log p_observed(j) - log p_averaged(o[j])``.
        """
        out = []
        for p in probs:
            k = len(p)
            if k not in self._letter_priors:
                sample = [s for s in scenes if len(scene_text(s)[2]) == k][: self.options.debias_scenes]
                orders, per_order = self._per_order(sample, "cyclic")
                log_prior = np.zeros(k)
                for scene_orders, observed in zip(orders, per_order):
                    averaged = _mapped_back(scene_orders, observed)
                    for order, seen in zip(scene_orders, observed):
                        log_prior += np.log(np.maximum(seen, 1e-12)) - np.log(np.maximum(averaged[order], 1e-12))
                prior = np.exp(log_prior / (len(sample) * k))
                self._letter_priors[k] = prior / prior.sum()
            out.append(_normalise(p / self._letter_priors[k]))
        return out

    def _likelihood(self, scenes: list[dict]) -> list[ChoiceResult]:
        if not callable(getattr(self.backend, "continuation_logprobs", None)):
            raise ConfigError(f"mode 'likelihood' needs a backend that scores option texts (continuation_logprobs); "
                              f"{self.backend!r} has none: use the transformers or vllm backend, or a letter mode")
        scenes = self._prepare(scenes, "likelihood", extra_tokens=self._longest_option_tokens(scenes))
        options = [list(scene_text(s)[2]) for s in scenes]
        context: list[SequenceScores] = []
        size = self.options.batch_size
        for start in range(0, len(scenes), size):
            chunk = scenes[start : start + size]
            context.extend(self.backend.continuation_logprobs(
                [build_likelihood_prompt(s, self.prompts) for s in chunk], options[start : start + size]))
        priors = self._neutral_logprobs(options) if self.options.likelihood_score == "pmi" else None
        results = []
        for i, scored in enumerate(context):
            prior = None if priors is None else np.array([priors[t][0] for t in options[i]])
            scores = likelihood_scores(scored.logprob, scored.tokens, self.options.likelihood_score, prior,
                                       self.options.prior_weight)
            table = np.stack([scored.logprob, np.full(len(scores), np.nan) if prior is None else prior,
                              scored.tokens.astype(np.float64)])
            results.append(ChoiceResult(probs=_softmax(scores / self.options.score_temperature), scores=scores,
                                        likelihood=table))
        return results

    def _neutral_logprobs(self, options: list[list[str]]) -> dict[str, tuple[float, int]]:
        """Neutral-context log-likelihood of every option text (computed once per text)."""
        missing = list(dict.fromkeys(t for texts in options for t in texts if t not in self._priors))
        if len(self._priors) + len(missing) > _PRIOR_CACHE_SIZE:
            self._priors.clear()
            missing = list(dict.fromkeys(t for texts in options for t in texts))
        neutral = build_likelihood_prompt(None, self.prompts)
        per_call = max(1, self.options.batch_size * 4)
        for start in range(0, len(missing), per_call):
            texts = missing[start : start + per_call]
            (scored,) = self.backend.continuation_logprobs([neutral], [texts])
            for text, lp, n in zip(texts, scored.logprob, scored.tokens):
                self._priors[text] = (float(lp), int(n))
        return self._priors

    def _longest_option_tokens(self, scenes: list[dict]) -> int:
        lengths_of = getattr(self.backend, "prompt_lengths", None)
        if not self.options.truncate_history or lengths_of is None:
            return 0
        # A rough bound (characters / 2): only the budget for cutting histories depends on it.
        return max((len(t) for s in scenes for t in scene_text(s)[2]), default=0) // 2 + 2

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


def likelihood_scores(logprob: np.ndarray, tokens: np.ndarray, kind: str = "pmi",
                      prior: np.ndarray | None = None, prior_weight: float = 1.0) -> np.ndarray:
    """Option scores of likelihood mode from the options' log-likelihoods (see :data:`LIKELIHOOD_SCORES`).

    Args:
        logprob: ``(K,)`` log-likelihood of each option text after the scene's context.
        tokens: ``(K,)`` token count of each option.
        kind: ``"pmi"`` (needs ``prior``), ``"sum"`` or ``"mean"``.
        prior: ``(K,)`` log-likelihood of each option text after the neutral context.
        prior_weight: ``"pmi"``: how much of the prior is divided out (``logprob - w * prior``;
            1 is PMI, 0 the raw sum).
    """
    logprob = np.asarray(logprob, dtype=np.float64)
    if kind == "sum":
        return logprob
    if kind == "mean":
        return logprob / np.maximum(np.asarray(tokens, dtype=np.float64), 1.0)
    if kind == "pmi":
        if prior is None:
            raise ConfigError("PMI scores need the options' neutral-context log-likelihoods (prior)")
        return logprob - prior_weight * np.asarray(prior, dtype=np.float64)
    raise ConfigError(f"likelihood score {kind!r} is not known; expected one of {list(LIKELIHOOD_SCORES)}")


def debias_orders(k: int, debias: str) -> list[list[int]]:
    """The option orders a debiased letter distribution averages over (identity first).

    ``order[j]`` is the original position of the option shown at position ``j``.
    """
    identity = list(range(k))
    if debias == "reversed":
        return [identity, identity[::-1]] if k > 1 else [identity]
    if debias in ("cyclic", "prior"):
        return [identity[s:] + identity[:s] for s in range(k)]
    return [identity]


def _mapped_back(orders: list[list[int]], per_order: list[np.ndarray]) -> np.ndarray:
    """Mean over orders of the distributions mapped back to the original option positions."""
    total = np.zeros(len(orders[0]))
    for order, probs in zip(orders, per_order):
        total[order] += probs  # letter j of this order shows option order[j]
    return total / len(orders)


def _with_order(scene: dict, order: list[int]) -> dict:
    """``scene`` with its options shown in ``order`` (only the text the model reads changes)."""
    actions = scene["text"]["action_list"]
    return {**scene, "scene_id": f"{scene_id(scene)}~{'-'.join(map(str, order))}",
            "text": {**scene["text"], "action_list": [actions[i] for i in order]}}


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    total = p.sum()
    return p / total if total > 0 else np.full(p.shape, 1.0 / len(p))
