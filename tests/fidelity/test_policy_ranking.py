"""The policy-ranking benchmark: real-log scores, agreement statistics, common random numbers,
the LLM outside option, resuming, and a run on real ML-100K."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.envs import RecEnv
from usermirrorer.envs.agents import make_recommender
from usermirrorer.envs.arena import run_arena
from usermirrorer.fidelity.policy_ranking import (
    Episode,
    PolicyRankingConfig,
    cache_stem,
    plan_episodes,
    real_log_scores,
    run_policy_ranking,
    simulate_agents,
    slate_metrics,
)
from usermirrorer.fidelity.rank_agreement import (
    bootstrap_agreement,
    kendall_tau_b,
    pairwise_order_accuracy,
    spearman,
    wrong_pairs,
)
from usermirrorer.sim import SimOptions, UserSimulator
from usermirrorer.sim.baselines import make_baseline
from usermirrorer.sim.outside_option import QuantileOutsideOption


class FixedSlate:
    """A recommender that always shows the same items (to hand-compute its real-log score)."""

    name = "fixed"

    def __init__(self, slate):
        self.slate = np.asarray(slate, dtype=np.int64)

    def recommend(self, obs, info):
        return self.slate

    def update(self, obs, slate, reward, info):
        pass


def _hand_log() -> RawDataset:
    # user a: items 0..7 at t = 10, 20, ... 80; user b: items 7, 6, ..., 2 at t = 10 .. 60
    users = [0] * 8 + [1] * 6
    items = list(range(8)) + [7, 6, 5, 4, 3, 2]
    times = [10 * (i + 1) for i in range(8)] + [10 * (i + 1) for i in range(6)]
    n_items = 10
    return RawDataset(
        name="hand", user_ids=np.array(["a", "b"], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        user_description=[{}, {}], user_features=[{}, {}],
        item_description=[{"title": f"Item {i}"} for i in range(n_items)], item_features=[{}] * n_items,
        inter_user=np.array(users, dtype=np.int32), inter_item=np.array(items, dtype=np.int32),
        inter_time=np.array(times, dtype=np.int64), behavior={},
    )


def test_real_log_score_equals_a_hand_computation():
    ds = _hand_log()
    # user a from t=40: history 0,1,2; next three real items 3,4,5. User b from t=30: history 7,6; next 5,4,3
    episodes = plan_episodes(ds, ["a", "b"], next_n=3, min_history=2, starts_per_user=10, seed=0)
    by_key = {(e.user_id, e.start): e for e in episodes}
    assert by_key[("a", 40)].next_items == (3, 4, 5) and by_key[("b", 30)].next_items == (5, 4, 3)
    # every start has >= 2 before and >= 3 at or after: a has t=30..60, b has t=30, 40
    assert sorted(by_key) == [("a", 30), ("a", 40), ("a", 50), ("a", 60), ("b", 30), ("b", 40)]
    chosen = [by_key[("a", 40)], by_key[("b", 30)]]
    scores = real_log_scores(ds, {"fixed": FixedSlate([9, 4, 8])}, chosen, k=3, seed=0)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)  # 3 relevant items, K = 3
    # slate (9, 4, 8): one relevant item at rank 2 for both users
    assert scores["ndcg"][:, 0] == pytest.approx([(1 / np.log2(3)) / ideal] * 2)
    assert scores["hit"][:, 0].tolist() == [1.0, 1.0]
    assert scores["precision"][:, 0] == pytest.approx([1 / 3, 1 / 3])
    assert slate_metrics([3, 4, 5], [3, 4, 5])["ndcg"] == pytest.approx(1.0)
    assert slate_metrics([5, 9, 3], [3, 4, 5])["ndcg"] == pytest.approx((1 + 1 / np.log2(4)) / ideal)
    assert slate_metrics([8, 9, 0], [3, 4, 5]) == {"ndcg": 0.0, "hit": 0.0, "precision": 0.0}


def test_episodes_come_in_rounds_of_distinct_users(small_ds):
    episodes = plan_episodes(small_ds, list(small_ds.user_ids), next_n=2, min_history=2, starts_per_user=3, seed=1)
    users = [e.user_id for e in episodes]
    n_users = len(set(users))
    assert len(set(users[:n_users])) == n_users  # the first round holds every user once
    for e in episodes:
        u = small_ds.user_index[e.user_id]
        rows = small_ds.rows_before(u, e.start)
        assert rows.stop - rows.start >= 2
        after = small_ds.inter_item[rows.stop : small_ds.user_rows(u).stop]
        assert e.next_items == tuple(after[:2].tolist())
    assert episodes == plan_episodes(small_ds, list(small_ds.user_ids), 2, 2, 3, seed=1)


def test_rank_correlations_match_scipy():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(3, 9))
        x = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)  # ties in half the trials
        y = rng.integers(0, 4, n).astype(float) if trial % 3 else rng.normal(size=n)
        if len(set(x)) == 1 or len(set(y)) == 1:
            continue
        assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
        assert kendall_tau_b(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
    real = np.array([4.0, 3.0, 2.0, 1.0])
    assert pairwise_order_accuracy(real, real) == 1.0
    assert pairwise_order_accuracy(-real, real) == 0.0
    # one of six pairs swapped (the last two), one tied (the first two): (4 + 0.5) / 6
    assert pairwise_order_accuracy(np.array([4.0, 4.0, 1.0, 2.0]), real) == pytest.approx(4.5 / 6)
    assert wrong_pairs(np.array([4.0, 4.0, 1.0, 2.0]), real, list("abcd")) == [("a", "b"), ("c", "d")]


def test_bootstrap_resamples_users_and_brackets_the_point():
    rng = np.random.default_rng(1)
    quality = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    real = quality + rng.normal(0, 0.2, (80, 5))
    sim = quality + rng.normal(0, 0.2, (80, 5))
    groups = np.repeat(np.arange(40), 2)
    a = bootstrap_agreement(sim, real, groups, n_bootstrap=300, seed=0)
    assert a.n_groups == 40 and a.spearman_ci[0] <= a.spearman <= a.spearman_ci[1] + 1e-12
    assert a.spearman > 0.5
    flipped = bootstrap_agreement(-sim, real, groups, n_bootstrap=300, seed=0)
    assert flipped.spearman == pytest.approx(-a.spearman) and flipped.pairwise_accuracy < 0.5


def test_common_random_numbers_same_slates_same_outcomes(small_ds):
    """Two agents proposing the same slates meet the same users and get identical outcomes, even
    from a simulator that samples picks; the random agent's slates do not depend on what ran before."""
    model = make_baseline("popularity", small_ds, skip_quantile=0.5)
    agents = {"pop-a": make_recommender("popularity", small_ds, 4), "pop-b": make_recommender("popularity", small_ds, 4),
              "rand-a": make_recommender("random", small_ds, 4, seed=3),
              "rand-b": make_recommender("random", small_ds, 4, seed=3)}
    agents["rand-b"].recommend({"history": np.array([-1])}, {})  # advance b's stream: begin_episode resets it
    logs = run_arena(agents, lambda: RecEnv(small_ds, model, 4, allow_skip=True, patience=2, max_steps=4), 12, seed=5)
    for a, b in (("pop-a", "pop-b"), ("rand-a", "rand-b")):
        for la, lb in zip(logs[a], logs[b]):
            assert la.user_id == lb.user_id
            assert [s.tolist() for s in la.slates] == [s.tolist() for s in lb.slates]
            assert la.rewards == lb.rewards and la.expected_clicks == lb.expected_clicks
    assert any(r < 1 for log in logs["pop-a"] for r in log.rewards)  # the picks were really sampled


