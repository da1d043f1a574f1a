"""The scene type: one constructor for every caller, its helpers and their errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import usermirrorer.data_pipeline as ground
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, sample_scenes
from usermirrorer.data_pipeline.scene import (
    render_scene,
    reorder_options,
    reversed_scene,
    scene_fields,
    scene_id,
    scene_target,
    scene_text,
)
from usermirrorer.envs import ENV_ID
from usermirrorer.envs.rewards import RATING_LEVELS, rating_scenes
from usermirrorer.errors import DataError

SAMPLED_KEYS = ["dataset", "user_id", "item_id", "timestamp", "impression_list", "item_pos", "choice_cnt", "text"]
ENV_KEYS = ["dataset", "scene_id", "user_id", "timestamp", "impression_list", "history_item_ids",
            "outside_option", "text"]
RATING_KEYS = ["dataset", "scene_id", "user_id", "timestamp", "impression_list", "history_item_ids",
               "outside_option", "rating_query", "text"]


def logged(**kw):
    base = {"dataset": "toy", "user_id": "u1", "timestamp": "1998-03-04 12:00:00",
            "impression_list": ["m1", "m2", "m3"], "item_id": "m2", "item_pos": 1, "profile": "age: 30",
            "history": "m0 (2 days ago)", "action_list": ["M1", "M2", "M3"]}
    return render_scene(**{**base, **kw})


def env_scene(allow_skip=True):
    return render_scene(dataset="toy", scene_id="u1@1998-03-01 00:00:00#2", user_id="u1",
                        timestamp="1998-03-04 12:00:00", impression_list=["m1", "m2", "m3"],
                        history_item_ids=["m0"], outside_option=allow_skip, profile="age: 30",
                        history="m0 (2 days ago)",
                        action_list=["M1", "M2", "M3"] + (["None of these"] if allow_skip else []))


def test_logged_scene_is_the_design_record():
    scene = logged()
    assert list(scene) == SAMPLED_KEYS
    assert scene["choice_cnt"] == 3 and scene["item_pos"] == 1
    assert list(scene["text"]) == ["profile", "history", "action_list"]


def test_sampler_scenes_have_the_design_keys(toy, tracing):
    records, _ = sample_scenes(toy, SceneConfig(n_samples=20, seed=1, embedder="hashing"), tracing)
    assert records and all(list(r) == SAMPLED_KEYS for r in records)
    assert all(r["choice_cnt"] == len(r["impression_list"]) == len(r["text"]["action_list"]) for r in records)


def test_env_scene_keys(small_ds, fake_model):
    env = gym.make(ENV_ID, dataset=small_ds, model=fake_model, exposure_size=4, allow_skip=True).unwrapped
    env.reset(seed=0)
    scene = env.build_scene(np.arange(4))
    assert list(scene) == ENV_KEYS and scene["outside_option"] is True
    assert env_scene() == render_scene(**scene_fields(env_scene()))


def test_rating_scenes_keys_and_levels():
    asc, desc = rating_scenes(env_scene(), "m2", "M2")
    for scene, order in ((asc, "asc"), (desc, "desc")):
        assert list(scene) == RATING_KEYS
        assert scene["scene_id"] == f"u1@1998-03-01 00:00:00#2:rating-{order}"
        assert scene["outside_option"] is False and scene["impression_list"] == ["m2"] * 5
        assert scene["text"]["profile"] == "age: 30" and len(scene["text"]["action_list"]) == 5
    assert asc["rating_query"] == {"item_id": "m2", "levels": list(RATING_LEVELS)}
    assert desc["rating_query"]["levels"] == list(reversed(RATING_LEVELS))
    assert "item_pos" not in rating_scenes(logged(), "m2", "M2")[0]  # the real choice is not carried


def test_optional_keys_are_left_out():
    scene = render_scene(dataset="d", user_id="u", timestamp="t", impression_list=[], profile="p",
                         history="h", action_list=[])
    assert list(scene) == ["dataset", "user_id", "timestamp", "impression_list", "text"]


def test_real_choice_comes_whole():
    with pytest.raises(DataError, match="come together"):
        logged(item_pos=None)
    with pytest.raises(DataError, match="item_pos 3 is not an index"):
        logged(item_pos=3)


def test_reversed_scene_maps_back():
    scene = env_scene()
    rev = reversed_scene(scene, 3)
    assert list(rev) == ENV_KEYS and rev["scene_id"] == scene["scene_id"] + "~reversed"
    assert rev["impression_list"] == ["m3", "m2", "m1"]
    assert rev["text"]["action_list"] == ["M3", "M2", "M1", "None of these"]  # outside option stays last
    assert reversed_scene(rev, 3)["impression_list"] == scene["impression_list"]
    # a distribution over the reversed options, mapped back, follows the items
    p_rev = np.array([0.5, 0.3, 0.1, 0.1])
    back = np.concatenate([p_rev[:3][::-1], p_rev[3:]])
    assert back[scene["impression_list"].index("m3")] == 0.5


def test_reorder_moves_the_real_item_and_rating_levels():
    scene = reorder_options(logged(), [2, 0, 1], "shift")
    assert list(scene) == SAMPLED_KEYS[:1] + ["scene_id"] + SAMPLED_KEYS[1:]
    assert scene["scene_id"] == "toy:u1:m2:1998-03-04 12:00:00~shift"
    assert scene["impression_list"] == ["m3", "m1", "m2"] and scene["item_pos"] == 2
    assert scene_target(scene) == 2 and scene["text"]["action_list"][2] == "M2"
    rating = reversed_scene(rating_scenes(env_scene(), "m2", "M2")[0])
    assert rating["rating_query"]["levels"] == list(reversed(RATING_LEVELS))
    with pytest.raises(DataError, match="permutation"):
        reorder_options(logged(), [0, 0, 1], "bad")


def test_scene_id_default_and_explicit():
    assert scene_id(logged()) == "toy:u1:m2:1998-03-04 12:00:00"
    assert scene_id({**logged(), "scene_id": 7}) == "7"


def test_scene_text_errors_name_the_scene():
    assert scene_text(logged()) == ("age: 30", "m0 (2 days ago)", ["M1", "M2", "M3"])
    with pytest.raises(DataError, match=r"scene 'toy:u1:m2:1998-03-04 12:00:00': field 'text'"):
        scene_text({**logged(), "text": None})
    with pytest.raises(DataError, match=r"scene 'x': text.action_list"):
        scene_text({"scene_id": "x", "text": {"profile": "p", "history": "h", "action_list": "A"}})
    with pytest.raises(DataError, match="must be a dict"):
        scene_text(["not", "a", "scene"])


def test_scene_target_errors_name_the_scene():
    assert scene_target({k: v for k, v in logged().items() if k != "item_pos"}) == 1  # found by id
    with pytest.raises(DataError, match=r"scene 'toy:u1:m9:1998-03-04 12:00:00': item_pos"):
        scene_target({**{k: v for k, v in logged().items() if k != "item_pos"}, "item_id": "m9"})
    with pytest.raises(DataError, match=r"eval.jsonl:3: item_pos"):
        scene_target({**logged(), "item_pos": 5}, "eval.jsonl:3")


def test_face_exports_the_ground():
    for name in ground.__all__:
        assert getattr(ground, name) is not None
    assert {"render_scene", "Scene", "load_raws", "read_jsonl", "TIME_FORMAT"} <= set(ground.__all__)
