"""Packaging: the converters' source lives in top-level ``preprocessing/`` and installs as
``usermirrorer.preprocessing`` (a setuptools ``package-dir`` mapping, DESIGN.md §1), in an
editable install and in a built wheel alike."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import usermirrorer.preprocessing

REPO = Path(__file__).resolve().parents[1]


def _package_folders() -> set[str]:
    names = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "usermirrorer").rglob("__init__.py")}
    names |= {"usermirrorer." + ".".join(p.parent.relative_to(REPO).parts)
              for p in (REPO / "preprocessing").rglob("__init__.py")}
    return names


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert config["package-dir"] == {"usermirrorer.preprocessing": "preprocessing"}
    assert set(config["packages"]) == _package_folders()


def test_editable_install_maps_the_converters():
    assert Path(usermirrorer.preprocessing.__file__).resolve() == REPO / "preprocessing" / "__init__.py"
    assert "ml-100k" in usermirrorer.preprocessing.converters()


@pytest.mark.slow
def test_wheel_holds_the_converters_under_usermirrorer(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("usermirrorer", "preprocessing"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("usermirrorer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    converters = {p.name for p in (REPO / "preprocessing").glob("*.py")}
    assert {f"usermirrorer/preprocessing/{n}" for n in converters} <= names
    assert not any(n.startswith("preprocessing/") for n in names), "the source folder must not ship as its own package"
    assert "usermirrorer/data_pipeline/training/configs/smollm2_135m_sft.yaml" in names
    assert "usermirrorer/py.typed" in names
