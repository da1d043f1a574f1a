"""Fixtures of the backend tests: movie scenes, the real SmolLM2 folder, vLLM engines.

The vLLM tests run only where vLLM imports (the separate ``.venv-vllm`` made by
``.ci/vllm_suite.sh``); elsewhere they are skipped with the reason. Engine settings are the
same for the offline engine and the server so vLLM's compile cache is shared between them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from backend_fixtures import (
    ENGINE_ARGS,
    HAS_VLLM,
    START_TIMEOUT_S,
    engine_cli_args,
    free_port,
    main_python,
    movie_scene,
)

@pytest.fixture(scope="session")
def backend_scenes() -> list[dict]:
    """Eight scenes with 3..10 options."""
    return [movie_scene(i, k) for i, k in enumerate([3, 4, 5, 5, 6, 7, 8, 10])]


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The bf16 HF folder of SmolLM2-135M-Instruct ($USERMIRRORER_SMOLLM2_DIR or the registry)."""
    given = os.environ.get("USERMIRRORER_SMOLLM2_DIR")
    if given:
        if not (Path(given) / "config.json").exists():
            pytest.fail(f"USERMIRRORER_SMOLLM2_DIR={given!r} is not a Hugging Face folder (no config.json)")
        return given
    from usermirrorer.sim.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def transformers_reference(tmp_path_factory, backend_scenes, smollm2_dir) -> dict:
    """Letter probabilities of ``backend_scenes`` from the transformers backend (bf16, direct mode)."""
    work = tmp_path_factory.mktemp("reference")
    scenes_path, out_path = work / "scenes.json", work / "reference.json"
    scenes_path.write_text(json.dumps(backend_scenes))
    cmd = [main_python(), str(Path(__file__).with_name("reference_probs.py")), str(scenes_path), smollm2_dir, str(out_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if done.returncode != 0:
        pytest.fail(f"reference run failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return json.loads(out_path.read_text())


@pytest.fixture(scope="session")
def vllm_backend(smollm2_dir):
    """One offline vLLM engine on SmolLM2-135M bf16 for the whole session."""
    if not HAS_VLLM:
        pytest.skip("vllm is not importable")
    from usermirrorer.sim.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(smollm2_dir, **ENGINE_ARGS)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, tmp_path_factory):
    """``vllm.entrypoints.openai.api_server`` on 127.0.0.1 serving SmolLM2 as ``smollm2-135m``.

    Yields the base URL (``http://127.0.0.1:<port>/v1``).
    """
    if not HAS_VLLM:
        pytest.skip("vllm is not importable")
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "vllm_server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *engine_cli_args(smollm2_dir),
           "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after {START_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        # The server runs in its own session: stop its whole process group (engine core included).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
