"""Which OpenBLAS kernels numpy runs on, for the tests whose bytes depend on them.

OpenBLAS picks its kernels per CPU: the AVX-512 ones on Intel CPUs that have it, the Haswell
ones on AMD Zen even with AVX-512. The exact-neighbour digests and the blocked-equals-dense
checks hold for the AVX-512 kernels (``neighbours.py`` says why); ``tests/conftest.py`` selects
them where the CPU can run them, and a test that needs them skips, saying so, where it cannot.
"""

from __future__ import annotations

import os
import sys

import pytest

AVX512_KERNELS = frozenset({"SkylakeX", "Cooperlake", "SapphireRapids"})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def select_avx512_kernels() -> None:
    """Name OpenBLAS's SkylakeX kernels in ``OPENBLAS_CORETYPE`` where the CPU runs them.

    It replaces another kernel named there (some machines set ``Haswell``), for the tests only.
    OpenBLAS reads the variable once, when numpy loads it, so this is a no-op after that.
    """
    if ({"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= _cpu_flags() and "numpy" not in sys.modules
            and os.environ.get("OPENBLAS_CORETYPE") not in AVX512_KERNELS):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


def openblas_kernels() -> set[str]:
    """The kernel names of the OpenBLAS libraries loaded now (empty if threadpoolctl is missing)."""
    import numpy  # noqa: F401  (loads numpy's OpenBLAS)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return set()
    return {str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"}


def require_avx512_blas() -> None:
    """Skip the calling test unless every loaded OpenBLAS runs its AVX-512 kernels."""
    other = openblas_kernels() - AVX512_KERNELS
    if other:
        pytest.skip(f"needs OpenBLAS's AVX-512 kernels (the digests' bytes), got {sorted(other)}: this CPU lacks "
                    "AVX-512 or OPENBLAS_CORETYPE chose another kernel")
