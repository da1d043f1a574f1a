"""The Ray engine of the offline stages: same records as one process, a killed job resumes.

Ray runs locally (2 CPUs, the ``ray_local`` fixture) with the tiny random model in fp32.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from usermirrorer.data_pipeline.jsonl import read_jsonl
from usermirrorer.data_pipeline.ray_engine import RayEngine
from usermirrorer.data_pipeline.training.decisions import decisions_path, run_decisions
from usermirrorer.data_pipeline.training.probs import probs_path, run_probs
from usermirrorer.errors import ConfigError, MissingDependency

from pipeline_toys import toy_scenes, write_scenes

N_SCENES = 10
STAGE = dict(n=2, chunk_size=2, max_thought_tokens=8, progress=False, backend_kwargs={"dtype": "float32"})


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """The in-process reference runs with the actors' thread count: fp32 sums split over another
    number of threads round differently (~1e-9 in a probability), and the claim is byte-identity."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _by_id(path: Path) -> dict[str, dict]:
    records = read_jsonl(path)
    by_id = {r["scene_id"]: r for r in records}
    assert len(by_id) == len(records), "a scene was written twice"
    return by_id


def test_ray_decisions_and_probs_equal_the_single_process_records(ray_local, tiny_model_dir, tmp_path):
    local, ray = tmp_path / "local", tmp_path / "ray"
    for project in (local, ray):
        write_scenes(project, toy_scenes(N_SCENES))
    model = str(tiny_model_dir)
    with _torch_threads(1):  # 2 actors on the 2-CPU cluster: one thread each
        run_decisions(local, "toy", model, "strong", **STAGE)
    report = run_decisions(ray, "toy", model, "strong", **STAGE, engine=RayEngine(workers=2))
    assert (report.written, report.skipped) == (N_SCENES, 0)
    expected = _by_id(decisions_path(local, "toy", "strong"))
    assert _by_id(decisions_path(ray, "toy", "strong")) == expected
    assert len(expected) == N_SCENES

    probs = dict(chunk_size=3, progress=False, backend_kwargs={"dtype": "float32"})
    with _torch_threads(1):
        run_probs(local, "toy", model, "strong", **probs)
    run_probs(ray, "toy", model, "strong", **probs, engine=RayEngine(workers=2))
    assert _by_id(probs_path(ray, "toy", "strong")) == _by_id(probs_path(local, "toy", "strong"))

    # a re-run on Ray finds every scene done and starts no actor
    again = run_probs(ray, "toy", model, "strong", **probs, engine=RayEngine(workers=2))
    assert (again.written, again.skipped) == (0, N_SCENES)


def test_an_actor_that_cannot_load_its_model_raises_the_stages_own_error(ray_local, toy_project):
    with pytest.raises(ConfigError, match="model path '/nonexistent/model' does not exist"):
        run_decisions(toy_project, "toy", "/nonexistent/model", "strong", n=1, progress=False,
                      engine=RayEngine(workers=1))


def test_a_ready_simulator_cannot_be_shipped_to_ray(tiny_model_dir, toy_project):
    with pytest.raises(ConfigError, match="cannot be shipped to Ray actors"):
        run_decisions(toy_project, "toy", str(tiny_model_dir), "strong", simulator=object(), engine=RayEngine())


def _cli(project: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "usermirrorer.cli", "decisions", "--dataset", "toy", "--project-path",
            str(project), "--model", str(model), "--version", "weak", "--n", "2", "--chunk-size", "1",
            "--max-thought-tokens", "8", "--no-progress", "--dtype", "float32", "--engine", "ray", "--workers", "2"]


def _env(address: str) -> dict[str, str]:
    # The command joins the test's cluster (no second cluster to start); killing the driver
    # ends its job and its actors, as a crash of `usermirrorer decisions --engine ray` would.
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": address}


def test_a_killed_ray_job_resumes_with_every_scene_exactly_once(ray_local, tiny_model_dir, tmp_path):
    env = _env(ray_local.get_runtime_context().gcs_address)
    write_scenes(tmp_path, toy_scenes(N_SCENES))
    out = decisions_path(tmp_path, "toy", "weak")
    proc = subprocess.Popen(_cli(tmp_path, tiny_model_dir), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    written = out.read_bytes().count(b"\n") if out.exists() else 0
    assert 3 <= written < N_SCENES, f"the kill should land midway, found {written} records; stderr: {err[-2000:]!r}"

    done = subprocess.run(_cli(tmp_path, tiny_model_dir), env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert f"{written} already done".encode() in done.stdout
    ids = [r["scene_id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == N_SCENES


def test_ray_eval_gives_the_single_process_records(ray_local, tiny_model_dir, tmp_path):
    from usermirrorer.sim.evaluation import evaluate_file

    scenes = write_scenes(tmp_path, toy_scenes(N_SCENES), split="eval")
    kwargs = dict(model=str(tiny_model_dir), repeat=5, batch_size=3, dtype="float32", console=_quiet_console())
    local = evaluate_file(scenes, tmp_path / "local.jsonl", **kwargs)
    ray = evaluate_file(scenes, tmp_path / "ray.jsonl", **kwargs, engine=RayEngine(workers=2))
    expected = _by_id(tmp_path / "local.jsonl")
    assert len(expected) == N_SCENES and _by_id(tmp_path / "ray.jsonl") == expected
    strip = {"scenes_per_s"}  # timings differ; every metric must not
    assert ({d: {k: v for k, v in m.items() if k not in strip} for d, m in ray["datasets"].items()}
            == {d: {k: v for k, v in m.items() if k not in strip} for d, m in local["datasets"].items()})


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=160)


def test_sharded_scene_sampling_gives_the_same_scenes_on_ray(ray_local, small_ds):
    from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, sample_scenes

    config = SceneConfig(n_samples=30, min_exposure=3, max_exposure=4, embedder=None, shard_size=8, seed=4)
    local, local_report = sample_scenes(small_ds, config)
    ray, ray_report = sample_scenes(small_ds, config, engine=RayEngine(workers=2))
    assert len(local) == 30 and ray == local
    assert ray_report.dropped == local_report.dropped
    # the same interactions (the candidates' drawn order is shared), other exposures: the shards
    # have seeds of their own, another scheme than the single stream
    stream, _ = sample_scenes(small_ds, SceneConfig(n_samples=30, min_exposure=3, max_exposure=4, embedder=None,
                                                    seed=4))
    assert [s["item_id"] for s in stream] == [s["item_id"] for s in local]
    assert [s["impression_list"] for s in stream] != [s["impression_list"] for s in local]
    with pytest.raises(ConfigError, match="--shard-size"):
        sample_scenes(small_ds, SceneConfig(n_samples=4, embedder=None), engine=RayEngine())


def test_engine_flags_without_engine_ray_and_a_missing_ray_say_how_to_fix(tmp_path, capsys, monkeypatch):
    from usermirrorer.cli import main
    from usermirrorer.data_pipeline import ray_engine

    write_scenes(tmp_path, toy_scenes(2))
    args = ["probs", "--dataset", "toy", "--project-path", str(tmp_path), "--model", "tiny-random",
            "--version", "strong"]
    assert main([*args, "--workers", "2"]) == 1
    assert "--workers set(s) up the Ray engine, but --engine is 'local'; add --engine ray" in capsys.readouterr().err
    assert main([*args, "--engine", "ray", "--batch-out", str(tmp_path / "b.jsonl"), "--backend", "openai"]) == 1
    assert "drop --engine ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(MissingDependency, match=r"pip install 'usermirrorer\[ray\]'"):
        ray_engine.import_ray()
