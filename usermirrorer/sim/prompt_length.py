"""How long a scene's chat-formatted prompt is, for scene sampling's length filter (DESIGN.md §3.7).

Scene sampling sits below the simulator and cannot render prompts itself; callers that set
``SceneConfig.max_tokens`` hand it a :class:`PromptLengthFilter` (the ``scenes`` command and
``reproduce`` do).
"""

from __future__ import annotations

from typing import Any

from usermirrorer.errors import ConfigError, MissingDependency
from usermirrorer.sim.backends.base import ChatPromptEncoder
from usermirrorer.sim.models import resolve_model
from usermirrorer.sim.prompts import build_prompt

__all__ = ["PromptLengthFilter"]


class PromptLengthFilter:
    """Measures a scene's prompt in tokens of a chat model's tokenizer and keeps the short ones.

    Args:
        tokenizer: a model registry name (``smollm2-135m``), a folder or a hub id.
        max_tokens: the longest prompt kept.
        mode: the prompt mode measured (``"decision"`` is the longest).
    """

    def __init__(self, tokenizer: str, max_tokens: int, mode: str = "decision"):
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a core dependency
            raise MissingDependency("transformers", "dev") from exc

        self.tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
        if getattr(self.tok, "chat_template", None) is None:
            raise ConfigError(
                f"tokenizer {tokenizer!r} has no chat template, so the chat-formatted prompt length "
                "cannot be measured; use the tokenizer of a chat model"
            )
        self.encoder = ChatPromptEncoder(self.tok, tokenizer)  # renders exactly as the backends do
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.mode = mode

    @classmethod
    def for_config(cls, config: Any) -> PromptLengthFilter:
        """The filter a ``SceneConfig`` asks for (its ``tokenizer``, ``max_tokens``, ``length_mode``)."""
        return cls(config.tokenizer, config.max_tokens, config.length_mode)

    def length(self, scene: dict[str, Any]) -> int:
        """Tokens of the scene's chat-formatted prompt, assistant prefix included."""
        return len(self.encoder.encode([build_prompt(scene, self.mode)])[0])

    def keep(self, scenes: list[dict[str, Any]]) -> list[bool]:
        """One flag per scene: its prompt has at most ``max_tokens`` tokens."""
        return [self.length(s) <= self.max_tokens for s in scenes]

    def __repr__(self) -> str:
        return f"PromptLengthFilter({self.tokenizer!r}, max_tokens={self.max_tokens}, mode={self.mode!r})"
