"""The small interface every LLM backend implements (DESIGN.md §5).

A backend answers two questions about :class:`~usermirrorer.sim.prompts.Prompt` objects:

- :meth:`Backend.letter_logprobs`: the log-probabilities of the option letters as the next
  token after the assistant prefix, restricted to those letters and renormalised;
- :meth:`Backend.generate`: sampled continuations of the assistant prefix, cut at stop strings.

Backends hold no state between requests except caches, so a batch function can run in any
worker (DESIGN.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from usermirrorer.errors import BackendError, DataError
from usermirrorer.sim.prompts import Prompt

__all__ = [
    "Backend",
    "BackendStats",
    "ChatPromptEncoder",
    "Prompt",
    "SequenceScores",
    "control_token_texts",
    "cut_at_stop",
    "escape_special_tokens",
    "floor_missing_logprobs",
    "prompt_seeds",
    "renormalise_logprobs",
    "single_token_letter_ids",
]

# Characters of rendered text looked back at when checking that a letter is one token.
_TAIL_CHARS = 24


@runtime_checkable
class Backend(Protocol):
    """What :class:`~usermirrorer.sim.simulator.UserSimulator` needs from an LLM engine."""

    def letter_logprobs(self, prompts: list[Prompt], letters: list[list[str]]) -> list[np.ndarray]:
        """Next-token log-probabilities over given letters, renormalised over them.

        Args:
            prompts: requests whose assistant prefix ends right before the letter.
            letters: for each prompt, the letters to score (``["A", "B", ...]``).

        Returns:
            For each prompt a float64 array of ``len(letters[i])`` log-probabilities whose
            exponentials sum to 1.
        """
        ...

    def generate(
        self,
        prompts: list[Prompt],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: list[str],
        seed: int,
    ) -> list[list[str]]:
        """``n`` sampled continuations of each prompt's assistant prefix.

        Returns:
            For each prompt ``n`` strings: the generated text only (not the prefix), cut
            before the first stop string.
        """
        ...

    # Likelihood mode also needs ``continuation_logprobs(prompts, continuations) ->
    # list[SequenceScores]`` (the log-likelihood of each continuation text right after the
    # prompt's assistant prefix); a backend without it cannot run that mode.


@dataclass(frozen=True)
class SequenceScores:
    """Log-likelihoods of the continuations of one prompt (likelihood mode, DESIGN.md §5).

    Attributes:
        logprob: ``(K,)`` float64: ``sum_j log P(token_j | prompt, earlier tokens)`` over each
            continuation's tokens.
        tokens: ``(K,)`` int: how many tokens each continuation has (for length-normalised scores).
    """

    logprob: np.ndarray
    tokens: np.ndarray

    def __repr__(self) -> str:
        return f"SequenceScores(logprob={np.array2string(self.logprob, precision=2)}, tokens={self.tokens.tolist()})"


def renormalise_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """Log-probabilities restricted to a subset, renormalised so their exponentials sum to 1.

    Works on the last axis; float64 out. A row of all ``-inf`` (should not happen with real
    models) becomes uniform rather than NaN.
    """
    x = np.asarray(logprobs, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("expected at least one log-probability")
    finite = np.isfinite(x).any(axis=-1, keepdims=True)
    x = np.where(finite, x, 0.0)
    m = x.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    return x - lse


def single_token_letter_ids(tokenizer, tail: str, letters: tuple[str, ...], model_name: str) -> list[int]:
    """Token id of each option letter right after ``tail``, verified on ``tokenizer``.

    Each ``tail + letter`` must tokenize as ``tail``'s tokens plus exactly one token, and the
    letters' tokens must differ; otherwise scoring one next token would be wrong.

    Raises:
        BackendError: the tokenizer merges or splits a letter, or two letters share a token.
    """
    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = enc(tail)
    ids = []
    for letter in letters:
        full = enc(tail + letter)
        if len(full) != len(base) + 1 or full[: len(base)] != base:
            raise BackendError(
                f"the tokenizer of model {model_name!r} does not encode option letter {letter!r} as one "
                f"token after {tail[-20:]!r} (got {len(full) - len(base)} extra token(s): "
                f"{tokenizer.convert_ids_to_tokens(full[max(len(base) - 1, 0):])}); letters must be single "
                "tokens for next-token scoring - change the prompts' direct_prefix/behavior_marker "
                "(e.g. end them with '[')"
            )
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise BackendError(f"option letters {letters} map to repeated token ids {ids} for model {model_name!r}")
    return ids


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string (engines may let one through at a
    detokeniser boundary, and the transformers backend stops on tokens, not text)."""
    cut = len(text)
    for s in stop:
        j = text.find(s)
        if 0 <= j < cut:
            cut = j
    return text[:cut]


