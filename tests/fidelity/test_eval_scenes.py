"""The fidelity benchmark's eval scenes: held-out users, K, positions, and matched negatives.

Fast tests use a small seeded synthetic log (power-law popularity); the slow one builds real
ML-100K scenes through the benchmark's own scene builder.
"""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.errors import DataError
from usermirrorer.fidelity.eval_scenes import (
    VARIANTS,
    EvalSceneSpec,
    build_eval_scenes,
    check_eval_scenes,
    option_popularity_ranks,
    pick_eval_rows,
    split_users,
    summarize_popularity_match,
)


@pytest.fixture(scope="module")
def synth():
    from usermirrorer.preprocessing.synthetic import generate_synthetic

    return generate_synthetic(n_users=150, n_items=400, n_interactions=6000, seed=0, popularity_exponent=1.0)


@pytest.fixture(scope="module")
def synth_scenes(synth):
    spec = EvalSceneSpec(dataset=synth.name, n_scenes=80, k=5, seed=0, eval_user_fraction=0.3, embedder=None)
    split = split_users(synth, spec.eval_user_fraction, spec.seed)
    return spec, split, build_eval_scenes(synth, spec, split)


def test_split_is_disjoint_seeded_and_keeps_reserved_users_out(synth):
    split = split_users(synth, 0.2, seed=4)
    assert set(split.train_users).isdisjoint(split.eval_users)
    assert set(split.train_users) | set(split.eval_users) == set(synth.user_ids.tolist())
    assert len(split.eval_users) == 30
    assert split_users(synth, 0.2, seed=4) == split
    assert split_users(synth, 0.2, seed=5).eval_users != split.eval_users
    reserved = list(synth.user_ids[:100])
    kept_out = split_users(synth, 0.2, seed=4, reserved_train_users=reserved)
    assert set(kept_out.eval_users).isdisjoint(reserved)
    with pytest.raises(DataError, match="reserved for training"):
        split_users(synth, 0.5, seed=4, reserved_train_users=reserved)
    with pytest.raises(DataError, match="trained on 1 eval user"):
        split.check_disjoint([split.eval_users[0], split.train_users[0]], "model X")
    split.check_disjoint(split.train_users, "model Y")  # train users only: fine


def test_both_variants_share_targets_and_keep_the_contract(synth_scenes):
    spec, split, scenes = synth_scenes
    assert set(scenes) == set(VARIANTS)
    keys = {v: [(s["user_id"], s["item_id"], s["timestamp"]) for s in scenes[v]] for v in VARIANTS}
    assert keys["standard"] == keys["popularity-matched"]  # same interactions, in the same order
    assert len(set(keys["standard"])) == spec.n_scenes
    for variant in VARIANTS:
        summary = check_eval_scenes(scenes[variant], spec, split, variant)
        assert summary["scenes"] == spec.n_scenes
        assert sum(summary["position_counts"]) == spec.n_scenes
        assert all(c > 0 for c in summary["position_counts"])  # every slot, the last one too
        assert all(s["scene_id"].startswith(variant + ":") for s in scenes[variant])
        assert {s["user_id"] for s in scenes[variant]} <= set(split.eval_users)
        # the options differ between variants, the real item is the same
        assert all(s["impression_list"][s["item_pos"]] == s["item_id"] for s in scenes[variant])


def test_check_eval_scenes_names_every_broken_scene(synth_scenes):
    spec, split, scenes = synth_scenes
    broken = [dict(s) for s in scenes["standard"][:3]]
    broken[0]["item_pos"] = (broken[0]["item_pos"] + 1) % 5  # no longer the real item
    broken[1]["user_id"] = split.train_users[0]
    broken[2]["text"] = {**broken[2]["text"], "action_list": broken[2]["text"]["action_list"][:4]}
    with pytest.raises(DataError) as info:
        check_eval_scenes(broken, spec, split, "hand-broken")
    problems = "\n".join(info.value.problems)
    assert "hand-broken:1: item_pos" in problems
    assert "hand-broken:2: user_id" in problems
    assert "hand-broken:3: text.action_list" in problems
    assert "fewer than the 80" in problems