def test_llm_outside_option_scores_at_the_reference_quantile(small_ds, tiny_model_dir):
    sim = UserSimulator(str(tiny_model_dir), options=SimOptions(mode="likelihood", score_temperature=0.7,
                                                                 batch_size=4), dtype="float32")
    wrapped = QuantileOutsideOption(sim, small_ds, n_reference=6, quantile=0.75, seed=2)
    env = RecEnv(small_ds, wrapped, 3, allow_skip=True, max_steps=2)
    assert env.mode == "likelihood"
    env.reset(seed=0)
    scene = env.build_scene(np.array([1, 2, 3]))
    (answer,) = wrapped.choice_probs([scene])
    # by hand: the items alone, and the reference items in the same context
    items_only = {**scene, "outside_option": False,
                  "text": {**scene["text"], "action_list": scene["text"]["action_list"][:-1]}}
    reference = wrapped._reference_scene(scene)
    assert reference["text"]["history"] == scene["text"]["history"] and len(reference["impression_list"]) == 6
    alone, ref = sim.choice_probs([items_only, reference], mode="likelihood")
    scores = np.append(alone.scores, np.quantile(ref.scores, 0.75))
    expected = np.exp(scores / 0.7 - (scores / 0.7).max())
    np.testing.assert_allclose(answer.probs, expected / expected.sum(), atol=1e-9)
    # the threshold of an equal context is remembered: a second slate scores no reference scene
    calls = []
    original = sim.choice_probs
    sim.choice_probs = lambda scenes, **kw: calls.append(len(scenes)) or original(scenes, **kw)
    wrapped.choice_probs([env.build_scene(np.array([4, 5, 6]))])
    assert calls == [1]
    obs, reward, *_ , info = env.step(np.array([1, 2, 3]))
    assert info["probs"].shape == (4,) and 0 < info["expected_click"] < 1


