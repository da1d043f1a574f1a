"""decisions and probs on the tiny random model: records, resume, and a run killed midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from usermirrorer.data_pipeline.training.decisions import decisions_path, run_decisions
from usermirrorer.data_pipeline.training.stage import load_train_scenes
from usermirrorer.data_pipeline.jsonl import read_jsonl
from usermirrorer.data_pipeline.training.probs import probs_path, run_probs
from usermirrorer.errors import DataError

from pipeline_toys import toy_scenes, write_scenes


def _cli(project: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "usermirrorer.cli", "decisions", "--dataset", "toy", "--project-path", str(project),
            "--model", str(model), "--version", "strong", "--n", "2", "--chunk-size", "2",
            "--max-thought-tokens", "12", "--no-progress", "--dtype", "float32", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def test_decisions_killed_midway_then_resumed_equals_uninterrupted_run(tiny_model_dir, tmp_path):
    scenes = toy_scenes(24)
    full, killed = tmp_path / "full", tmp_path / "killed"
    for p in (full, killed):
        write_scenes(p, scenes)
    subprocess.run(_cli(full, tiny_model_dir), check=True, env=_env(), capture_output=True, timeout=300)
    reference = decisions_path(full, "toy", "strong").read_bytes()
    assert reference.count(b"\n") == 24

    out = decisions_path(killed, "toy", "strong")
    proc = subprocess.Popen(_cli(killed, tiny_model_dir), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = out.read_bytes()
    lines = partial.count(b"\n")
    assert 4 <= lines < 24, f"the kill should land midway, found {lines} records"
    # a crash in the middle of a write leaves a torn last line: simulate one
    cut = partial.rstrip(b"\n").rfind(b"\n") + 1
    out.write_bytes(partial[: cut + 25])

    subprocess.run(_cli(killed, tiny_model_dir), check=True, env=_env(), capture_output=True, timeout=300)
    resumed = out.read_bytes()
    assert resumed == reference
    ids = [r["scene_id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == 24


def test_decisions_and_probs_records_and_in_process_resume(tiny_model_dir, toy_project):
    from usermirrorer.data_pipeline.training.decisions import make_simulator

    sim = make_simulator(str(tiny_model_dir), n_thoughts=3, max_thought_tokens=10, batch_size=6, dtype="float32")
    rep = run_decisions(toy_project, "toy", str(tiny_model_dir), "weak", n=3, chunk_size=3, limit=9,
                        simulator=sim, progress=False)
    assert (rep.written, rep.skipped) == (9, 0)
    recs = read_jsonl(decisions_path(toy_project, "toy", "weak"))
    scenes = load_train_scenes(toy_project, "toy")
    assert [r["scene_id"] for r in recs] == [s["scene_id"] for s in scenes[:9]]
    assert all(len(r["thoughts"]) == 3 and all(t.startswith("Thought:\nStimulus:") for t in r["thoughts"]) for r in recs)
    assert all("Behavior: [" not in t for r in recs for t in r["thoughts"])

    # a second run with a larger limit only adds the missing scenes
    rep = run_decisions(toy_project, "toy", str(tiny_model_dir), "weak", n=3, chunk_size=3, limit=12,
                        simulator=sim, progress=False)
    assert (rep.written, rep.skipped) == (3, 9)

    full = run_probs(toy_project, "toy", str(tiny_model_dir), "weak", chunk_size=4, simulator=sim, progress=False)
    assert full.written == 12
    path = probs_path(toy_project, "toy", "weak")
    reference = path.read_bytes()
    probs = read_jsonl(path)
    for rec, scene in zip(probs, scenes):
        arr = np.asarray(rec["probs"])
        assert arr.shape == (3, scene["choice_cnt"])
        np.testing.assert_allclose(arr.sum(axis=1), 1.0, atol=1e-9)
        assert rec["scene_id"] == scene["scene_id"] and rec["version"] == "weak"
    # lose the last 5 records plus half a line, resume: the same bytes come back
    lines = reference.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:7]) + lines[7][:30])
    again = run_probs(toy_project, "toy", str(tiny_model_dir), "weak", chunk_size=4, simulator=sim, progress=False)
    assert (again.written, again.skipped) == (5, 7)
    assert path.read_bytes() == reference


def test_scene_ids_are_made_unique_and_missing_inputs_are_reported(tmp_path):
    scenes = toy_scenes(3)
    scenes[2] = dict(scenes[1])  # a repeated scene gets a distinct id
    write_scenes(tmp_path, scenes)
    ids = [s["scene_id"] for s in load_train_scenes(tmp_path, "toy")]
    assert len(set(ids)) == 3 and ids[2] == ids[1] + "#2"
    with pytest.raises(DataError, match="run `usermirrorer decisions"):
        run_probs(tmp_path, "toy", "tiny-random", "strong", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        load_train_scenes(tmp_path, "other")


def test_openai_batch_route_round_trip(tiny_model_dir, toy_project, tmp_path):
    """--batch-out writes Batch requests; a (faked) batch output read by --batch-in gives the records."""
    import json
    import math

    from usermirrorer.data_pipeline.training.decisions import read_decisions_batch, write_decisions_batch
    from usermirrorer.data_pipeline.training.probs import read_probs_batch, write_probs_batch
    from usermirrorer.sim.backends.openai_backend import read_batch_jsonl

    model = str(tiny_model_dir)
    requests = tmp_path / "decisions_requests.jsonl"
    assert write_decisions_batch(toy_project, "toy", model, "strong", requests, n=2, limit=3, max_thought_tokens=32) == 3
    lines = [rec for _, rec in read_batch_jsonl(requests)]
    assert all(r["url"] == "/v1/completions" and r["body"]["n"] == 2 for r in lines)
    assert lines[0]["body"]["prompt"].endswith("Thought:\nStimulus:")
    output = tmp_path / "decisions_output.jsonl"
    output.write_text("".join(json.dumps({"custom_id": r["custom_id"], "response": {"status_code": 200, "body": {
        "choices": [{"index": j, "text": f" bored {i}-{j}.\nBehavior: [B]"} for j in range(2)]}}}) + "\n"
        for i, r in reversed(list(enumerate(lines)))))  # a batch output may come in any order
    report = read_decisions_batch(toy_project, "toy", model, "strong", output)
    assert report.written == 3
    recs = read_jsonl(decisions_path(toy_project, "toy", "strong"))
    assert [r["thoughts"] for r in recs] == [[f"Thought:\nStimulus: bored {i}-{j}." for j in range(2)] for i in range(3)]
    # a second write only asks for the scenes still missing
    assert write_decisions_batch(toy_project, "toy", model, "strong", tmp_path / "again.jsonl", n=2, limit=4) == 1

    requests = tmp_path / "probs_requests.jsonl"
    assert write_probs_batch(toy_project, "toy", model, "strong", requests) == 6
    out_lines = []
    for r in (rec for _, rec in read_batch_jsonl(requests)):
        ids = [int(x) for x in r["custom_id"].split("|")[2].split(",")]
        weights = np.arange(1, len(ids) + 1, dtype=float)
        top = {f"token_id:{t}": math.log(w / weights.sum()) for t, w in zip(ids, weights)}
        out_lines.append({"custom_id": r["custom_id"], "response": {"status_code": 200, "body": {
            "choices": [{"index": 0, "text": "A", "logprobs": {"top_logprobs": [top]}}]}}})
    output = tmp_path / "probs_output.jsonl"
    output.write_text("".join(json.dumps(x) + "\n" for x in out_lines))
    assert read_probs_batch(toy_project, "toy", model, "strong", output).written == 3
    scenes = load_train_scenes(toy_project, "toy")
    for rec, scene in zip(read_jsonl(probs_path(toy_project, "toy", "strong")), scenes):
        w = np.arange(1, scene["choice_cnt"] + 1, dtype=float)
        np.testing.assert_allclose(rec["probs"], [w / w.sum()] * 2)
