"""Small hand-built datasets and strategies for scene-sampling tests (imported by the tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.data_pipeline.sampling.strategies import GenericStrategy

DAY = 86400
T0 = 852076800  # 1997-01-01


def make_dataset(
    n_users: int = 150,
    n_items: int = 300,
    n_interactions: int = 9000,
    seed: int = 0,
    name: str = "toy",
    skew: float = 1.0,
    with_release: bool = True,
    impressions: int = 0,
) -> RawDataset:
    """A log with skewed popularity (Zipf-Mandelbrot exponent ``skew``), coarse times (so same-time ties exist) and release times.

    ``impressions > 0`` adds a behaviour column ``impression``: the real item plus that many
    other item ids, as a logged-exposure domain (MIND) has.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_interactions)
    # Zipf-Mandelbrot popularity: skewed, but with a long middle (ML-100K-like).
    weights = 1.0 / (np.arange(n_items) + 10.0) ** skew
    items = rng.choice(n_items, size=n_interactions, p=weights / weights.sum())
    # Hours on a 200-day span: many users have several interactions in the same hour.
    times = T0 + rng.integers(0, 200 * 24, n_interactions) * 3600
    release = T0 + rng.integers(-100, 150, n_items) * DAY
    # Interactions never precede the release of their item.
    times = np.maximum(times, release[items])
    item_features = [{"release": int(r)} if with_release else {} for r in release]
    behavior: dict[str, np.ndarray] = {"rating": rng.integers(1, 6, n_interactions).astype(np.float64)}
    if impressions:
        column = np.empty(n_interactions, dtype=object)
        for row in range(n_interactions):
            shown = rng.choice(n_items, size=impressions, replace=False)
            ids = [f"i{j}" for j in shown if j != items[row]] + [f"i{items[row]}"]
            rng.shuffle(ids)
            column[row] = ids
        behavior["impression"] = column
    return RawDataset(
        name=name,
        user_ids=np.array([f"u{i}" for i in range(n_users)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        user_description=[{"age": int(20 + i % 40), "job": f"job{i % 7}"} for i in range(n_users)],
        user_features=[{} for _ in range(n_users)],
        item_description=[{"title": f"Item {i}", "genre": f"g{i % 9}"} for i in range(n_items)],
        item_features=item_features,
        inter_user=users,
        inter_item=items,
        inter_time=times,
        behavior=behavior,
    )


class TracingStrategy(GenericStrategy):
    """Generic text, but history lines read ``item_id@unix_time`` so tests can check them, and
    items are hidden before ``item_features['release']``."""

    name = "tracing"

    def history_entry(self, ds: RawDataset, item: int, time: int, behavior: Mapping[str, Any], now: int) -> str:
        return f"{ds.item_ids[item]}@{time}"

    def release_times(self, ds: RawDataset) -> np.ndarray | None:
        values = [f.get("release") for f in ds.item_features]
        if not any(v is not None for v in values):
            return None
        return np.array([v if v is not None else np.iinfo(np.int64).min for v in values], dtype=np.int64)


class LoggedStrategy(TracingStrategy):
    """Replays the ``impression`` behaviour column (like MIND)."""

    logged_exposure_key = "impression"


