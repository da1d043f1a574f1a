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


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


# OpenBLAS's AVX-512 kernels wherever the CPU runs them: the exact-neighbour digests were
# recorded with them, and the Haswell kernels (OpenBLAS's pick on AMD Zen, and what some
# machines set OPENBLAS_CORETYPE to) round some float32 products differently with their shape
# (tests/support/blas_kernel.py). It replaces another kernel named in the environment, for the
# tests only. OpenBLAS reads it once, when numpy loads it, so it is set before anything imports numpy.
_AVX512_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")
if ({"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= _cpu_flags() and "numpy" not in sys.modules
        and os.environ.get("OPENBLAS_CORETYPE") not in _AVX512_KERNELS):
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"

# The helpers are plain modules (``from scene_fixtures import make_dataset``).
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

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
