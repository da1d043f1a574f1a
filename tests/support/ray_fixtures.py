"""A local Ray cluster for the scale-out tests (2 CPUs, no dashboard), one per test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """``ray`` joined to a 2-CPU local cluster, shut down after the module (its processes hold memory)."""
    ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'usermirrorer[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Actors inherit the environment: one torch thread each on the 2-core machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
             logging_level="WARNING")
    yield ray
    ray.shutdown()
