"""Fixtures of the scene-sampling tests (builders live in scene_fixtures.py)."""

from __future__ import annotations

import pytest
from scene_fixtures import TracingStrategy, make_dataset

from usermirrorer.data_pipeline.raw import RawDataset


@pytest.fixture(scope="session")
def toy() -> RawDataset:
    return make_dataset()


@pytest.fixture(scope="session")
def tracing() -> TracingStrategy:
    return TracingStrategy()
