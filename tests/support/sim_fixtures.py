"""Fixtures of the simulator tests: hand-written scenes and backends on the tiny / real model."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_scene(i: int, k: int = 5, history_lines: int = 6, dataset: str = "toy") -> dict:
    """A small hand-written movie scene with ``k`` options; the real item sits at ``i % k``."""
    return {
        "dataset": dataset,
        "user_id": f"u{i}",
        "item_id": f"m{i}",
        "timestamp": f"1998-03-{i % 28 + 1:02d} 12:00:00",
        "item_pos": i % k,
        "text": {
            "profile": f"age: {20 + i}\ngender: {'MF'[i % 2]}\noccupation: {['engineer', 'writer', 'student'][i % 3]}",
            "history": "\n".join(
                f"Movie {7 * i + j} (199{j % 10}) - Drama, Comedy; watched {j + 1} days ago; rated {j % 5 + 1}/5"
                for j in range(history_lines)
            ),
            "action_list": [f"Feature film {i * 10 + a} (1997) - {['Action', 'Romance', 'Horror'][a % 3]}" for a in range(k)],
        },
    }


@pytest.fixture
def scenes() -> list[dict]:
    """Six scenes with 3-6 options."""
    return [make_scene(i, k=3 + i % 4) for i in range(6)]


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    """The transformers backend on the tiny random model, fp32, prefix sharing on."""
    from usermirrorer.sim.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), dtype="float32")


@pytest.fixture(scope="session")
def smollm2_backend():
    """The transformers backend on the real SmolLM2-135M-Instruct, fp32 (for exact comparisons)."""
    from usermirrorer.sim.backends.transformers_backend import TransformersBackend

    return TransformersBackend("smollm2-135m", dtype="float32")


@pytest.fixture
def scene_factory():
    """:func:`make_scene`, for tests that need scenes of a given shape."""
    return make_scene
