"""The resumable stages refuse stale or mixed outputs (issue #18: items 3, 4, 8)."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_toys import toy_scenes, write_scenes

from usermirrorer.data_pipeline.jsonl import read_jsonl
from usermirrorer.data_pipeline.training.decisions import decisions_path, run_decisions
from usermirrorer.data_pipeline.training.preference import load_scored_scenes
from usermirrorer.data_pipeline.training.probs import probs_path, run_probs
from usermirrorer.errors import ConfigError, DataError


class FakeSim:
    """Thoughts name the scene's options; every thought's distribution is uniform."""

    def thoughts(self, scenes, n, seed=None):
        return [[f"Thought:\nStimulus: {seed} {len(s['text']['action_list'])} options #{j}" for j in range(n)]
                for s in scenes]

    def score_thoughts(self, scenes, thoughts):
        return [np.full((len(t), len(s["text"]["action_list"])), 1 / len(s["text"]["action_list"]))
                for s, t in zip(scenes, thoughts)]


def _decisions(project, **kw):
    kw = {"n": 2, "chunk_size": 2, "simulator": FakeSim(), "progress": False, **kw}
    return run_decisions(project, "toy", "fake", "strong", **kw)


def _probs(project, **kw):
    return run_probs(project, "toy", "fake", "strong", chunk_size=2, simulator=FakeSim(), progress=False, **kw)


def _resample_with_three_options(project, n):
    scenes = toy_scenes(n)
    for s in scenes:  # same ids (dataset, user, item, time), other exposure lists
        s["text"]["action_list"] = s["text"]["action_list"][:3]
        s["impression_list"] = s["impression_list"][:3]
        s["item_pos"] = min(s["item_pos"], 2)
        s["choice_cnt"] = 3
    write_scenes(project, scenes)


def test_stage_records_carry_the_scene_fingerprint_and_refuse_changed_scenes(tmp_path):
    write_scenes(tmp_path, toy_scenes(6))
    _decisions(tmp_path)
    _probs(tmp_path, limit=4)
    assert all(len(r["scene_fp"]) == 16 for r in read_jsonl(decisions_path(tmp_path, "toy", "strong")))
    assert all("scene_fp" in r for r in read_jsonl(probs_path(tmp_path, "toy", "strong")))
    _resample_with_three_options(tmp_path, 6)
    with pytest.raises(DataError, match=r"re-sampled.*") as err:  # decisions written about other options
        _probs(tmp_path)
    assert "_decisions_strong.jsonl:1: scene_fp:" in str(err.value) and "--fresh" in str(err.value)
    with pytest.raises(DataError, match="scene_fp"):
        _decisions(tmp_path)  # its own resume too
    with pytest.raises(DataError, match="scene_fp"):
        load_scored_scenes(tmp_path, "toy", ("strong",))
    _decisions(tmp_path, fresh=True)
    _probs(tmp_path, fresh=True)
    rows = [np.asarray(r["probs"]) for r in read_jsonl(probs_path(tmp_path, "toy", "strong"))]
    assert {r.shape for r in rows} == {(2, 3)}


@pytest.mark.parametrize("change", [{"n": 3}, {"seed": 1}, {"chunk_size": 3}, {"temperature": 0.7}])
def test_resuming_decisions_with_other_parameters_is_refused(tmp_path, change):
    write_scenes(tmp_path, toy_scenes(6))
    _decisions(tmp_path, limit=2)
    key = next(iter(change))
    with pytest.raises(ConfigError, match=rf"{key}: .* -> .*--fresh"):
        _decisions(tmp_path, **change)
    report = _decisions(tmp_path, limit=4)  # the same parameters resume
    assert (report.written, report.skipped) == (2, 2)
    report = _decisions(tmp_path, fresh=True, **change)
    assert (report.written, report.skipped) == (6, 0)
    assert len(read_jsonl(decisions_path(tmp_path, "toy", "strong"))) == 6


def test_resuming_probs_with_another_predictor_is_refused(tmp_path):
    write_scenes(tmp_path, toy_scenes(4))
    _decisions(tmp_path)
    _probs(tmp_path, limit=2)
    with pytest.raises(ConfigError, match="model: 'fake' -> 'other'"):
        run_probs(tmp_path, "toy", "other", "strong", chunk_size=2, simulator=FakeSim(), progress=False)


def test_an_empty_stage_file_is_not_a_finished_stage(tmp_path):
    write_scenes(tmp_path, toy_scenes(4))
    path = decisions_path(tmp_path, "toy", "strong")
    path.parent.mkdir(parents=True)
    path.write_text("")  # what a failed `decisions` run leaves
    with pytest.raises(DataError, match="holds no records .*decisions.* fail"):
        _probs(tmp_path)
    _decisions(tmp_path)
    probs_path(tmp_path, "toy", "strong").parent.mkdir(parents=True)
    probs_path(tmp_path, "toy", "strong").write_text("\n")
    with pytest.raises(DataError, match="holds no records .*probs"):
        load_scored_scenes(tmp_path, "toy", ("strong",))
