"""Reference recommenders and the lockstep arena."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.envs import RecEnv
from usermirrorer.envs.agents import RECOMMENDERS, make_recommender
from usermirrorer.envs.arena import METRICS, run_arena, summarize
from usermirrorer.envs.resources import load_choice_model


@pytest.mark.parametrize("name", sorted(RECOMMENDERS))
def test_recommenders_return_distinct_unseen_items(small_ds, name):
    env = RecEnv(small_ds, "popularity", 5, history_size=30)
    agent = make_recommender(name, small_ds, 5, seed=0)
    obs, info = env.reset(seed=1)
    for _ in range(3):
        slate = agent.recommend(obs, info)
        assert env.action_space.contains(slate)
        if name != "random":
            assert not set(slate) & set(obs["history"][obs["history"] >= 0].tolist())
        obs, reward, _, _, info = env.step(slate)
        agent.update(obs, slate, reward, info)


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
