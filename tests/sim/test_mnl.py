"""The learned multinomial-logit choice model (``model="mnl"``)."""

from __future__ import annotations

import numpy as np
import pytest
from scene_fixtures import make_dataset

from usermirrorer.data_pipeline.popularity import CausalCounts
from usermirrorer.data_pipeline.raw import format_time
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim import make_choice_model
from usermirrorer.sim.mnl import FEATURES, MultinomialLogitChoiceModel, fit_scenes_from_log


def _popular_choice_scenes(ds, n: int, k: int, seed: int) -> list[dict]:
    """Scenes whose real choice is the option with the most interactions before the scene time."""
    rng = np.random.default_rng(seed)
    counts = CausalCounts(ds)
    scenes = []
    rows = rng.choice(np.flatnonzero(ds.inter_time > np.median(ds.inter_time)), size=n, replace=False)
    for row in rows:
        now = int(ds.inter_time[row])
        items = rng.choice(ds.n_items, size=k, replace=False)
        c = counts.at(now)[items]
        if (c == c.max()).sum() > 1:
            continue
        scenes.append({"scene_id": f"s{row}", "user_id": str(ds.user_ids[ds.inter_user[row]]),
                       "timestamp": format_time(now), "impression_list": [str(ds.item_ids[i]) for i in items],
                       "item_pos": int(np.argmax(c)), "text": {"profile": "", "history": "",
                                                              "action_list": [f"item {i}" for i in items]}})
    return scenes


def test_mnl_learns_a_choice_rule_decided_by_a_feature():
    ds = make_dataset(n_users=80, n_items=150, n_interactions=4000, seed=3)
    train, held_out = _popular_choice_scenes(ds, 300, 5, 0), _popular_choice_scenes(ds, 200, 5, 1)
    model = MultinomialLogitChoiceModel(ds, embedder="hashing", l2=1e-4).fit(train)
    weights = model.fit_report["weights"]
    assert weights["popularity"] == max(weights.values()) > 1.0
    top1 = np.mean([r.top == s["item_pos"] for r, s in zip(model.choice_probs(held_out), held_out)])
    # the rule is deterministic; chance is 1/5
    assert top1 > 0.9
    probs = model.choice_probs(held_out[0]).probs
    assert probs.shape == (5,) and probs.sum() == pytest.approx(1.0)


def test_mnl_from_the_factory_fits_on_sampled_log_scenes_and_scores_the_outside_option():
    ds = make_dataset(n_users=60, n_items=120, n_interactions=2500, seed=5)
    model = make_choice_model("mnl", ds, options={"n_fit": 120, "embedder": "hashing"})
    assert model.fit_report["scenes"] == 120 and set(model.fit_report["weights"]) == set(FEATURES)
    scene = fit_scenes_from_log(ds, 2, seed=9, embedder="hashing")[0]
    scene = {**scene, "outside_option": True,
             "text": {**scene["text"], "action_list": [*scene["text"]["action_list"], "None of these"]}}
    result = model.choice_probs(scene)
    assert result.probs.shape == (len(scene["impression_list"]) + 1,) and result.probs.sum() == pytest.approx(1.0)


def test_mnl_refuses_to_answer_before_it_is_fitted_and_unknown_features():
    ds = make_dataset(n_users=30, n_items=60, n_interactions=900, seed=1)
    with pytest.raises(ConfigError, match="not fitted"):
        MultinomialLogitChoiceModel(ds, embedder=None).choice_probs(fit_scenes_from_log(ds, 2, embedder=None)[0])
    with pytest.raises(ConfigError, match="not known"):
        MultinomialLogitChoiceModel(ds, embedder=None, features=("popularity", "mood"))


def test_mnl_fitted_state_restores_the_same_probabilities_and_refuses_a_mismatch():
    ds = make_dataset(n_users=60, n_items=120, n_interactions=2500, seed=5)
    scenes = fit_scenes_from_log(ds, 80, seed=2, embedder="hashing")
    fitted = MultinomialLogitChoiceModel(ds, embedder="hashing").fit(scenes[:60])
    restored = MultinomialLogitChoiceModel(ds, embedder="hashing").set_fitted_state(fitted.fitted_state())
    for a, b in zip(fitted.choice_probs(scenes[60:]), restored.choice_probs(scenes[60:])):
        np.testing.assert_array_equal(a.probs, b.probs)
    assert restored.fit_report == fitted.fit_report
    with pytest.raises(DataError, match="features"):
        MultinomialLogitChoiceModel(ds, embedder=None).set_fitted_state(fitted.fitted_state())
    with pytest.raises(DataError, match="'scale'"):
        MultinomialLogitChoiceModel(ds, embedder="hashing").set_fitted_state({**fitted.fitted_state(), "scale": [1.0]})
