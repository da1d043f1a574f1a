"""`usermirrorer eval` end to end on hand-written scenes with the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from usermirrorer.cli import main
from usermirrorer.data_pipeline.jsonl import read_jsonl, write_jsonl


def test_eval_cli_writes_resumable_results_and_summary(tmp_path, tiny_model_dir, scene_factory, capsys):
    scenes = [scene_factory(i, k=3 + i % 3, history_lines=3, dataset="ds-a" if i % 2 else "ds-b") for i in range(6)]
    scenes[0]["scene_id"] = "explicit-id"
    inp, out = tmp_path / "scenes.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, scenes)
    common = ["eval", "--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out),
              "--repeat", "7", "--batch-size", "2", "--dtype", "float32", "--seed", "1"]
    assert main(common + ["--limit", "4"]) == 0
    first = read_jsonl(out)
    assert [r["scene_id"] for r in first] == ["explicit-id", "ds-b:u2:m2:1998-03-03 12:00:00",
                                             "ds-a:u1:m1:1998-03-02 12:00:00", "ds-a:u3:m3:1998-03-04 12:00:00"]
    assert main(common) == 0  # resumes: scores only the two missing scenes
    records = read_jsonl(out)
    assert len(records) == 6 and records[:4] == first
    by_id = {r["scene_id"]: r for r in records}
    for s in scenes:
        sid = s.get("scene_id") or f"{s['dataset']}:{s['user_id']}:{s['item_id']}:{s['timestamp']}"
        r = by_id[sid]
        assert r["dataset"] == s["dataset"] and r["item_pos"] == s["item_pos"] and 0 <= r["hits"] <= 7
        assert len(r["probs"]) == len(s["text"]["action_list"]) and sum(r["probs"]) == pytest.approx(1, abs=1e-5)
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert set(summary["datasets"]) == {"ds-a", "ds-b", "all"} and summary["log_loss_unit"] == "nats"
    assert summary["datasets"]["all"]["n"] == 6
    acc = np.mean([r["hits"] / 7 for r in records])
    assert summary["datasets"]["all"]["accuracy"] == pytest.approx(acc)
    printed = capsys.readouterr().out
    assert "ds-a" in printed and "log-loss" in printed and "4 already in" in printed


def test_eval_cli_rejects_bad_input(tmp_path, tiny_model_dir, scene_factory, capsys):
    bad = scene_factory(0)
    del bad["item_pos"]
    inp = tmp_path / "bad.jsonl"
    write_jsonl(inp, [bad])
    rc = main(["eval", "--model", str(tiny_model_dir), "--input", str(inp), "--output", str(tmp_path / "o.jsonl")])
    assert rc == 1
    assert "item_pos" in capsys.readouterr().err
    rc = main(["eval", "--model", str(tiny_model_dir), "--input", str(tmp_path / "missing.jsonl"), "--output", "x"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err


def test_eval_cli_with_popularity_choice_model(tmp_path, scene_factory):
    pytest.importorskip("usermirrorer.sim.baselines")
    from usermirrorer.data_pipeline.raw import write_raws

    users = [{"user_id": f"u{i}", "user_description": {"age": 20 + i}, "user_features": {}} for i in range(4)]
    items = [{"item_id": f"i{j}", "item_description": {"title": f"Film {j}"}, "item_features": {}} for j in range(5)]
    # i0 is watched by everyone, i1 by one user, the rest never: popularity must favour i0
    inter = [{"user_id": f"u{i}", "item_id": "i0", "timestamp": f"1998-01-0{i + 1} 10:00:00", "behavior_features": {"rating": 4}}
             for i in range(4)]
    inter.append({"user_id": "u0", "item_id": "i1", "timestamp": "1998-01-02 10:00:00", "behavior_features": {"rating": 3}})
    write_raws(tmp_path, "tiny-movies", users, items, inter)
    scene = scene_factory(0, k=3)
    scene.update(dataset="tiny-movies", user_id="u3", item_id="i0", timestamp="1998-02-01 00:00:00",
                 impression_list=["i2", "i0", "i1"], item_pos=1)
    inp, out = tmp_path / "s.jsonl", tmp_path / "pop.jsonl"
    write_jsonl(inp, [scene])
    rc = main(["eval", "--model", "popularity", "--project-path", str(tmp_path), "--input", str(inp),
               "--output", str(out), "--repeat", "5"])
    assert rc == 0
    (rec,) = read_jsonl(out)
    assert int(np.argmax(rec["probs"])) == 1 and rec["model"] == "popularity"
    assert main(["eval", "--model", "popularity", "--input", str(inp), "--output", str(tmp_path / "x.jsonl")]) == 1


def test_eval_cli_in_likelihood_mode(tmp_path, tiny_model_dir, scene_factory):
    scenes = [scene_factory(i, k=4) for i in range(3)]
    inp, out = tmp_path / "scenes.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, scenes)
    assert main(["eval", "--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out), "--mode",
                 "likelihood", "--score-temperature", "2.0", "--dtype", "float32", "--repeat", "3"]) == 0
    records = read_jsonl(out)
    assert [r["mode"] for r in records] == ["likelihood"] * 3
    assert all(len(r["probs"]) == 4 and sum(r["probs"]) == pytest.approx(1, abs=1e-5) for r in records)
