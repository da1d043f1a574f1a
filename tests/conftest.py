"""Shared fixtures: the tiny random chat model and a thread budget that fits 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep BLAS/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 1.6M-parameter Llama with SmolLM2's tokenizer and chat template (HF folder)."""
    from usermirrorer.sim.models import build_tiny_random

    path = tmp_path_factory.mktemp("tiny-random")
    build_tiny_random(path)
    return path
