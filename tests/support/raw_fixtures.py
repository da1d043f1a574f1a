"""Fixtures of the data tests: hand-written raws and the real ML-100K conversion."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ml100k_converted(tmp_path_factory: pytest.TempPathFactory):
    """The real ML-100K (recbole's copy) converted once: (project_path, report)."""
    from usermirrorer.preprocessing import get_converter

    project = tmp_path_factory.mktemp("ml100k-project")
    report = get_converter("ml-100k").run(None, project)
    return project, report
