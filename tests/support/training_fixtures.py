"""Fixtures of the training-pipeline tests: a toy project with hand-written train scenes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_toys import toy_scenes, write_scenes


@pytest.fixture
def toy_project(tmp_path: Path) -> Path:
    """A project folder with 24 toy train scenes of dataset ``toy``."""
    write_scenes(tmp_path, toy_scenes(24))
    return tmp_path