def test_popularity_matched_scenes_really_match(synth, synth_scenes):
    """Through the benchmark's builder: in matched scenes the real item's popularity rank among
    its options is at chance and "pick the most popular" is at 1/K; in standard scenes the
    negatives' popularity is far from the real item's."""
    spec, _, scenes = synth_scenes
    matched = summarize_popularity_match(synth, scenes["popularity-matched"])
    standard = summarize_popularity_match(synth, scenes["standard"])
    chance = (spec.k - 1) / 2
    ranks = option_popularity_ranks(synth, scenes["popularity-matched"])["real_rank"]
    sem = ranks.std(ddof=1) / np.sqrt(len(ranks))
    assert abs(matched.mean_real_rank - chance) < 3 * sem + 0.05
    assert abs(matched.most_popular_hit_rate - 1 / spec.k) < 0.1
    assert matched.mean_abs_log_gap < 0.25 * standard.mean_abs_log_gap
    assert abs(matched.median_log_ratio) < 0.1
    # rank distribution over positions 0..K-1: every rank occurs (not always the top or bottom)
    assert len(np.unique(np.round(ranks))) == spec.k


def test_option_popularity_ranks_on_a_hand_made_log():
    from usermirrorer.data_pipeline.raw import RawDataset

    # item 0: 3 earlier interactions, item 1: 1, item 2: 1, item 3: 0 -> ranks by causal count
    ds = RawDataset(
        name="hand", user_ids=np.array(["u0", "u1", "u2", "u3"]), item_ids=np.array(["a", "b", "c", "d"]),
        user_description=[{}] * 4, user_features=[{}] * 4, item_description=[{}] * 4, item_features=[{}] * 4,
        inter_user=np.array([0, 1, 2, 0, 1, 3]), inter_item=np.array([0, 0, 0, 1, 2, 0]),
        inter_time=np.array([10, 11, 12, 13, 14, 100]),
    )
    scene = {"impression_list": ["a", "b", "c", "d"], "timestamp": "1970-01-01 00:00:50"}
    out = option_popularity_ranks(ds, [dict(scene, item_pos=0), dict(scene, item_pos=1), dict(scene, item_pos=3)])
    assert out["counts"].tolist() == [[3, 1, 1, 0]] * 3  # the interaction at t=100 is in the future
    assert out["real_rank"].tolist() == [0.0, 1.5, 3.0]  # b ties with c: mean of ranks 1 and 2
    assert out["real_is_top"].tolist() == [1.0, 0.0, 0.0]


def test_pick_eval_rows_is_seeded_and_asks_for_enough(synth):
    split = split_users(synth, 0.2, seed=0)
    a = pick_eval_rows(synth, split, 50, seed=1)
    assert np.array_equal(a, pick_eval_rows(synth, split, 50, seed=1))
    assert set(synth.user_ids[synth.inter_user[a]]) <= set(split.eval_users)
    with pytest.raises(DataError, match="fewer than the 100000 scenes"):
        pick_eval_rows(synth, split, 100_000, seed=1)


@pytest.mark.slow
def test_ml100k_matched_negatives_match_through_the_fidelity_builder(tmp_path):
    """Real ML-100K (from recbole's package files): 200 scenes per variant."""
    from usermirrorer.fidelity.workspace import load_benchmark_raws

    ds = load_benchmark_raws(tmp_path, "ml-100k")
    spec = EvalSceneSpec(n_scenes=200, seed=0, embedder=None)
    split = split_users(ds, spec.eval_user_fraction, spec.seed)
    scenes = build_eval_scenes(ds, spec, split)
    for variant in VARIANTS:
        check_eval_scenes(scenes[variant], spec, split, variant)
    matched = summarize_popularity_match(ds, scenes["popularity-matched"])
    standard = summarize_popularity_match(ds, scenes["standard"])
    assert abs(matched.mean_real_rank - 2.0) < 0.25
    assert abs(matched.most_popular_hit_rate - 0.2) < 0.07
    assert matched.mean_abs_log_gap < 0.25 * standard.mean_abs_log_gap
