"""Commands against careless input (issue #18: items 4, 5, 9, 14, 16, 23, 24)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scene_fixtures import make_dataset

from usermirrorer import scenes_command
from usermirrorer.cli import main
from usermirrorer.data_pipeline.jsonl import read_jsonl, write_jsonl
from usermirrorer.data_pipeline.raw import dataset_records, write_raws


@pytest.fixture()
def raws_project(tmp_path: Path) -> Path:
    ds = make_dataset(n_users=30, n_items=60, n_interactions=600, seed=3, name="toy")
    write_raws(tmp_path, "toy", *dataset_records(ds))
    return tmp_path


def _scenes(project: Path, *extra: str) -> int:
    return main(["scenes", "--dataset", "toy", "--project-path", str(project), "--embedder", "none",
                 "--samples", "20", *extra])


def test_scenes_output_may_not_replace_an_input(raws_project, capsys):
    assert _scenes(raws_project, "--eval-set") == 0
    eval_path = raws_project / "datasets" / "toy_eval.jsonl"
    before = eval_path.read_bytes()
    assert _scenes(raws_project, "--output", str(eval_path)) == 1  # a train run onto the eval split
    assert "is toy_eval.jsonl" in capsys.readouterr().err and eval_path.read_bytes() == before
    raw = raws_project / "raws" / "toy_interaction.jsonl"
    assert _scenes(raws_project, "--output", str(raw)) == 1
    assert "toy_interaction.jsonl" in capsys.readouterr().err
    assert _scenes(raws_project, "--eval-set", "--output", str(eval_path)) == 0  # its own file is fine


def test_scenes_negative_seed_and_a_directory_output(raws_project, capsys):
    assert _scenes(raws_project, "--seed", "-1") == 1
    err = capsys.readouterr().err
    assert "seed must be an integer >= 0, got -1" in err and "Traceback" not in err
    out_dir = raws_project / "somewhere"
    out_dir.mkdir()
    assert _scenes(raws_project, "--output", str(out_dir)) == 1
    assert "is a directory" in capsys.readouterr().err
    assert os.listdir(out_dir) == []


def test_scenes_interrupt_message_is_true(raws_project, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scenes_command, "build_scene_file", interrupted)
    assert _scenes(raws_project) == 130
    err = capsys.readouterr().err
    assert "nothing was written" in err and "resumes" not in err


def test_file_system_errors_are_one_line(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    rc = main(["preprocess", "synthetic", "--users", "5", "--items", "8", "--interactions", "40",
              "--project-path", str(not_a_dir)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(not_a_dir) in err


def _eval_scenes(tmp_path, scene_factory, n=4):
    inp = tmp_path / "scenes.jsonl"
    write_jsonl(inp, [scene_factory(i, k=3, history_lines=2) for i in range(n)])
    return inp


def test_eval_output_may_not_be_its_input(tmp_path, scene_factory, capsys):
    inp = _eval_scenes(tmp_path, scene_factory)
    before = inp.read_bytes()
    assert main(["eval", "--model", "random", "--input", str(inp), "--output", str(inp)]) == 1
    assert "is the --input scene file" in capsys.readouterr().err and inp.read_bytes() == before


def test_eval_limit_and_prompts_are_checked(tmp_path, scene_factory, capsys):
    inp, out = _eval_scenes(tmp_path, scene_factory), tmp_path / "out.jsonl"
    assert main(["eval", "--model", "random", "--input", str(inp), "--output", str(out), "--limit", "-1"]) == 1
    assert "--limit must be >= 1" in capsys.readouterr().err and not out.exists()
    prompts = tmp_path / "p.yaml"
    prompts.write_text("direct_system: hi\n")
    assert main(["eval", "--model", "random", "--input", str(inp), "--output", str(out), "--prompts", str(prompts)]) == 1
    assert "drop --prompts" in capsys.readouterr().err


def test_eval_resume_with_another_model_is_refused(tmp_path, scene_factory, tiny_model_dir, capsys):
    inp, out = _eval_scenes(tmp_path, scene_factory), tmp_path / "out.jsonl"
    tiny = ["--model", str(tiny_model_dir), "--dtype", "float32"]
    common = ["--input", str(inp), "--output", str(out), "--repeat", "3"]
    assert main(["eval", *tiny, *common, "--limit", "2"]) == 0
    assert main(["eval", "--model", "random", *common]) == 1
    err = capsys.readouterr().err
    assert f"model: {str(tiny_model_dir)!r} -> 'random'" in err and "--fresh" in err
    assert main(["eval", *tiny, *common, "--seed", "3"]) == 1  # another seed too
    assert "seed: 0 -> 3" in capsys.readouterr().err
    assert {r["model"] for r in read_jsonl(out)} == {str(tiny_model_dir)} and len(read_jsonl(out)) == 2
    assert main(["eval", *tiny, *common, "--fresh", "--seed", "3"]) == 0
    assert len(read_jsonl(out)) == 4
    assert json.loads((tmp_path / "out.jsonl.params.json").read_text())["seed"] == 3


def test_eval_refuses_results_of_resampled_scenes(tmp_path, scene_factory, tiny_model_dir, capsys):
    inp, out = _eval_scenes(tmp_path, scene_factory), tmp_path / "out.jsonl"
    common = ["eval", "--model", str(tiny_model_dir), "--dtype", "float32", "--input", str(inp), "--output", str(out)]
    assert main(common + ["--limit", "2"]) == 0
    scenes = read_jsonl(inp)
    for s in scenes:
        s["text"]["action_list"] = s["text"]["action_list"][:2]
        s["item_pos"] = min(s["item_pos"], 1)
    write_jsonl(inp, scenes)
    assert main(common) == 1
    assert "scene_fp" in capsys.readouterr().err


def test_eval_decision_mode_thoughts_do_not_depend_on_limit_or_resume(tmp_path, scene_factory, tiny_model_dir):
    inp = _eval_scenes(tmp_path, scene_factory)
    common = ["eval", "--model", str(tiny_model_dir), "--input", str(inp), "--mode", "decision",
              "--max-thought-tokens", "6", "--batch-size", "4", "--dtype", "float32", "--repeat", "2"]
    resumed, whole = tmp_path / "resumed.jsonl", tmp_path / "whole.jsonl"
    assert main(common + ["--output", str(resumed), "--limit", "2"]) == 0
    assert main(common + ["--output", str(resumed), "--limit", "4"]) == 0
    assert main(common + ["--output", str(whole), "--limit", "4"]) == 0
    a, b = read_jsonl(resumed), read_jsonl(whole)
    assert [r["scene_id"] for r in a] == [r["scene_id"] for r in b]
    assert [r["rationales"] for r in a] == [r["rationales"] for r in b]
    for x, y in zip(a, b):
        assert x["probs"] == pytest.approx(y["probs"], abs=1e-5)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   PermissionError(13, "Permission denied", "/w/datasets/toy_train.jsonl")])
def test_disk_full_and_permission_errors_are_one_line(raws_project, capsys, monkeypatch, error):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(scenes_command, "build_scene_file", fails)
    assert _scenes(raws_project) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # before it: the progress notes on stderr
    assert last.startswith("usermirrorer scenes: error:") and error.strerror in last and "Traceback" not in err


def test_a_directory_as_input_file_is_one_line(tmp_path, capsys):
    folder = tmp_path / "scenes.jsonl"
    folder.mkdir()
    assert main(["eval", "--model", "random", "--input", str(folder), "--output", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err
    assert str(folder) in err and "directory" in err and len(err.strip().splitlines()) == 1


def test_vllm_engine_flags_reach_the_backend_kwargs_and_need_the_vllm_backend():
    import argparse

    from usermirrorer.command_options import backend_kwargs_from_args, vllm_engine_kwargs
    from usermirrorer.errors import ConfigError as _ConfigError

    def parsed(*argv):
        from usermirrorer.cli import build_parser

        return build_parser().parse_args(list(argv))

    args = parsed("probs", "--dataset", "d", "--project-path", "w", "--model", "m", "--version", "strong",
                  "--backend", "vllm", "--tensor-parallel-size", "2", "--data-parallel-size", "4",
                  "--gpu-memory-utilization", "0.8", "--no-prefix-caching")
    assert backend_kwargs_from_args(args) == {"tensor_parallel_size": 2, "data_parallel_size": 4,
                                              "gpu_memory_utilization": 0.8, "enable_prefix_caching": False}
    args = parsed("eval", "--input", "s.jsonl", "--output", "o.jsonl", "--backend", "vllm", "--data-parallel-size", "2")
    assert vllm_engine_kwargs(args) == {"data_parallel_size": 2}
    args = parsed("eval", "--input", "s.jsonl", "--output", "o.jsonl", "--tensor-parallel-size", "2")
    with pytest.raises(_ConfigError, match="--tensor-parallel-size .*--backend vllm"):
        vllm_engine_kwargs(args)
    assert vllm_engine_kwargs(argparse.Namespace(backend="transformers")) == {}
