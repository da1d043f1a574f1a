"""``usermirrorer fit-pool`` on the real ML-100K (the tiny random model stands in for the trained
LLM), the pool file it writes, and the environment, eval command and demo reading that file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from usermirrorer.cli import main
from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.errors import DataError
from usermirrorer.fidelity.benchmark import FidelityConfig, train_fit_scenes
from usermirrorer.fidelity.pool_fit import POOL_MEMBER_NAMES, default_pool_path
from usermirrorer.fidelity.workspace import FidelityPaths, ensure_split
from usermirrorer.sim import make_choice_model
from usermirrorer.sim.pool import LogLinearPool
from usermirrorer.sim.saved_pool import SavedPool

FIT, POOL_FIT = 60, 24


@pytest.fixture(scope="module")
def pool_project(tmp_path_factory, tiny_model_dir):
    """A project with ML-100K converted by fit-pool itself, a listwise training's manifest (the tiny
    model as its checkpoint), and the pool file at its default place."""
    project = tmp_path_factory.mktemp("pool-project")
    run = FidelityPaths(project).likelihood_ft("listwise")
    run.mkdir(parents=True)
    (run / "training.json").write_text(json.dumps({
        "loss": "listwise", "base_model": "tiny-random", "trained_user_ids": [],
        "checkpoints": [{"examples": 8, "model_dir": str(tiny_model_dir), "seconds": 1.0}]}))
    threads = torch.get_num_threads()
    try:
        code = main(["fit-pool", "--project-path", str(project), "--fit-scenes", str(FIT),
                     "--pool-fit-scenes", str(POOL_FIT), "--embedder", "hashing", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return project


def test_fit_pool_saves_a_pool_of_train_users_that_reloads_to_the_fitted_one(pool_project, capsys):
    path = default_pool_path(pool_project)
    saved = SavedPool.read(path)
    assert [m.name for m in saved.members] == list(POOL_MEMBER_NAMES) and saved.gate == "popularity"
    assert len(saved.weights) == 2 * len(POOL_MEMBER_NAMES) and np.all(np.isfinite(saved.weights))
    assert saved.fit["scenes"] == POOL_FIT and saved.fit["fit_scenes"] == FIT
    assert saved.fit["trained"] == {"loss": "listwise", "examples": 8, "base_model": "tiny-random"}
    ds = load_raws(pool_project, "ml-100k")
    split = ensure_split(ds, pool_project)
    assert set(saved.train_users) == set(split.train_users) and not set(saved.train_users) & set(split.eval_users)
    assert not saved.members[0].model.startswith("/")  # relative to the file: the project can move

    pool = make_choice_model(str(path), ds, project_path=pool_project)
    assert isinstance(pool, LogLinearPool) and str(path) in repr(pool)
    # the members rebuilt from the file (LLM checkpoint, collaborative embedding of the train
    # users, the MNLs' stored weights) give the fit's own log-loss on its own scenes
    scenes, _ = train_fit_scenes(ds, split, FidelityConfig(project_path=str(pool_project), embedder="hashing",
                                                           fit_scenes=FIT))
    scenes = scenes[:POOL_FIT]
    nll = -np.mean([np.log(r.probs[s["item_pos"]]) for r, s in zip(pool.choice_probs(scenes), scenes)])
    assert nll == pytest.approx(saved.fit["nll"], abs=1e-6)


def test_fit_pool_says_how_to_train_when_the_project_has_no_training(tmp_path, capsys):
    assert main(["fit-pool", "--project-path", str(tmp_path), "--no-progress"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no likelihood-mode training" in err and "usermirrorer train --profile cpu" in err
    assert main(["fit-pool", "--project-path", str(tmp_path), "--checkpoint", str(tmp_path), "--no-progress"]) != 0
    assert "config.json missing" in capsys.readouterr().err


def test_the_environment_and_eval_take_the_pool_file_as_a_model(pool_project, tmp_path, capsys):
    from usermirrorer.envs import RecEnv

    path = str(default_pool_path(pool_project))
    ds = load_raws(pool_project, "ml-100k")
    env = RecEnv(ds, path, 5, allow_skip=True, max_steps=2)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    # five items and "none of these", scored at the catalog quantile by every member
    assert len(info["probs"]) == 6 and sum(info["probs"]) == pytest.approx(1.0)

    split = ensure_split(ds, pool_project)
    scenes, _ = train_fit_scenes(ds, split, FidelityConfig(project_path=str(pool_project), embedder="hashing",
                                                           fit_scenes=FIT))
    scene_file = tmp_path / "scenes.jsonl"
    scene_file.write_text("".join(json.dumps({**s, "dataset": "ml-100k"}) + "\n" for s in scenes[-3:]))
    out = tmp_path / "out.jsonl"
    assert main(["eval", "--model", path, "--input", str(scene_file), "--output", str(out),
                 "--project-path", str(pool_project)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(sum(r["probs"]) == pytest.approx(1.0, abs=1e-5) for r in records)
    assert "the pool" in " ".join(capsys.readouterr().out.split())


def test_the_demo_uses_the_saved_pool_and_says_so(pool_project, capsys):
    assert main(["demo", "--project", str(pool_project), "--episodes", "1", "--steps", "1", "--agents", "random",
                 "--no-live", "--trained-from", str(pool_project)]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert f"the pool {default_pool_path(pool_project)}" in flat and "LogLinearPool(" in flat and "picked" in flat


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "something-else"}, "field 'format'"),
    ({"weights": [1.0, 2.0]}, "field 'weights': expected 10 numbers"),
    ({"gate": "mood"}, "field 'gate'"),
    ({"dataset": "ml-1m"}, "fitted on 'ml-1m'"),
])
def test_a_bad_pool_file_is_refused_naming_the_file_and_the_field(pool_project, tmp_path, change, message):
    raw = json.loads(default_pool_path(pool_project).read_text())
    bad = tmp_path / "pool.json"
    bad.write_text(json.dumps({**raw, **change}))
    with pytest.raises(DataError, match=message) as info:
        make_choice_model(str(bad), load_raws(pool_project, "ml-100k"), project_path=pool_project)
    assert str(bad) in str(info.value)


def test_a_pool_file_that_is_not_json_names_its_line(tmp_path):
    bad = tmp_path / "pool.json"
    bad.write_text('{\n "format": "usermirrorer-pool/1",\n "weights": [1,\n}')
    with pytest.raises(DataError, match=r"pool.json: line \d+: not valid JSON"):
        SavedPool.read(bad)


def test_policy_ranking_plays_the_saved_pool_and_compares_it(pool_project, tmp_path):
    from usermirrorer.fidelity.policy_ranking import PolicyRankingConfig, run_policy_ranking

    config = PolicyRankingConfig(project_path=str(pool_project), results_dir=str(tmp_path), starts_per_user=1,
                                 llm_episodes=2, fit_scenes=50, simulators=("popularity", "cooccurrence", "pool"),
                                 embedder="hashing", n_bootstrap=20, progress=False,
                                 backend_kwargs={"dtype": "float32"})
    result = run_policy_ranking(config)
    sims = result["simulators"]
    assert result["skipped"] == {} and sims["pool"]["episodes"] == 2 and sims["pool"]["kind"] == "pool"
    assert sims["cooccurrence"]["episodes"] == result["setup"]["episodes"]
    assert all(0 <= v <= 1 for s in sims.values() for v in s["expected_click"].values())
    assert {(c["a"], c["b"]) for c in result["comparisons"]} == {("pool", "popularity"), ("pool", "cooccurrence")}
    assert "| pool |" in (tmp_path / "policy_ranking.md").read_text()
    # a refitted pool is another file: its episodes are not read back from this one's
    path = default_pool_path(pool_project)
    saved = path.read_text()
    try:
        path.write_text(saved.replace('"seed": 0', '"seed": 0 ', 1))
        again = run_policy_ranking(config)
        assert again["simulators"]["pool"]["played"] == 2 and again["simulators"]["popularity"]["played"] == 0
    finally:
        path.write_text(saved)
    gone = run_policy_ranking(PolicyRankingConfig(project_path=str(tmp_path / "empty"), results_dir=str(tmp_path),
                                                  starts_per_user=1, simulators=("popularity", "pool"),
                                                  embedder="hashing", n_bootstrap=20, fit_scenes=50, progress=False))
    assert "usermirrorer fit-pool" in gone["skipped"]["pool"]
