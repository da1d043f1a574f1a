"""The small interface every LLM backend implements (DESIGN.md §5).

A backend answers two questions about :class:`~usermirrorer.sim.prompts.Prompt` objects:

- :meth:`Backend.letter_logprobs`: the log-probabilities of the option letters as the next
  token after the assistant prefix, restricted to those letters and renormalised;
- :meth:`Backend.generate`: sampled continuations of the assistant prefix, cut at stop strings.

Backends hold no state between requests except caches, so a batch function can run in any
worker (DESIGN.md §9).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from usermirrorer.errors import BackendError
from usermirrorer.sim.prompts import Prompt

__all__ = ["Backend", "Prompt", "renormalise_logprobs", "single_token_letter_ids", "cut_at_stop"]


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
