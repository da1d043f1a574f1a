"""Many env workers, one scoring service: ServedVectorEnv against `usermirrorer serve`'s service
reproduces the in-process RecVectorEnv under the same seeds (tiny random model, fp32)."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.envs import RecVectorEnv
from usermirrorer.envs.workers import ServedVectorEnv
from usermirrorer.errors import ConfigError

# Probabilities: the server scores each step's requests of both workers in batches whose
# composition depends on arrival times, the in-process env scores its 4 sub-envs in one batch;
# the same fp32 forward over differently padded batches differs by float rounding only. fp32
# logits carry ~1e-7 relative error and the tiny model's are O(1), so 1e-6 on probabilities
# is a hundredfold margin yet far below any difference a wrong prompt or letter would make.
PROB_ATOL = 1e-6
STEPS = 7


def _env_kwargs(small_ds):
    return dict(dataset=small_ds, exposure_size=4, allow_skip=True, patience=1, max_steps=3)


def _rollout(envs, actions, seed):
    obs, _ = envs.reset(seed=seed)
    steps = [(obs, None, None, None, None, None)]
    for a in actions:
        obs, reward, term, trunc, info = envs.step(a)
        steps.append((obs, reward, term, trunc, info.get("choice"), info.get("probs")))
    return steps


def test_two_workers_against_one_server_reproduce_the_in_process_vector_env(tiny_model_dir, small_ds):
    from usermirrorer.sim.serving import start_server

    rng = np.random.default_rng(3)
    actions = [np.stack([rng.choice(small_ds.n_items, 4, replace=False) for _ in range(4)]) for _ in range(STEPS)]
    seed = 21
    local = RecVectorEnv(num_envs=4, model=str(tiny_model_dir), backend="transformers",
                         backend_kwargs={"dtype": "float32"}, **_env_kwargs(small_ds))
    expected = _rollout(local, actions, seed)
    local.close()

    with start_server(str(tiny_model_dir), backend_kwargs={"dtype": "float32"}) as server:
        served = ServedVectorEnv(workers=2, envs_per_worker=2, model=str(tiny_model_dir), backend="openai",
                                 backend_kwargs={"base_url": server.url, "vllm_extensions": True},
                                 **_env_kwargs(small_ds))
        try:
            got = _rollout(served, actions, seed)
        finally:
            served.close()
        stats = server.service.stats
    # both workers' requests went to the one service, several to a forward pass
    assert stats.scoring_requests >= 4 * STEPS // 2 and stats.largest_batch >= 2

    done_any = False
    for (obs_e, r_e, te_e, tr_e, c_e, p_e), (obs_g, r_g, te_g, tr_g, c_g, p_g) in zip(expected, got):
        for key in obs_e:  # item indices and feedback exactly; the float32 last_probs as probabilities
            if np.issubdtype(obs_e[key].dtype, np.floating):
                np.testing.assert_allclose(obs_g[key], obs_e[key], atol=PROB_ATOL, rtol=0, err_msg=key)
            else:
                np.testing.assert_array_equal(obs_g[key], obs_e[key], err_msg=key)
        if r_e is None:
            continue
        np.testing.assert_array_equal(r_g, r_e)
        np.testing.assert_array_equal(te_g, te_e)
        np.testing.assert_array_equal(tr_g, tr_e)
        np.testing.assert_array_equal(c_g, c_e)
        if p_e is None:  # every sub-env was reset at this step (autoreset): no choice was made
            assert p_g is None
            continue
        for pe, pg in zip(p_e, p_g):
            if pe is None:
                assert pg is None
            else:
                np.testing.assert_allclose(np.asarray(pg, float), np.asarray(pe, float), atol=PROB_ATOL, rtol=0)
        done_any |= bool((te_e | tr_e).any())
    assert done_any, "the rollout should cross an episode end (autoreset) to test it"


def test_served_vector_env_refuses_bad_worker_counts(small_ds):
    with pytest.raises(ConfigError, match="workers must be an integer >= 1"):
        ServedVectorEnv(workers=0, dataset=small_ds)
