"""The paper's published fidelity figures, shown beside ours and never mixed with them.

"Mirroring Users" (Wei et al., arXiv 2508.18142) reports the accuracy of choosing the real item
from 5 options, averaged over its 8 domains, on exposure lists built with the standard
construction (DESIGN.md §3, §8). Those numbers were measured on other data, other users and
bigger models; they are context for our rows, not a target our rows were tuned against.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReferenceFigure", "PAPER_REFERENCE", "REFERENCE_CAVEAT", "POPULARITY_WARNING"]


@dataclass(frozen=True)
class ReferenceFigure:
    """One published accuracy (percent) of the paper's Table of 5-option fidelity."""

    model: str
    accuracy_pct: float
    note: str = ""

    def __repr__(self) -> str:
        return f"ReferenceFigure({self.model!r}, {self.accuracy_pct:.1f}%)"


# DESIGN.md §8: 8-domain mean accuracy, 5 options.
PAPER_REFERENCE: tuple[ReferenceFigure, ...] = (
    ReferenceFigure("random (1/K)", 20.0),
    ReferenceFigure("Llama-3.2-3B (base)", 22.7),
    ReferenceFigure("GPT-5", 42.2),
    ReferenceFigure("Gemini-2.5-Flash", 42.5),
    ReferenceFigure("UserMirrorer Llama-3B SFT+DPO", 55.0),
)

REFERENCE_CAVEAT = (
    "Paper figures (arXiv 2508.18142): mean accuracy over its 8 domains, 5 options, standard "
    "exposure construction, measured on other data and users. Not comparable one-to-one with "
    "the ML-100K rows above."
)

# Quoted from the project's issue 8 (a measurement on another construction, not ours).
POPULARITY_WARNING = (
    "Issue 8 reports that on ML-100K exposure lists built the reference implementation's way, "
    "a chooser picking the most popular option (counts from before the scene time) was right 51% "
    "of the time over 256 five-option scenes. Whatever a construction does, compare every "
    "simulator with the popularity rows of the same variant, and with the popularity-matched "
    "variant, where popularity alone cannot find the real item."
)
