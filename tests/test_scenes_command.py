"""The ``usermirrorer scenes`` command, the length filter, and real MovieLens-100K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scene_fixtures import make_dataset
from scipy import stats

from usermirrorer.cli import main
from usermirrorer.data_pipeline.jsonl import read_jsonl
from usermirrorer.data_pipeline.raw import dataset_records, load_raws, parse_time, write_raws
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, sample_scenes
from usermirrorer.errors import ConfigError
from usermirrorer.sim.prompt_length import PromptLengthFilter


@pytest.fixture()
def toy_project(tmp_path: Path) -> Path:
    ds = make_dataset(n_users=80, n_items=150, n_interactions=3000, seed=7, name="toy")
    write_raws(tmp_path, "toy", *dataset_records(ds))
    return tmp_path


def test_cli_writes_eval_then_train(toy_project: Path, capsys):
    base = ["scenes", "--dataset", "toy", "--project-path", str(toy_project), "--embedder", "hashing"]
    assert main(base + ["--eval-set", "--samples", "60", "--min-exposure", "5", "--max-exposure", "5"]) == 0
    assert main(base + ["--samples", "200", "--min-exposure", "2", "--max-exposure", "12", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "scenes: toy train" in out and "held out" in out
    evals = read_jsonl(toy_project / "datasets" / "toy_eval.jsonl")
    train = read_jsonl(toy_project / "datasets" / "toy_train.jsonl")
    assert len(evals) == 60 and len(train) == 200
    assert set(evals[0]) == {"dataset", "user_id", "item_id", "timestamp", "impression_list", "item_pos",
                             "choice_cnt", "text"}
    assert set(evals[0]["text"]) == {"profile", "history", "action_list"}
    assert all(r["choice_cnt"] == 5 for r in evals)
    assert not {r["user_id"] for r in evals} & {r["user_id"] for r in train}
    for kind in ("collaborative", "content"):
        assert (toy_project / "embeddings" / f"toy.{kind}.safetensors").exists()
    assert main(base + ["--eval-set", "--negatives", "popularity-matched", "--samples", "30"]) == 0
    assert len(read_jsonl(toy_project / "datasets" / "toy_eval_popmatched.jsonl")) == 30


def test_cli_errors_are_clean(toy_project: Path, capsys):
    code = main(["scenes", "--dataset", "toy", "--project-path", str(toy_project), "--max-exposure", "30",
                 "--embedder", "none"])
    assert code == 1
    assert "26" in capsys.readouterr().err
    code = main(["scenes", "--dataset", "nope", "--project-path", str(toy_project)])
    assert code == 1
    assert "usermirrorer preprocess" in capsys.readouterr().err


def test_length_filter_uses_chat_prompt_length(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    from usermirrorer.sim.prompts import build_prompt

    ds = make_dataset(n_users=60, n_items=120, n_interactions=2000, seed=8)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def length(scene):
        prompt = build_prompt(scene, "decision")
        text = tok.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
        return len(tok(text + prompt.assistant_prefix, add_special_tokens=False)["input_ids"])

    free, _ = sample_scenes(ds, SceneConfig(n_samples=80, min_exposure=2, max_exposure=12, embedder="hashing"))
    lengths = sorted(length(s) for s in free)
    limit = lengths[len(lengths) // 2]
    config = SceneConfig(n_samples=80, min_exposure=2, max_exposure=12, embedder="hashing",
                         max_tokens=limit, tokenizer=str(tiny_model_dir))
    with pytest.raises(ConfigError, match="length filter"):
        sample_scenes(ds, config)
    kept, report = sample_scenes(ds, config, length_filter=PromptLengthFilter.for_config(config))
    assert len(kept) == 80, "dropped scenes are replaced by further candidates"
    assert all(length(s) <= limit for s in kept)
    assert sum(report.dropped.values()) > 0


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory) -> Path:
    pytest.importorskip("recbole", reason="ML-100K comes from the recbole package")
    project = tmp_path_factory.mktemp("ml100k")
    assert main(["preprocess", "ml-100k", "--project-path", str(project)]) == 0
    return project


@pytest.mark.slow
def test_real_ml100k_scenes(ml100k: Path):
    """Default scorers on MovieLens-100K with the movie strategy: every invariant holds.

    (The hashing embedder keeps this fast; the default MiniLM embedder has its own test.)"""
    base = ["scenes", "--dataset", "ml-100k", "--project-path", str(ml100k), "--embedder", "hashing"]
    assert main(base + ["--eval-set", "--samples", "300", "--min-exposure", "5", "--max-exposure", "5"]) == 0
    assert main(base + ["--samples", "600", "--min-exposure", "2", "--max-exposure", "12"]) == 0
    ds = load_raws(ml100k, "ml-100k")
    from usermirrorer.data_pipeline.sampling.strategies import get_strategy

    strategy = get_strategy("ml-100k")
    release = strategy.release_times(ds)
    assert release is not None
    evals = read_jsonl(ml100k / "datasets" / "ml-100k_eval.jsonl")
    train = read_jsonl(ml100k / "datasets" / "ml-100k_train.jsonl")
    assert len(evals) == 300 and len(train) == 600
    assert not {r["user_id"] for r in evals} & {r["user_id"] for r in train}
    for record in evals + train:
        user = ds.user_index[record["user_id"]]
        t = parse_time(record["timestamp"])
        rows = ds.user_rows(user)
        seen = set(ds.inter_item[rows][ds.inter_time[rows] <= t].tolist())
        shown = [ds.item_index[i] for i in record["impression_list"]]
        assert shown[record["item_pos"]] == ds.item_index[record["item_id"]]
        others = [i for j, i in enumerate(shown) if j != record["item_pos"]]
        assert len(set(shown)) == len(shown) == record["choice_cnt"]
        assert not seen.intersection(others)
        assert (release[others] <= t).all()
    positions = np.bincount([r["item_pos"] for r in evals], minlength=5)
    assert stats.chisquare(positions).pvalue > 0.001
    meta = (ml100k / "embeddings" / "ml-100k.content.safetensors")
    assert meta.exists()


def test_cli_faiss_neighbours(toy_project: Path):
    """``--neighbours faiss``: content lists from the index (the sparse path, whatever the size)."""
    pytest.importorskip("faiss")
    base = ["scenes", "--dataset", "toy", "--project-path", str(toy_project), "--embedder", "hashing"]
    out = toy_project / "faiss.jsonl"
    assert main(base + ["--samples", "80", "--neighbours", "faiss", "--faiss-nprobe", "2",
                        "--output", str(out)]) == 0
    records = read_jsonl(out)
    assert len(records) == 80
    assert all(r["impression_list"][r["item_pos"]] == r["item_id"] for r in records)
