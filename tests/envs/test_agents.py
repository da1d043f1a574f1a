"""Reference recommenders and the lockstep arena."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.data_pipeline.embeddings import HashingEmbedder, item_texts
from usermirrorer.envs import RecEnv
from usermirrorer.envs.agents import RECOMMENDERS, _top_k_unseen, make_recommender
from usermirrorer.envs.arena import METRICS, run_arena, summarize
from usermirrorer.envs.resources import load_choice_model


@pytest.mark.parametrize("name", sorted(RECOMMENDERS))
def test_recommenders_return_distinct_unseen_items(small_ds, name):
    # history_size covers every interaction, so obs["history"] is all the user has seen
    env = RecEnv(small_ds, "popularity", 5, history_size=len(small_ds.inter_item) + 10)
    content = HashingEmbedder(32).embed(item_texts(small_ds))
    agent = make_recommender(name, small_ds, 5, seed=0, content=content)
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        for _ in range(3):
            slate = agent.recommend(obs, info)
            assert env.action_space.contains(slate) and len(set(slate.tolist())) == 5
            seen = obs["history"][obs["history"] >= 0].tolist()
            assert len(seen) == obs["history_length"]
            assert not set(slate.tolist()) & set(seen)
            obs, reward, _, _, info = env.step(slate)
            agent.update(obs, slate, reward, info)


def test_top_k_breaks_ties_by_item_order():
    # integer scores over 40 items: many ties, also at the k-th place; NaN counts as the worst
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.integers(0, 6, size=40).astype(float)
        scores[rng.integers(0, 40)] = np.nan
        seen = rng.choice(40, size=5, replace=False)
        k = int(rng.integers(1, 10))
        unseen = [i for i in range(40) if i not in set(seen.tolist()) and not np.isnan(scores[i])]
        expected = sorted(unseen, key=lambda i: (-scores[i], i))[:k]
        assert _top_k_unseen(scores, seen, k).tolist() == expected


def test_log_learned_recommenders_follow_their_fit_rows(small_ds):
    """Item-kNN and sequential see only ``fit_rows``: a pair that co-occurs only outside them
    leaves no trace, one inside them does."""
    order = np.lexsort((small_ds.inter_time, small_ds.inter_user))
    users, items = small_ds.inter_user[order], small_ds.inter_item[order]
    first_user = order[users == users[0]]
    a, b = small_ds.inter_item[first_user[0]], small_ds.inter_item[first_user[1]]
    knn_all = make_recommender("item-knn", small_ds, 5)
    assert knn_all.similarity[a, b] > 0
    seq_all = make_recommender("sequential", small_ds, 5)
    assert seq_all.transitions[a, b] > 0
    rest = np.setdiff1d(np.arange(len(small_ds.inter_item)), first_user)
    knn = make_recommender("item-knn", small_ds, 5, fit_rows=rest)
    pairs = {(int(x), int(y)) for u in np.unique(small_ds.inter_user[rest])
             for x in small_ds.inter_item[rest][small_ds.inter_user[rest] == u]
             for y in small_ds.inter_item[rest][small_ds.inter_user[rest] == u]}
    assert (knn.similarity[a, b] > 0) == ((int(a), int(b)) in pairs)
    sims = knn.similarity.toarray()
    assert np.allclose(sims, sims.T) and np.all(np.diag(sims) == 0) and sims.max() <= 1 + 1e-6


def test_arena_pairs_agents_and_linucb_learns(small_ds):
    model = load_choice_model("popularity", small_ds)
    agents = {
        n: make_recommender(n, small_ds, 4, seed=0) for n in ("random", "popularity", "linucb")
    }
    rounds = []
    logs = run_arena(
        agents,
        lambda: RecEnv(small_ds, model, 4, allow_skip=True, patience=2, max_steps=5),
        episodes=40,
        seed=0,
        on_round=lambda: rounds.append(1),
    )
    # same seed per episode -> every agent met the same user
    for e in range(40):
        assert len({logs[n][e].user_id for n in agents}) == 1
    linucb = summarize(logs["linucb"][-20:], small_ds.n_items)
    rand = summarize(logs["random"][-20:], small_ds.n_items)
    assert linucb["exp. click"] > rand["exp. click"]
    # against a popularity-driven simulator it learns a positive weight on item popularity
    theta = np.linalg.solve(agents["linucb"].A, agents["linucb"].b)
    assert theta[1] > 0
    assert set(METRICS) <= set(rand) and 0 < rand["coverage"] <= 1
    assert len(rounds) >= 40
