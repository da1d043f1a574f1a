"""Fixtures for env tests: a small synthetic log and a deterministic, instant fake simulator."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.sim import ChoiceResult


def make_small_dataset(n_users: int = 12, n_items: int = 40, seed: int = 0) -> RawDataset:
    """Users with 4..14 rated interactions each, items with a title and a genre."""
    rng = np.random.default_rng(seed)
    users, items, times, ratings = [], [], [], []
    base = 1_000_000_000
    for u in range(n_users):
        n = int(rng.integers(4, 15))
        chosen = rng.choice(n_items, n, replace=False)
        stamps = base + np.sort(rng.integers(0, 86400 * 200, n))
        users += [u] * n
        items += chosen.tolist()
        times += stamps.tolist()
        ratings += rng.integers(1, 6, n).tolist()
    genres = ["Drama", "Comedy", "Action", "Horror"]
    return RawDataset(
        name="toy",
        user_ids=np.array([f"u{u}" for u in range(n_users)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        user_description=[
            {"age": 20 + u, "occupation": "student" if u % 2 else "writer"} for u in range(n_users)
        ],
        user_features=[{} for _ in range(n_users)],
        item_description=[{"title": f"Movie {i}", "genre": genres[i % 4]} for i in range(n_items)],
        item_features=[{} for _ in range(n_items)],
        inter_user=np.array(users, dtype=np.int32),
        inter_item=np.array(items, dtype=np.int32),
        inter_time=np.array(times, dtype=np.int64),
        behavior={"rating": np.array(ratings, dtype=np.float64)},
    )


class FakeChoiceModel:
    """Deterministic choice model: option logits from a CRC of (last history line, option text).

    Depends on the live history, so trajectories differ between users and steps, and records
    every call's batch size so tests can count simulator calls.
    """

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def choice_probs(self, scenes, **kwargs):
        single = isinstance(scenes, dict)
        batch = [scenes] if single else list(scenes)
        self.calls.append(len(batch))
        out = []
        for scene in batch:
            last = scene["text"]["history"].split("\n")[-1]
            logits = np.array(
                [
                    zlib.crc32(f"{last}|{opt}".encode()) % 1000 / 250.0
                    for opt in scene["text"]["action_list"]
                ]
            )
            p = np.exp(logits - logits.max())
            out.append(ChoiceResult(probs=p / p.sum()))
        return out[0] if single else out

    def __deepcopy__(self, memo):  # gym.make deep-copies kwargs; keep one shared call log
        return self


@pytest.fixture(scope="session")
def small_ds() -> RawDataset:
    return make_small_dataset()


@pytest.fixture
def fake_model() -> FakeChoiceModel:
    return FakeChoiceModel()


@pytest.fixture(scope="session")
def dataset_factory():
    return make_small_dataset


@pytest.fixture(scope="session")
def ml100k_project(tmp_path_factory):
    """Real MovieLens-100K raws, converted from the recbole package copy (~3 s)."""
    from usermirrorer.preprocessing import get_converter

    path = tmp_path_factory.mktemp("ml100k")
    get_converter("ml-100k").run(None, path)
    return path