def test_an_interrupted_simulation_resumes_to_the_same_result(small_ds, tmp_path):
    episodes = plan_episodes(small_ds, list(small_ds.user_ids), 2, 2, 2, seed=0)
    config = PolicyRankingConfig(steps=2, slate_size=4, min_history=2, progress=False)
    model = make_baseline("collaborative", small_ds)

    def agents():
        return {n: make_recommender(n, small_ds, 4, seed=0) for n in ("random", "popularity", "linucb")}

    whole_agents = agents()
    whole = simulate_agents(lambda: model, small_ds, whole_agents, episodes, config, tmp_path / "whole.jsonl")

    class Crash(RuntimeError):
        pass

    class Failing:
        def __init__(self, after):
            self.left = after

        def choice_probs(self, scenes, **kw):
            self.left -= 1
            if self.left < 0:
                raise Crash("power cut")
            return model.choice_probs(scenes, **kw)

    cache = tmp_path / "part.jsonl"
    with pytest.raises(Crash):
        simulate_agents(lambda: Failing(9), small_ds, agents(), episodes, config, cache)
    n_cached = len(cache.read_text().splitlines())
    assert 0 < n_cached < len(episodes)
    resumed_agents = agents()
    resumed = simulate_agents(lambda: model, small_ds, resumed_agents, episodes, config, cache)
    assert resumed["played"] == len(episodes) - n_cached
    np.testing.assert_array_equal(resumed["expected_click"], whole["expected_click"])
    np.testing.assert_array_equal(resumed["click"], whole["click"])
    np.testing.assert_allclose(resumed_agents["linucb"].A, whole_agents["linucb"].A)
    again = simulate_agents(lambda: pytest.fail("a finished cache must not build the model"), small_ds, agents(),
                            episodes, config, cache)
    assert again["played"] == 0
    np.testing.assert_array_equal(again["expected_click"], whole["expected_click"])


def test_policy_ranking_on_ml100k(ml100k_project, tmp_path, tiny_model_dir):
    """Real ML-100K: the log-only simulators on every held-out user, an LLM on a few episodes."""
    config = PolicyRankingConfig(project_path=str(ml100k_project), results_dir=str(tmp_path / "results"),
                                 starts_per_user=1, llm_episodes=3, llm_fit_scenes=8, fit_scenes=200,
                                 simulators=("random", "popularity", "collaborative", "cooccurrence", "mnl", "base"),
                                 base_model=str(tiny_model_dir), embedder="hashing", n_bootstrap=50,
                                 batch_size=8, progress=False, backend_kwargs={"dtype": "float32"})
    result = run_policy_ranking(config)
    saved = json.loads((tmp_path / "results" / "policy_ranking.json").read_text())
    assert saved["simulators"].keys() == result["simulators"].keys() == set(config.simulators)
    assert (tmp_path / "results" / "policy_ranking.png").stat().st_size > 0
    md = (tmp_path / "results" / "policy_ranking.md").read_text()
    assert "Spearman" in md and "item-knn" in md
    real = result["real_log"]["ndcg"]
    # the logs separate the recommenders: collaborative filtering beats random slates by far
    assert real["item-knn"] > 5 * real["random"] and real["collaborative"] > 5 * real["random"]
    sims = result["simulators"]
    assert sims["popularity"]["episodes"] == result["setup"]["episodes"] > 150
    assert sims["base"]["episodes"] == 3 and sims["base"]["temperature"] > 0
    assert sims["random"]["agreement"]["spearman"] != sims["random"]["agreement"]["spearman"]  # NaN: all tied
    assert sims["collaborative"]["agreement"]["spearman"] > 0.3
    assert all(0 <= v <= 1 for s in sims.values() for v in s["expected_click"].values())
    assert result["skipped"] == {}
    # a rerun reads every episode back and plays none
    again = run_policy_ranking(config)
    assert all(s["played"] == 0 for s in again["simulators"].values())
    assert again["simulators"]["mnl"]["expected_click"] == sims["mnl"]["expected_click"]


def test_trained_simulator_missing_is_left_out_with_the_command(tmp_path):
    # a project of its own: the shared ML-100K project may hold a training of another test
    config = PolicyRankingConfig(project_path=str(tmp_path / "project"), results_dir=str(tmp_path), starts_per_user=1,
                                 simulators=("popularity", "trained"), embedder="hashing", n_bootstrap=20,
                                 fit_scenes=50, progress=False)
    result = run_policy_ranking(config)
    assert "usermirrorer train" in result["skipped"]["trained"]
    assert set(result["simulators"]) == {"popularity"}


def test_episode_options_are_reset_options():
    e = Episode("u1", 86400, (1, 2))
    assert e.reset_options == {"user_id": "u1", "start_time": "1970-01-02 00:00:00"}


def test_a_retrained_checkpoint_gets_its_own_episode_cache(tmp_path):
    # the cache of the "trained" simulator once outlived a retraining and was read back as the
    # new model's answers: its file name now carries the weights' size and mtime
    import os

    model = tmp_path / "ex-100"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"x" * 10)
    first = cache_stem("trained", str(model))
    assert first.startswith("trained-") and cache_stem("trained", str(model)) == first
    weights.write_bytes(b"y" * 11)
    os.utime(weights, (1_000_000_000, 1_000_000_000))
    assert cache_stem("trained", str(model)) != first
    assert cache_stem("trained", str(tmp_path / "ex-200")) not in (first, cache_stem("trained", str(model)))
    assert cache_stem("popularity", None) == "popularity"  # log-only simulators: their name
