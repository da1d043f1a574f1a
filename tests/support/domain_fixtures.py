"""Converted domain fixtures, built once per session (the converters are what is under test)."""

from __future__ import annotations

import pytest
from domain_sources import FIXTURES, SOURCES


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """``(project_path, {dataset: ConvertReport})`` with every domain fixture converted."""
    from usermirrorer.preprocessing.base import get_converter

    project = tmp_path_factory.mktemp("domains")
    reports = {name: get_converter(name).run(FIXTURES / folder, project)
               for name, folder in SOURCES.items()}
    return project, reports
