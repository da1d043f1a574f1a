"""Which OpenBLAS kernels numpy runs on, for the tests whose bytes depend on them.

OpenBLAS picks its kernels per CPU: the AVX-512 ones on Intel CPUs that have it, the Haswell
ones on AMD Zen even with AVX-512. The exact-neighbour digests and the blocked-equals-dense
checks hold for the AVX-512 kernels (``neighbours.py`` says why); ``tests/conftest.py`` selects
them where the CPU can run them, and a test that needs them skips, saying so, where it cannot.
"""

from __future__ import annotations

import pytest

AVX512_KERNELS = frozenset({"SkylakeX", "Cooperlake", "SapphireRapids"})  # as in tests/conftest.py


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
