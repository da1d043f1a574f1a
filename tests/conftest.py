"""Shared fixtures: the tiny random chat model and a thread budget that fits 2 cores.

Test folders mirror the package (``tests/data_pipeline/sampling`` holds the tests of
``usermirrorer/data_pipeline/sampling``); helpers and fixtures used by several folders live in
``tests/support`` and are loaded here as plugins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Keep BLAS/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The helpers are plain modules (``from scene_fixtures import make_dataset``).
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from blas_kernel import select_avx512_kernels

# OpenBLAS's AVX-512 kernels where the CPU runs them, which the exact-neighbour digests were
# recorded with; set before anything imports numpy (OpenBLAS reads the choice once, at load).
select_avx512_kernels()

pytest_plugins = [
    "raw_fixtures",
    "domain_fixtures",
    "sampling_fixtures",
    "training_fixtures",
    "env_fixtures",
    "sim_fixtures",
    "ray_fixtures",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded 1.6M-parameter Llama with SmolLM2's tokenizer and chat template (HF folder)."""
    from usermirrorer.sim.models import build_tiny_random

    path = tmp_path_factory.mktemp("tiny-random")
    build_tiny_random(path)
    return path
