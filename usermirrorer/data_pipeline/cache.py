"""The user cache: what usermirrorer keeps between runs (converted models, bundled datasets' raws).

``$USERMIRRORER_CACHE`` when set, else ``~/.cache/usermirrorer``. Everything in it can be
deleted; it is rebuilt on the next use.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The cache folder (created): ``$USERMIRRORER_CACHE`` or ``~/.cache/usermirrorer``."""
    env = os.environ.get("USERMIRRORER_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "usermirrorer"
    root.mkdir(parents=True, exist_ok=True)
    return root
