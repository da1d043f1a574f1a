"""RecEnv: gymnasium contract, seeding, starting state, invalid slates, rewards, prompt prefix."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from usermirrorer.envs import registration  # noqa: F401  (until usermirrorer/__init__ imports it)
from usermirrorer.envs import ENV_ID, RecEnv
from usermirrorer.envs.rewards import RATING_LEVELS
from usermirrorer.errors import ConfigError, InvalidAction
from usermirrorer.sim import ChoiceResult, build_messages


def make(ds, model, **kw):
    kw.setdefault("exposure_size", 4)
    return gym.make(ENV_ID, dataset=ds, model=model, **kw)


def rollout(env, seed, n_steps, action_seed=0):
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info["user_id"], info["timestamp"])]
    for _ in range(n_steps):
        obs, reward, term, trunc, info = env.step(
            rng.choice(env.unwrapped.ds.n_items, 4, replace=False)
        )
        out.append(
            (obs, reward, term, trunc, info["choice"], info["item_id"], info["probs"].tolist())
        )
        if term or trunc:
            break
    return out


def test_registered_env_passes_check_env(small_ds, fake_model):
    env = make(small_ds, fake_model, allow_skip=True, render_mode="ansi")
    assert isinstance(env.unwrapped, RecEnv)
    check_env(env.unwrapped)


def test_same_seed_same_trajectory_and_different_seed_differs(small_ds, fake_model):
    env = make(small_ds, fake_model, allow_skip=True, max_steps=6)
    first = rollout(env, seed=3, n_steps=6)
    second = rollout(env, seed=3, n_steps=6)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert gym.utils.env_checker.data_equivalence(a, b)
    users = {rollout(env, seed=s, n_steps=1)[0][1] for s in range(8)}
    assert len(users) > 1  # different seeds draw different users


def test_reset_options_pick_user_and_start_time(small_ds, fake_model):
    env = make(small_ds, fake_model, history_size=30).unwrapped
    user = small_ds.user_index["u3"]
    rows = small_ds.user_rows(user)
    t = int(small_ds.inter_time[rows.start + 3])
    obs, info = env.reset(seed=0, options={"user_id": "u3", "start_time": t})
    before = small_ds.inter_item[rows.start : rows.start + 3]
    assert obs["user"] == user and info["user_id"] == "u3"
    assert obs["history_length"] == 3
    assert obs["history"][-3:].tolist() == before.tolist()
    assert (obs["history"][:-3] == -1).all()


def test_random_start_is_a_real_time_and_end_start_keeps_whole_log(small_ds, fake_model):
    env = make(small_ds, fake_model, history_size=30, min_history=2).unwrapped
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        user = int(obs["user"])
        rows = small_ds.user_rows(user)
        times = small_ds.inter_time[rows]
        now = env._start_time
        assert now in times or now == times[-1] + env.step_seconds
        assert obs["history_length"] == np.searchsorted(times, now) >= 2
    end = make(small_ds, fake_model, history_size=30, start="end").unwrapped
    obs, _ = end.reset(seed=1)
    rows = small_ds.user_rows(int(obs["user"]))
    assert obs["history_length"] == rows.stop - rows.start


@pytest.mark.parametrize(
    "slate, fragment",
    [
        ([1, 2, 2, 3], "repeats item(s) [2]"),
        ([1, 2, 3, 40], "outside 0..39"),
        ([-1, 2, 3, 4], "outside 0..39"),
        ([1, 2, 3], "expected (4,)"),
        ([[1, 2], [3, 4]], "expected (4,)"),
        ([1.5, 2, 3, 4], "integer item indices"),
    ],
)
def test_invalid_slates_raise_invalid_action(small_ds, fake_model, slate, fragment):
    env = make(small_ds, fake_model).unwrapped
    env.reset(seed=0)
    with pytest.raises(InvalidAction) as err:
        env.step(np.array(slate))
    assert fragment in str(err.value)


def test_step_before_reset_and_bad_configs(small_ds, fake_model, dataset_factory):
    with pytest.raises(InvalidAction, match="before reset"):
        RecEnv(small_ds, fake_model, 4).step(np.arange(4))
    with pytest.raises(ConfigError, match="at most 26"):
        RecEnv(small_ds, fake_model, 27)
    with pytest.raises(ConfigError, match="at most 26"):
        RecEnv(small_ds, fake_model, 26, allow_skip=True)
    RecEnv(small_ds, fake_model, 26)  # 26 options, no skip: fine
    with pytest.raises(ConfigError, match="only 20 items"):
        RecEnv(dataset_factory(n_items=20), fake_model, 21)
    with pytest.raises(ConfigError, match="unknown reward"):
        RecEnv(small_ds, fake_model, 4, reward="ndcg")
    with pytest.raises(ConfigError, match="not in dataset"):
        RecEnv(small_ds, fake_model, 4, users=["nobody"])


class _AlwaysLast:
    """Picks the last option (the outside option when allow_skip) with probability 1."""

    def choice_probs(self, scenes, **kwargs):
        out = []
        for scene in scenes:
            p = np.zeros(len(scene["text"]["action_list"]))
            p[-1] = 1.0
            out.append(ChoiceResult(probs=p))
        return out


def test_patience_terminates_and_max_steps_truncates(small_ds):
    env = make(small_ds, _AlwaysLast(), allow_skip=True, patience=2, max_steps=10).unwrapped
    obs, _ = env.reset(seed=0)
    _, r1, term1, trunc1, info1 = env.step(np.arange(4))
    obs, r2, term2, trunc2, info2 = env.step(np.arange(4, 8))
    assert info1["skipped"] and info1["item_id"] is None and info1["choice"] == 4
    assert (r1, r2, term1, term2, trunc2) == (0.0, 0.0, False, True, False)
    assert obs["skips"] == 2 and obs["last_choice"] == 4

    env = make(small_ds, _AlwaysLast(), allow_skip=False, max_steps=3).unwrapped
    env.reset(seed=0)
    flags = [env.step(np.arange(4) + 4 * i)[2:4] for i in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_rank_rating_and_callable_rewards(small_ds, fake_model):
    env = make(small_ds, fake_model, reward="rank").unwrapped
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.arange(4))
    assert reward == pytest.approx(1.0 / (info["choice"] + 1))
    assert info["expected_rank"] == pytest.approx(float(np.dot(info["probs"], 1 / np.arange(1, 5))))

    env = make(small_ds, "popularity", reward="rating").unwrapped
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.arange(4))
    assert 1.0 <= reward <= 5.0
    assert reward == pytest.approx(float(np.dot(info["rating_probs"], RATING_LEVELS)))

    seen = []
    env = make(small_ds, fake_model, reward=lambda o: seen.append(o) or 7.0).unwrapped
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.arange(4))
    assert reward == 7.0 and seen[0].item == info["item"] and seen[0].slate.tolist() == [0, 1, 2, 3]


def test_pick_joins_history_and_time_advances(small_ds, fake_model):
    env = make(small_ds, fake_model, step_seconds=60).unwrapped
    obs0, info0 = env.reset(seed=2)
    obs1, _, _, _, info1 = env.step(np.array([5, 6, 7, 8]))
    assert obs1["history"][-1] == info1["item"] == [5, 6, 7, 8][info1["choice"]]
    assert obs1["history_length"] == min(obs0["history_length"] + 1, env.history_size)
    assert info1["timestamp"] == info0["timestamp"]
    _, _, _, _, info2 = env.step(np.array([9, 10, 11, 12]))
    assert gym.utils.env_checker.data_equivalence(info2["timestamp"] > info1["timestamp"], True)
    assert info2["scene"]["history_item_ids"][-1] == info1["item_id"]


def test_prompt_prefix_is_stable_within_a_session(small_ds, fake_model):
    """Only the slate changes and the history grows at its end: step n's prompt up to the
    exposure list is a prefix of step n+1's, which the KV-cache reuse depends on."""
    env = make(small_ds, fake_model).unwrapped
    env.reset(seed=4)
    users_msgs = []
    for i in range(4):
        _, _, _, _, info = env.step(np.arange(4) + 4 * i)
        messages = build_messages(info["scene"])
        users_msgs.append(
            messages[-1]["content"] if messages[-1]["role"] == "user" else messages[1]["content"]
        )
    for before, after in zip(users_msgs, users_msgs[1:]):
        head = before.split("# Exposure List")[0].rstrip("\n")
        assert after.startswith(head)