class ChatPromptEncoder:
    """Renders :class:`Prompt` objects to the text and token ids every backend feeds its model.

    All backends (transformers, vLLM, OpenAI-compatible, and the batch files written for a
    hosted API) hold one, so a model sees byte-identical text whichever engine runs it.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        model_name: shown in error messages.
    """

    def __init__(self, tokenizer: Any, model_name: str):
        if getattr(tokenizer, "chat_template", None) is None:
            raise BackendError(
                f"model {model_name!r} has no chat template in its tokenizer; the simulator sends chat messages. "
                "Use an instruct/chat checkpoint or add a chat_template to its tokenizer_config.json"
            )
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._letter_ids: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        self.special_tokens = control_token_texts(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str, model_name: str | None = None) -> ChatPromptEncoder:
        """Load the tokenizer of a local folder or hub id."""
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise BackendError(f"could not load the tokenizer of {path!r}: {exc}") from None
        return cls(tokenizer, model_name or path)

    def __repr__(self) -> str:
        return f"ChatPromptEncoder(model={self.model_name!r}, vocab={len(self.tokenizer)})"

    def render(self, prompt: Prompt) -> str:
        """The exact text the model continues: chat template with generation prompt + prefix.

        Control tokens come from the chat template only: a special token's text inside the
        messages or the prefix (a dataset title holding ``<|im_end|>``) is escaped
        (:func:`escape_special_tokens`), so data cannot open or close a turn.
        """
        messages = [{**m, "content": self.escape(m["content"])} for m in prompt.messages]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + self.escape(prompt.assistant_prefix)

    def escape(self, text: str) -> str:
        """``text`` with this tokenizer's special tokens escaped (see :func:`escape_special_tokens`)."""
        return escape_special_tokens(text, self.special_tokens)

    def encode(self, prompts: list[Prompt]) -> list[list[int]]:
        """Token ids of each rendered prompt (special tokens come from the chat template only)."""
        if not prompts:
            return []
        return [list(r) for r in self.tokenizer([self.render(p) for p in prompts], add_special_tokens=False)["input_ids"]]

    def letter_token_ids(self, tail: str, letters: tuple[str, ...]) -> list[int]:
        """Token id of each letter right after ``tail``, verified on the tokenizer.

        Raises:
            BackendError: a letter is not exactly one extra token after ``tail``, or two
                letters share a token.
        """
        key = (tail, letters)
        if key in self._letter_ids:
            return self._letter_ids[key]
        ids = single_token_letter_ids(self.tokenizer, tail, letters, self.model_name)
        self._letter_ids[key] = ids
        return ids

    def encode_continuations(self, prompt: Prompt, continuations: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids of ``prompt`` followed by each continuation, and where each continuation starts.

        Each row is the tokenisation of the whole text (rendered prompt + continuation), so every
        backend scores the same tokens; a continuation starts where its row leaves the prompt's
        own tokens (normally right after them; earlier when the tokenizer merges across the
        boundary, and then the merged token is scored too).

        Returns:
            ``(rows, starts)``: ``rows[i][starts[i]:]`` are the scored tokens of continuation ``i``.

        Raises:
            DataError: an empty continuation (nothing to score).
        """
        rendered = self.render(prompt)
        context = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        rows = [list(r) for r in self.tokenizer([rendered + self.escape(c) for c in continuations],
                                                add_special_tokens=False)["input_ids"]]
        starts = []
        for text, row in zip(continuations, rows):
            start = 0
            limit = min(len(context), len(row))
            while start < limit and row[start] == context[start]:
                start += 1
            if start >= len(row) or not text:
                raise DataError(f"scene {prompt.scene_id!r}: option {text!r} adds no token to score; "
                                "every option needs a non-empty text")
            starts.append(start)
        return rows, starts

    def letter_ids_for(self, prompt: Prompt, letters: list[str] | tuple[str, ...]) -> list[int]:
        """Letter token ids for one prompt (looks at the end of its rendered text)."""
        source = self.render(prompt) if len(prompt.assistant_prefix) < _TAIL_CHARS else prompt.assistant_prefix
        return self.letter_token_ids(source[-_TAIL_CHARS:], tuple(letters))


# Put after a special token's first character so the tokenizer reads it as plain text.
_ESCAPE = "\u200b"  # zero-width space


def control_token_texts(tokenizer: Any) -> tuple[str, ...]:
    """The texts a tokenizer turns into special (control) tokens, longest first."""
    texts = set(getattr(tokenizer, "all_special_tokens", None) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    texts |= {t.content for t in decoder.values() if getattr(t, "special", False)}
    return tuple(sorted((t for t in texts if len(t) > 1), key=len, reverse=True))


def escape_special_tokens(text: str, special_tokens: tuple[str, ...]) -> str:
    """Data text with every special token's text broken by a zero-width space after its first
    character (``<|im_end|>`` -> ``<\u200b|im_end|>``): it reads the same, and no tokenizer or
    server turns it into a control token. Every backend's encoder applies it (DESIGN.md §4)."""
    for token in special_tokens:
        if token in text:
            text = text.replace(token, token[0] + _ESCAPE + token[1:])
    return text


@dataclass
class BackendStats:
    """Token counters, to see how much work the prefix cache saved."""

    prompts: int = 0
    prompt_tokens: int = 0
    computed_tokens: int = 0
    cache_hits: int = 0

    @property
    def reused_fraction(self) -> float:
        return 1.0 - self.computed_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def prompt_seeds(seed: int, n_prompts: int) -> list[int]:
    """One independent 63-bit seed per prompt, derived from ``seed``.

    Engines seed each request separately; giving every prompt of a batch the same seed would
    make identical prompts return identical samples, so each prompt gets its own stream.
    """
    states = np.random.SeedSequence(int(seed)).spawn(n_prompts)
    return [int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in states]


def floor_missing_logprobs(found: dict[int, float], letter_ids: list[int], floor: float | None) -> tuple[np.ndarray, int]:
    """Log-probabilities of ``letter_ids`` from a top-k dict, filling letters that are absent.

    A letter missing from a top-k list has a log-probability at most the smallest value
    listed; it gets ``floor`` when given, else that smallest value (an upper bound, so the
    renormalised probability of missing letters is over- rather than under-stated).

    Returns:
        ``(raw log-probabilities, number of letters filled in)``.
    """
    if not found:
        raise BackendError("the server returned no log-probabilities for the next token")
    fill = float(floor) if floor is not None else min(found.values())
    values = [found.get(t) for t in letter_ids]
    missing = sum(v is None for v in values)
    return np.array([fill if v is None else v for v in values], dtype=np.float64), missing
