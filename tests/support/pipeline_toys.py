"""Toy scene records for the training-pipeline tests (imported by tests and conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TOY_ITEMS = ["Heat (1995)", "Toy Story (1995)", "Casino (1995)", "Babe (1995)", "Fargo (1996)",
             "Scream (1996)", "Twister (1996)", "Emma (1996)"]


def toy_scenes(n: int, dataset: str = "toy", seed: int = 0) -> list[dict]:
    """``n`` small scene records (DESIGN §2 format) with 3 or 4 options."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        k = int(rng.integers(3, 5))
        items = [TOY_ITEMS[j] for j in rng.choice(len(TOY_ITEMS), size=k, replace=False)]
        pos = int(rng.integers(k))
        scenes.append({
            "dataset": dataset, "user_id": f"u{i % 7}", "item_id": f"i{i}", "timestamp": f"1998-01-{1 + i % 28:02d} 10:00:00",
            "impression_list": [f"x{i}_{j}" for j in range(k)], "item_pos": pos, "choice_cnt": k,
            "text": {"profile": f"age: {20 + i}, occupation: student",
                     "history": "Star Wars (1977), rated 5, 2 days ago",
                     "action_list": items},
        })
    return scenes


def write_scenes(project: Path, scenes: list[dict], dataset: str = "toy", split: str = "train") -> Path:
    path = project / "datasets" / f"{dataset}_{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s) + "\n" for s in scenes))
    return path