def test_render_ansi_shows_slate_probabilities_and_pick(small_ds, fake_model):
    env = make(small_ds, fake_model, allow_skip=True, render_mode="ansi").unwrapped
    env.reset(seed=0)
    assert "no slate shown yet" in env.render()
    _, _, _, _, info = env.step(np.arange(4))
    text = env.render()
    assert "<- picked" in text and "None of these" in text and "[E]" in text
    assert f"{info['probs'][0]:6.1%}" in text


class _Thinker:
    def choice_probs(self, scenes, seed=None, **kwargs):
        self.seed = seed
        return [
            ChoiceResult(
                probs=np.full(4, 0.25),
                rationales=["Stimulus: bored."],
                thought_probs=np.full((1, 4), 0.25),
            )
            for _ in scenes
        ]


def test_decision_mode_puts_rationale_in_info_and_passes_a_seed(small_ds):
    model = _Thinker()
    env = make(small_ds, model, mode="decision").unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.arange(4))
    assert info["rationale"] == "Stimulus: bored." and info["thought_probs"].shape == (1, 4)
    assert isinstance(model.seed, int)


class _PositionBiased:
    """Prefers option A no matter what it is; otherwise uniform."""

    def __init__(self):
        self.batches = []

    def choice_probs(self, scenes, **kwargs):
        self.batches.append(len(scenes))
        out = []
        for scene in scenes:
            p = np.ones(len(scene["text"]["action_list"]))
            p[0] = 5.0
            out.append(ChoiceResult(probs=p / p.sum()))
        return out


def test_debias_positions_cancels_a_letter_preference(small_ds):
    model = _PositionBiased()
    env = make(small_ds, model, allow_skip=True, debias_positions=True).unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.arange(4))
    p = info["probs"]
    assert model.batches == [2]  # the slate and its reverse in one call
    assert np.isclose(p[0], p[3]) and np.isclose(p[1], p[2]) and np.isclose(p.sum(), 1.0)
    assert np.isclose(p[4], 1 / 9)  # outside option unchanged (last in both orders)
