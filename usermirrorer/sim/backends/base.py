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

from usermirrorer.sim.prompts import Prompt

__all__ = ["Backend", "Prompt", "renormalise_logprobs"]


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
