"""example_scenes: a few real eval scenes to try a simulator on, in one call."""

from __future__ import annotations

from usermirrorer.sim import example_scenes


def test_example_scenes_are_seeded_eval_scenes_of_the_requested_size(ml100k_project):
    scenes = example_scenes("ml-100k", n=3, exposure_size=4, project_path=ml100k_project)
    assert len(scenes) == 3
    for scene in scenes:
        assert scene["dataset"] == "ml-100k"
        assert len(scene["impression_list"]) == len(scene["text"]["action_list"]) == 4
        assert scene["impression_list"][scene["item_pos"]] == scene["item_id"]
        assert scene["text"]["profile"] and scene["text"]["history"]
    # same seed, same scenes (another seed would refit the collaborative embedding: ~15 s)
    assert example_scenes("ml-100k", n=3, exposure_size=4, project_path=ml100k_project) == scenes
    assert len({(s["user_id"], s["timestamp"]) for s in scenes}) == 3
