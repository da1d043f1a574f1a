"""usermirrorer: preference-aligned LLM user simulators from recommendation logs, as gymnasium envs."""

from __future__ import annotations

__version__ = "0.1.0"
