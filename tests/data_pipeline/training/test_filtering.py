"""The uncertainty filter on small hand-made probability tables; every number is computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from usermirrorer.data_pipeline.training.preference import filter_preferences
from usermirrorer.data_pipeline.training.uncertainty import (
    FilterConfig,
    pick_pairs,
    scene_uncertainty,
    score_thoughts,
    stratified_quota,
    stratified_select,
    thought_table,
)
from usermirrorer.errors import ConfigError, DataError


def h2(*p: float) -> float:
    return -sum(x * math.log2(x) for x in p if x > 0)


def scene(sid: str, item_pos: int, strong: list, weak: list, dataset: str = "d") -> dict:
    return {"scene_id": sid, "dataset": dataset, "item_pos": item_pos, "choice_cnt": len(strong[0]),
            "probs": {"strong": strong, "weak": weak}}


def test_thought_table_orders_rows_and_pads():
    scenes = [scene("a", 0, [[0.5, 0.5], [1, 0]], [[0, 1]]), scene("b", 2, [[0.2, 0.3, 0.5]], [[0, 0, 1]])]
    table, probs = thought_table(scenes)
    assert table[["scene_id", "thought_idx"]].values.tolist() == [["a", 0], ["a", 1], ["a", 0], ["b", 0], ["b", 0]]
    assert table["version"].astype(str).tolist() == ["strong", "strong", "weak", "strong", "weak"]
    assert probs.shape == (5, 3)
    np.testing.assert_array_equal(probs[0], [0.5, 0.5, 0.0])


def test_entropies_and_uncertainties_by_hand():
    # scene a: K=2, real item A. strong: [1,0],[.5,.5]; weak: [0,1],[.5,.5],[.5,.5]
    # scene b: K=4, real item D. strong: [.25]*4 twice; weak: [.5,.5,0,0],[0,0,.5,.5]
    scenes = [
        scene("a", 0, [[1, 0], [0.5, 0.5]], [[0, 1], [0.5, 0.5], [0.5, 0.5]]),
        scene("b", 3, [[0.25] * 4, [0.25] * 4], [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]),
    ]
    table, probs = thought_table(scenes)
    thoughts = score_thoughts(table, probs, np.random.default_rng(0))
    np.testing.assert_allclose(thoughts["entropy"], [0, 1, 0, 1, 1, 2, 2, 1, 1], atol=1e-12)
    assert (thoughts["entropy"] >= 0).all() and not np.signbit(thoughts["entropy"]).any()
    # log-loss of the real item, bits: a strong -log2(1)=0, -log2(.5)=1; b strong -log2(.25)=2
    np.testing.assert_allclose(thoughts["logloss"].iloc[:2], [0, 1])
    np.testing.assert_allclose(thoughts["logloss"].iloc[5:7], [2, 2])
    np.testing.assert_allclose(thoughts["logloss"].iloc[8], 1)

    unc = scene_uncertainty(thoughts, probs).set_index("scene_id")
    # a strong: mean p = [.75,.25]; total = H(.75,.25); model = (0+1)/2
    assert unc.at["a", "strong_total_uncertainty"] == pytest.approx(h2(0.75, 0.25))
    assert unc.at["a", "strong_model_uncertainty"] == pytest.approx(0.5)
    assert unc.at["a", "strong_data_uncertainty"] == pytest.approx(h2(0.75, 0.25) - 0.5)
    # a weak: mean p = [1/3, 2/3]; model = (0+1+1)/3
    assert unc.at["a", "weak_total_uncertainty"] == pytest.approx(h2(1 / 3, 2 / 3))
    assert unc.at["a", "weak_model_uncertainty"] == pytest.approx(2 / 3)
    assert unc.at["a", "diff_model_uncertainty"] == pytest.approx(2 / 3 - 0.5)
    # b: strong total = model = 2 (no disagreement), weak total = H(.25 x4) = 2, model = 1
    assert unc.at["b", "strong_total_uncertainty"] == pytest.approx(2)
    assert unc.at["b", "strong_data_uncertainty"] == pytest.approx(0)
    assert unc.at["b", "weak_data_uncertainty"] == pytest.approx(1)
    assert unc.at["b", "diff_model_uncertainty"] == pytest.approx(1 - 2)
    assert unc.at["a", "strong_n_thoughts"] == 2 and unc.at["a", "weak_n_thoughts"] == 3


def test_behaviour_sampling_is_inverse_cdf_of_one_uniform_per_row():
    scenes = [scene("a", 1, [[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]], [[0.0, 0.0, 1.0]])]
    table, probs = thought_table(scenes)
    thoughts = score_thoughts(table, probs, np.random.default_rng(7))
    u = np.random.default_rng(7).random(3)
    cdfs = [[0.2, 0.5, 1.0], [0.6, 1.0, 1.0], [0.0, 0.0, 1.0]]
    expected = [int(np.sum(np.asarray(c) <= x)) for c, x in zip(cdfs, u)]
    expected = [min(e, last) for e, last in zip(expected, [2, 1, 2])]
    assert thoughts["behavior"].tolist() == expected
    assert thoughts["preference"].tolist() == [e == 1 for e in expected]
    # the weak thought puts all mass on C: whatever u is, C is drawn
    assert thoughts["behavior"].iloc[2] == 2


def test_sampled_frequencies_follow_the_distribution():
    p = [0.1, 0.2, 0.3, 0.4]
    scenes = [scene("a", 0, [p] * 20_000, [p])]
    table, probs = thought_table(scenes)
    thoughts = score_thoughts(table, probs, np.random.default_rng(1))
    freq = np.bincount(thoughts["behavior"], minlength=4) / len(thoughts)
    np.testing.assert_allclose(freq, p, atol=0.015)
    # zero-probability options are never drawn
    scenes = [scene("z", 0, [[0.0, 1.0, 0.0]] * 500, [[0.5, 0.0, 0.5]] * 500)]
    table, probs = thought_table(scenes)
    thoughts = score_thoughts(table, probs, np.random.default_rng(2))
    assert set(thoughts.loc[thoughts["version"] == "strong", "behavior"]) == {1}
    assert set(thoughts.loc[thoughts["version"] == "weak", "behavior"]) == {0, 2}


def _thoughts(rows: list[tuple]) -> pd.DataFrame:
    """(scene_idx, version, thought_idx, entropy, behavior, preference)."""
    df = pd.DataFrame(rows, columns=["scene_idx", "version", "thought_idx", "entropy", "behavior", "preference"])
    df["version"] = pd.Categorical(df["version"], categories=["strong", "weak"])
    return df


def test_chosen_is_lowest_entropy_strong_hit_and_rejected_lowest_entropy_miss():
    thoughts = _thoughts([
        # scene 0: strong hits at entropies .9 and .4 -> chosen = strong#2; misses: strong .7, weak .3 -> weak#1
        (0, "strong", 0, 0.9, 1, True), (0, "strong", 1, 0.7, 0, False), (0, "strong", 2, 0.4, 1, True),
        (0, "weak", 0, 0.1, 1, True), (0, "weak", 1, 0.3, 2, False),
        # scene 1: only weak hits -> no chosen -> dropped
        (1, "strong", 0, 0.2, 0, False), (1, "weak", 0, 0.1, 3, True),
        # scene 2: no hit at all -> noise, dropped
        (2, "strong", 0, 0.2, 0, False), (2, "weak", 0, 0.1, 0, False),
        # scene 3: every thought hits -> no rejected -> dropped
        (3, "strong", 0, 0.5, 2, True), (3, "weak", 0, 0.5, 2, True),
        # scene 4: tie in entropy between strong and weak misses -> strong (version order) wins;
        # tie between two strong hits -> lower thought index wins
        (4, "strong", 0, 0.6, 4, True), (4, "strong", 1, 0.6, 4, True), (4, "strong", 2, 0.2, 0, False),
        (4, "weak", 0, 0.2, 1, False),
    ])
    pairs = pick_pairs(thoughts)
    assert pairs.attrs["scenes_with_hit"] == 4  # scenes 0, 1, 3, 4
    assert pairs["scene_idx"].tolist() == [0, 4]
    p0, p4 = pairs.iloc[0], pairs.iloc[1]
    assert (p0.chosen_version, p0.chosen_thought_idx, p0.chosen_behavior) == ("strong", 2, 1)
    assert (p0.rejected_version, p0.rejected_thought_idx, p0.rejected_behavior) == ("weak", 1, 2)
    assert p0.chosen_entropy == pytest.approx(0.4) and p0.rejected_entropy == pytest.approx(0.3)
    assert (p4.chosen_version, p4.chosen_thought_idx) == ("strong", 0)
    assert (p4.rejected_version, p4.rejected_thought_idx, p4.rejected_behavior) == ("strong", 2, 0)

    # rejected restricted to weak thoughts
    pairs = pick_pairs(thoughts, FilterConfig(rejected_from=("weak",)))
    assert pairs.set_index("scene_idx").at[4, "rejected_version"] == "weak"


def test_stratified_quota_largest_remainder_by_hand():
    # 5 of 10: exact 2.5 / 1.5 / 1.0 -> floors 2,1,1, one left; .5 ties -> larger group a
    assert stratified_quota({"a": 5, "b": 3, "c": 2}, 5) == {"a": 3, "b": 1, "c": 1}
    # 4 of 10: 2.8 / 0.8 / 0.4 -> floors 2,0,0, two left -> x then y
    assert stratified_quota({"x": 7, "y": 2, "z": 1}, 4) == {"x": 3, "y": 1, "z": 0}
    # 6 of 12 with equal groups: exact halves
    assert stratified_quota({("d", 3): 4, ("d", 5): 4, ("e", 5): 4}, 6) == {("d", 3): 2, ("d", 5): 2, ("e", 5): 2}
    # asking for more than there is keeps everything
    assert stratified_quota({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}
    # sums always to the request and never exceed sizes
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = {i: int(s) for i, s in enumerate(rng.integers(1, 40, size=6))}
        total = int(rng.integers(1, sum(sizes.values())))
        q = stratified_quota(sizes, total)
        assert sum(q.values()) == total and all(q[k] <= sizes[k] for k in sizes)


def test_stratified_select_takes_highest_diff_in_each_stratum():
    scenes = pd.DataFrame({
        "scene_idx": range(10),
        "dataset": ["ml"] * 5 + ["ml"] * 3 + ["beauty"] * 2,
        "choice_cnt": [5] * 5 + [7] * 3 + [5] * 2,
        "diff_model_uncertainty": [0.1, 0.9, 0.5, 0.9, -0.2, 0.3, 0.8, 0.3, 0.0, 0.4],
    })
    selected = stratified_select(scenes, FilterConfig(filtered_num=5))
    # quotas (beauty,5)=1, (ml,5)=3 (5 of 10 -> 2.5 rounded up, larger group), (ml,7)=1
    # (ml,5): 0.9 (1), 0.9 (3), 0.5 (2); (ml,7): 0.8 (6); (beauty,5): 0.4 (9)
    assert selected["scene_idx"].tolist() == [1, 2, 3, 6, 9]
    ascending = stratified_select(scenes, FilterConfig(filtered_num=5, descending=False))
    # lowest first: (ml,5) -0.2 (4), 0.1 (0), 0.5 (2); (ml,7) 0.3 tie -> lower index 5; (beauty,5) 0.0 (8)
    assert ascending["scene_idx"].tolist() == [0, 2, 4, 5, 8]


def test_thresholds_and_whole_stage_counts():
    scenes = [
        scene("a", 0, [[1, 0], [0.5, 0.5]], [[0, 1], [0.5, 0.5]]),    # strong hit (H=0), weak miss (H=0)
        scene("b", 0, [[0, 1], [0, 1]], [[0, 1], [0, 1]]),            # no hit -> noise
        scene("c", 1, [[0, 1], [0.9, 0.1]], [[1, 0], [0.7, 0.3]]),   # strong hit (H=0), miss weak#0 (H=0)
    ]
    _, selected, report = filter_preferences(scenes, FilterConfig(filtered_num=10), np.random.default_rng(3), render=False)
    assert (report.scenes_in, report.thoughts_in) == (3, 12)
    assert report.scenes_with_hit == 2 and report.scenes_with_pair == 2 and report.scenes_selected == 2
    assert selected["scene_id"].tolist() == ["a", "c"]
    assert selected["chosen_entropy"].tolist() == [0, 0]
    # diff for a: weak model unc (0+1)/2 - strong (0+1)/2 = 0; c: (0+H(.7,.3))/2 - (0+H(.9,.1))/2 > 0
    _, selected, report = filter_preferences(scenes, FilterConfig(filtered_num=10, min_rank_value=0.01),
                                             np.random.default_rng(3), render=False)
    assert selected["scene_id"].tolist() == ["c"] and report.scenes_after_thresholds == 1
    assert selected["diff_model_uncertainty"].iloc[0] == pytest.approx((h2(0.7, 0.3) - h2(0.9, 0.1)) / 2)


def test_malformed_inputs_raise_data_errors():
    with pytest.raises(DataError, match="sum=0.7"):
        thought_table([scene("a", 0, [[0.5, 0.2]], [[0.5, 0.5]])])
    with pytest.raises(DataError, match="3 probabilities for choice_cnt=2"):
        thought_table([{**scene("a", 0, [[0.5, 0.5]], [[0.5, 0.5]]), "probs": {"strong": [[0.5, 0.5]], "weak": [[0.2, 0.3, 0.5]]}}])
    with pytest.raises(DataError, match="item_pos"):
        thought_table([scene("a", 5, [[0.5, 0.5]], [[0.5, 0.5]])])
    with pytest.raises(DataError, match="no probabilities for version 'weak'"):
        thought_table([{**scene("a", 0, [[0.5, 0.5]], [[0.5, 0.5]]), "probs": {"strong": [[0.5, 0.5]]}}])
    with pytest.raises(DataError, match="missing column"):
        thought_table([{"scene_id": "a"}])


def test_config_conflicts_raise():
    with pytest.raises(ConfigError, match="versions 'strong' and 'weak'"):
        FilterConfig(versions=("strong",), rejected_from=("strong",))
    with pytest.raises(ConfigError, match="not read"):
        FilterConfig(chosen_from=("medium",))
    with pytest.raises(ConfigError, match="filtered_num"):
        FilterConfig(filtered_num=0)


def test_filter_and_direct_commands_on_project_files(tmp_path, capsys):
    import json

    from pipeline_toys import toy_scenes, write_scenes

    from usermirrorer.cli import main
    from usermirrorer.data_pipeline.training.stage import load_train_scenes

    write_scenes(tmp_path, toy_scenes(6))
    scenes = load_train_scenes(tmp_path, "toy")
    assert main(["filter", "--project-path", str(tmp_path), "--config-name", "c", "--datasets", "toy"]) == 1
    assert "run `usermirrorer decisions --dataset toy --version strong`" in capsys.readouterr().err
    for version in ("strong", "weak"):
        dec, prob = [], []
        for i, s in enumerate(scenes[:5]):  # the sixth scene is left unscored
            k, pos = s["choice_cnt"], s["item_pos"]
            sure = np.eye(k)[pos if version == "strong" and i % 2 == 0 else (pos + 1) % k]
            dec.append({"scene_id": s["scene_id"], "thoughts": [f"Thought:\nStimulus: {version} {i}"]})
            prob.append({"scene_id": s["scene_id"], "probs": [sure.tolist()]})
        for folder, name, recs in (("decisions", "decisions", dec), ("probs", "probs", prob)):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"toy_{name}_{version}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["filter", "--project-path", str(tmp_path), "--config-name", "c", "--datasets", "toy"]) == 0
    out = capsys.readouterr().out
    assert "scenes in: 5 (10 thoughts)" in out and "selected: 3" in out
    pairs = [json.loads(x) for x in (tmp_path / "datasets" / "c_pref.jsonl").read_text().splitlines()]
    # strong thoughts of scenes 0, 2, 4 are sure hits; every weak thought is a sure miss
    assert [p["scene_id"] for p in pairs] == [scenes[i]["scene_id"] for i in (0, 2, 4)]
    assert all(p["chosen_version"] == "strong" and p["rejected_version"] == "weak" for p in pairs)
    assert pairs[0]["messages_chosen"][2]["content"] == f"Thought:\nStimulus: strong 0\nBehavior: [{pairs[0]['real_behavior']}]"
    assert pairs[0]["strong_model_uncertainty"] == 0.0 and pairs[0]["diff_model_uncertainty"] == 0.0

    assert main(["filter", "--project-path", str(tmp_path), "--config-name", "d", "--datasets", "toy", "--direct"]) == 0
    direct = [json.loads(x) for x in (tmp_path / "datasets" / "d_pref.jsonl").read_text().splitlines()]
    assert len(direct) == 6 and all(d["messages_chosen"][2]["content"] == f"Behavior: [{d['chosen_behavior']}]" for d in direct)
