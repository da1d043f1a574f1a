"""The log-linear pool of choice models (``usermirrorer.sim.pool``)."""

from __future__ import annotations

import numpy as np
import pytest
from scene_fixtures import make_dataset

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim import SimOptions, UserSimulator, make_choice_model
from usermirrorer.sim.mnl import fit_scenes_from_log
from usermirrorer.sim.pool import LogLinearPool, fit_pool_weights, gated_terms, pool_probs


def _draw(rng: np.random.Generator, n: int, k: int, weights: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Two members' log-terms and choices drawn from softmax(w . terms)."""
    terms = [rng.normal(size=(n, k)) for _ in weights]
    p = pool_probs(terms, weights)
    choices = np.array([rng.choice(k, p=row) for row in p])
    return terms, choices


def test_fitted_weights_recover_the_ones_that_drew_the_choices():
    rng = np.random.default_rng(0)
    true = np.array([2.0, 0.5])
    terms, choices = _draw(rng, 4000, 5, true)
    fitted = fit_pool_weights(terms, choices, l2=0.0)
    # standard errors from the Fisher information of a multinomial logit: sum over scenes of
    # the covariance of the (centred) terms under the choice distribution
    x = np.stack([t - t.mean(axis=1, keepdims=True) for t in terms])  # (M, n, K)
    p = pool_probs(terms, true)
    mean = np.einsum("mnk,nk->mn", x, p)
    info = np.einsum("mnk,lnk,nk->ml", x, x, p) - np.einsum("mn,ln->ml", mean, mean)
    se = np.sqrt(np.diag(np.linalg.inv(info)))
    assert np.all(np.abs(fitted - true) < 4 * se), (fitted, se)


def test_a_pool_of_two_informative_members_beats_each_on_held_out_scenes():
    rng = np.random.default_rng(1)
    true = np.array([1.0, 1.0])  # each member sees half of what decides the choice
    train, y_train = _draw(rng, 2000, 5, true)
    test, y_test = _draw(rng, 2000, 5, true)

    def nll(terms, y, w):
        return -np.mean(np.log(pool_probs(terms, w)[np.arange(len(y)), y]))

    both = nll(test, y_test, fit_pool_weights(train, y_train))
    alone = [nll([test[m]], y_test, fit_pool_weights([train[m]], y_train)) for m in range(2)]
    # what the right weights would give on these scenes, and what knowing nothing gives
    assert both < min(alone) and both == pytest.approx(nll(test, y_test, true), abs=0.02)
    assert max(alone) < np.log(5)


def test_pool_of_real_ml100k_baselines_fits_and_answers(ml100k_converted):
    from usermirrorer.data_pipeline.raw import load_raws

    project, _ = ml100k_converted
    ds = load_raws(project, "ml-100k")
    members = [make_choice_model("popularity", ds), make_choice_model("collaborative", ds, project_path=project)]
    scenes = fit_scenes_from_log(ds, 800, seed=3, embedder=None)[400:]  # the popularity-matched half
    fit, held_out = scenes[::2], scenes[1::2]
    pool = LogLinearPool(members, names=["popularity", "collaborative"]).fit(fit)
    assert pool.fit_report["scenes"] == len(fit) and set(pool.fit_report["weights"]) == {"popularity", "collaborative"}
    assert "collaborative" in repr(pool)

    def nll(model):
        return -np.mean([np.log(r.probs[s["item_pos"]]) for r, s in zip(model.choice_probs(held_out), held_out)])

    # the pool holds each member (and uniform) as a special case of its weights; on matched
    # exposures popularity carries nothing and the collaborative score a lot
    assert nll(pool) < min(nll(m) for m in members) and nll(pool) < np.log(5) - 0.05


def test_likelihood_mode_llm_member_is_pooled_through_its_scores(tiny_model_dir):
    ds = make_dataset(n_users=40, n_items=80, n_interactions=1500, seed=2)
    scenes = fit_scenes_from_log(ds, 12, seed=1, embedder=None)
    llm = UserSimulator(str(tiny_model_dir), options=SimOptions(mode="likelihood"))
    pool = LogLinearPool([llm, make_choice_model("popularity", ds)], names=["llm", "popularity"]).fit(scenes)
    assert np.all(np.isfinite(pool.weights))
    results = pool.choice_probs(scenes[:3])
    assert [r.probs.shape for r in results] == [(5,)] * 3 and all(r.probs.sum() == pytest.approx(1.0) for r in results)
    # weights fixed by hand: the pool is the llm's softmax over its scores at weight 1
    alone = LogLinearPool([llm], weights=[1.0]).choice_probs(scenes[0])
    scores = llm.choice_probs(scenes[0]).scores
    expected = np.exp(scores - scores.max())
    np.testing.assert_allclose(alone.probs, expected / expected.sum(), rtol=1e-9)


def test_pool_errors_say_what_is_missing():
    ds = make_dataset(n_users=20, n_items=40, n_interactions=500, seed=4)
    popularity = make_choice_model("popularity", ds)
    scene = fit_scenes_from_log(ds, 2, embedder=None)[0]
    with pytest.raises(ConfigError, match="not fitted"):
        LogLinearPool([popularity]).choice_probs(scene)
    with pytest.raises(ConfigError, match="no choice_probs"):
        LogLinearPool([object()])
    with pytest.raises(ConfigError, match="2 weights for 1"):
        LogLinearPool([popularity], weights=[1.0, 2.0])
    with pytest.raises(DataError, match="item_pos"):
        LogLinearPool([popularity]).fit([{k: v for k, v in scene.items() if k != "item_pos"}])
    with pytest.raises(DataError, match="no fit scenes"):
        LogLinearPool([popularity]).fit([])


def test_a_fitted_pool_drives_the_env_with_its_outside_option():
    from usermirrorer.envs import RecEnv

    ds = make_dataset(n_users=30, n_items=60, n_interactions=900, seed=5)
    members = [make_choice_model("popularity", ds), make_choice_model("collaborative", ds)]
    pool = LogLinearPool(members, names=["popularity", "collaborative"]).fit(
        fit_scenes_from_log(ds, 60, embedder=None))
    env = RecEnv(ds, pool, 4, allow_skip=True, max_steps=3)
    obs, info = env.reset(seed=0)
    steps = 0
    for _ in range(3):
        _obs, reward, terminated, truncated, info = env.step(np.arange(4))
        steps += 1
        assert 0.0 <= reward <= 1.0
        # four options and "none of these", pooled entry by entry
        assert len(info["probs"]) == 5 and abs(float(np.sum(info["probs"])) - 1.0) < 1e-9
        if terminated or truncated:
            break
    assert steps >= 1 and "LogLinearPool" in repr(pool)


def test_a_gated_pool_finds_a_weight_whose_sign_turns_with_the_gate_spread():
    # member 0 leads the choice towards its top option on scenes where the gate member's terms
    # are spread out and away from it where they are flat (collaborative on standard vs
    # popularity-matched exposures): no single weight fits both halves, a gated one does
    rng = np.random.default_rng(4)

    def draw(n):
        signal = rng.normal(size=(n, 5))
        spread = np.where(np.arange(n) % 2 == 0, 2.0, 0.2)
        gate = rng.normal(size=(n, 5))
        gate = gate / gate.std(axis=1, keepdims=True) * spread[:, None]
        w = np.where(spread > 1, 2.0, -2.0)[:, None]
        z = np.exp(w * signal)
        p = z / z.sum(axis=1, keepdims=True)
        return [signal, gate], np.array([rng.choice(5, p=row) for row in p])

    (train, y_train), (test, y_test) = draw(3000), draw(3000)

    def nll(terms, y, w):
        return -np.mean(np.log(pool_probs(terms, w)[np.arange(len(y)), y]))

    plain = nll(test, y_test, fit_pool_weights(train, y_train))
    gated_w = fit_pool_weights(gated_terms(train, 1), y_train)
    gated = nll(gated_terms(test, 1), y_test, gated_w)
    assert plain > np.log(5) - 0.05  # the two halves cancel
    assert gated < plain - 0.3
    # at spread 2 the weight is a + 2b ≈ +2, at spread 0.2 a + 0.2b ≈ -2
    a, b = gated_w[0], gated_w[2]
    assert a + 2 * b == pytest.approx(2.0, abs=0.35) and a + 0.2 * b == pytest.approx(-2.0, abs=0.35)
    with pytest.raises(ConfigError, match="gate 2"):
        gated_terms(train, 2)


def test_gated_pool_of_real_ml100k_baselines_fits_both_constructions(ml100k_converted):
    from usermirrorer.data_pipeline.raw import load_raws

    project, _ = ml100k_converted
    ds = load_raws(project, "ml-100k")
    members = [make_choice_model("collaborative", ds, project_path=project), make_choice_model("popularity", ds)]
    scenes = fit_scenes_from_log(ds, 800, seed=3, embedder=None)  # standard half, then matched half
    fit, held_out = scenes[::2], scenes[1::2]
    names = ["collaborative", "popularity"]
    plain = LogLinearPool(members, names=names).fit(fit)
    gated = LogLinearPool(members, names=names, gate="popularity").fit(fit)
    assert len(gated.weights) == 4 and "gate='popularity'" in repr(gated)
    assert "collaborative × spread(popularity)" in gated.fit_report["weights"]

    def nll(model):
        return -np.mean([np.log(r.probs[s["item_pos"]]) for r, s in zip(model.choice_probs(held_out), held_out)])

    # one weight per member serves the two constructions at about chance (1.61 nats here): the
    # collaborative score helps on matched exposures and misleads on standard ones; the gated
    # pool tells them apart by the slate's popularity spread (1.47)
    assert nll(gated) < nll(plain) - 0.05
    with pytest.raises(ConfigError, match="not a member name"):
        LogLinearPool(members, names=names, gate="content")
    with pytest.raises(ConfigError, match="2 per member"):
        LogLinearPool(members, names=names, gate=1, weights=[1.0, 1.0])
