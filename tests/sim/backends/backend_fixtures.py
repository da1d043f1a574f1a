"""Helpers shared by the backend tests (importable by name: ``from backend_fixtures import ...``)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVED_NAME = "smollm2-135m"
# One engine configuration for every vLLM engine of the suite (offline, server, run_batch).
# enforce_eager: torch.compile of the model takes minutes on 2 cores and changes no number
# these tests check, only speed.
ENGINE_ARGS = {"dtype": "bfloat16", "max_model_len": 2048, "kv_cache_memory_bytes": 1 << 30, "seed": 0, "enforce_eager": True}
START_TIMEOUT_S = float(os.environ.get("USERMIRRORER_VLLM_START_TIMEOUT", "1200"))

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM,
    reason="vllm is not importable in this environment; the vLLM backend tests run in .venv-vllm via .ci/vllm_suite.sh",
)

_TITLES = [
    "Toy Story (1995) - Animation, Children's, Comedy",
    "GoldenEye (1995) - Action, Adventure, Thriller",
    "Heat (1995) - Action, Crime, Thriller",
    "Babe (1995) - Children's, Comedy, Drama",
    "Casino (1995) - Drama, Thriller",
    "Sense and Sensibility (1995) - Drama, Romance",
    "Twelve Monkeys (1995) - Drama, Sci-Fi",
    "Braveheart (1995) - Action, Drama, War",
    "Apollo 13 (1995) - Action, Drama, Thriller",
    "Star Wars (1977) - Action, Adventure, Romance, Sci-Fi, War",
    "Fargo (1996) - Crime, Drama, Thriller",
    "Scream (1996) - Horror, Thriller",
    "Contact (1997) - Drama, Sci-Fi",
    "Titanic (1997) - Action, Drama, Romance",
]


def movie_scene(i: int, k: int) -> dict:
    """A hand-written MovieLens-style scene with ``k`` options (deterministic in ``i``)."""
    n = len(_TITLES)
    history = "\n".join(
        f"{_TITLES[(3 * i + j) % n]}; watched {2 * j + 1} days ago; rated {(i + j) % 5 + 1}/5" for j in range(4 + i % 4)
    )
    return {
        "scene_id": f"movie-{i}",
        "dataset": "handwritten",
        "text": {
            "profile": f"age: {18 + 5 * i}\ngender: {'MF'[i % 2]}\noccupation: {['student', 'engineer', 'librarian', 'doctor'][i % 4]}",
            "history": history,
            "action_list": [f"[New Release] {_TITLES[(5 * i + 2 * a + 1) % n]}" if a == 0 else _TITLES[(5 * i + 2 * a + 1) % n] for a in range(k)],
        },
    }


def main_python() -> str:
    """Python of the project's main environment, to compute reference numbers with the
    transformers backend where it normally runs ($USERMIRRORER_MAIN_PYTHON, else .venv)."""
    given = os.environ.get("USERMIRRORER_MAIN_PYTHON")
    if given:
        return given
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_cli_args(model_dir: str) -> list[str]:
    return [
        "--model", model_dir,
        "--served-model-name", SERVED_NAME,
        "--dtype", ENGINE_ARGS["dtype"],
        "--max-model-len", str(ENGINE_ARGS["max_model_len"]),
        "--kv-cache-memory-bytes", str(ENGINE_ARGS["kv_cache_memory_bytes"]),
        "--seed", str(ENGINE_ARGS["seed"]),
        "--enable-prefix-caching",
        "--enforce-eager",
    ]


def record_measurement(name: str, **values: object) -> None:
    """Append a measured number to $USERMIRRORER_BACKEND_MEASUREMENTS (JSON lines), if set.

    .ci/vllm_suite.sh prints the file after the run, so the tolerances' margins stay visible.
    """
    print(name, values)
    target = os.environ.get("USERMIRRORER_BACKEND_MEASUREMENTS")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"measurement": name, **values}) + "\n")
