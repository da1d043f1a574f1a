"""Helpers of the data tests: fixture paths and hand-written raws."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ML1M_FIXTURE = FIXTURES / "ml-1m"


def write_raw_files(root: Path, dataset: str, users: list, items: list, interactions: list) -> Path:
    """Write raws by hand; each entry is a dict (dumped as JSON) or a str (written verbatim)."""
    raws = root / "raws"
    raws.mkdir(parents=True, exist_ok=True)
    for suffix, rows in (("user_feature", users), ("item_feature", items),
                         ("interaction", interactions)):
        lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
        (raws / f"{dataset}_{suffix}.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def user(uid: str) -> dict:
    return {"user_id": uid, "user_description": {"age": 30}, "user_features": {}}


def item(iid: str) -> dict:
    return {"item_id": iid, "item_description": {"title": f"Movie {iid}"}, "item_features": {}}


def inter(uid: str, iid: str, stamp: str = "2020-01-01 10:00:00") -> dict:
    return {"user_id": uid, "item_id": iid, "timestamp": stamp, "behavior_features": {"rating": 4}}
