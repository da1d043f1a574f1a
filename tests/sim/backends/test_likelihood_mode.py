"""Likelihood mode (DESIGN.md §5): option texts scored as the answer, shared-prefix KV reuse,
PMI against a neutral context, one fitted temperature."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.errors import ConfigError
from usermirrorer.sim import SimOptions, UserSimulator
from usermirrorer.sim.metrics import fit_temperature, softmax_nll
from usermirrorer.sim.prompts import build_likelihood_prompt
from usermirrorer.sim.simulator import likelihood_scores


def _one_at_a_time(backend, prompt, options) -> np.ndarray:
    rows, starts = backend.encoder.encode_continuations(prompt, options)
    return np.array([backend.sequence_logprobs([r], [s], share_prefix=False)[0] for r, s in zip(rows, starts)])


def test_shared_prefix_equals_one_sequence_at_a_time_with_fewer_tokens(tiny_backend, scene_factory):
    scene = scene_factory(3, k=6)
    prompt = build_likelihood_prompt(scene)
    options = scene["text"]["action_list"]
    before = tiny_backend.stats.computed_tokens
    tiny_backend.clear_cache()
    (shared,) = tiny_backend.continuation_logprobs([prompt], [options])
    shared_tokens = tiny_backend.stats.computed_tokens - before
    before = tiny_backend.stats.computed_tokens
    alone = _one_at_a_time(tiny_backend, prompt, options)
    alone_tokens = tiny_backend.stats.computed_tokens - before
    np.testing.assert_allclose(shared.logprob, alone, atol=1e-5, rtol=0)
    assert (shared.tokens >= 1).all() and len(shared.logprob) == 6
    assert shared_tokens < alone_tokens / 2  # the profile + history prefix is computed once, not 6 times


def test_continuations_score_the_whole_option_text(tiny_backend, scene_factory):
    scene = scene_factory(0)
    prompt = build_likelihood_prompt(scene)
    rows, starts = tiny_backend.encoder.encode_continuations(prompt, ["Heat (1995)", "Heat (1995) — Action, Crime"])
    # the longer text adds tokens, and both start where the prompt's own tokens end
    assert starts[0] == starts[1] and len(rows[1]) > len(rows[0])
    assert tiny_backend.tokenizer.decode(rows[0][starts[0]:]) == "Heat (1995)"


def test_pmi_probs_are_softmax_of_context_minus_neutral(tiny_backend, scene_factory):
    scenes = [scene_factory(i) for i in range(3)]
    sim = UserSimulator(tiny_backend.model_name, backend=tiny_backend, options=SimOptions(mode="likelihood"))
    results = sim.choice_probs(scenes)
    neutral = build_likelihood_prompt(None)
    for scene, result in zip(scenes, results):
        options = scene["text"]["action_list"]
        context = _one_at_a_time(tiny_backend, build_likelihood_prompt(scene), options)
        prior = _one_at_a_time(tiny_backend, neutral, options)
        expected = np.exp((context - prior) - (context - prior).max())
        np.testing.assert_allclose(result.scores, context - prior, atol=1e-4)
        np.testing.assert_allclose(result.probs, expected / expected.sum(), atol=1e-5)
        assert result.probs.sum() == pytest.approx(1.0)


def test_score_kinds_and_temperature():
    lp, tokens, prior = np.array([-10.0, -4.0, -9.0]), np.array([5, 2, 3]), np.array([-12.0, -2.0, -9.0])
    np.testing.assert_allclose(likelihood_scores(lp, tokens, "pmi", prior), [2.0, -2.0, 0.0])
    np.testing.assert_allclose(likelihood_scores(lp, tokens, "sum"), lp)
    np.testing.assert_allclose(likelihood_scores(lp, tokens, "mean"), [-2.0, -2.0, -3.0])
    with pytest.raises(ConfigError, match="neutral"):
        likelihood_scores(lp, tokens, "pmi")
    with pytest.raises(ConfigError, match="likelihood_score"):
        SimOptions(mode="likelihood", likelihood_score="max")


def test_fit_temperature_recovers_the_generating_temperature():
    # Options drawn from softmax(s / 2.5): the fitted T must come out near 2.5 (maximum likelihood).
    rng = np.random.default_rng(0)
    scores = [rng.normal(0.0, 4.0, size=5) for _ in range(4000)]
    targets = []
    for s in scores:
        p = np.exp(s / 2.5 - (s / 2.5).max())
        targets.append(int(rng.choice(5, p=p / p.sum())))
    t = fit_temperature(scores, targets)
    assert 2.3 < t < 2.7
    assert softmax_nll(scores, targets, t) <= min(softmax_nll(scores, targets, x) for x in (1.0, 2.0, 3.0, 5.0))


def test_a_backend_without_continuation_scoring_names_the_mode(scene_factory):
    class LettersOnly:
        def letter_logprobs(self, prompts, letters):
            return [np.log(np.full(len(x), 1 / len(x))) for x in letters]

        def generate(self, *a, **k):
            return []

    sim = UserSimulator("scripted", backend=LettersOnly(), options=SimOptions(mode="likelihood"))
    with pytest.raises(ConfigError, match="mode 'likelihood'"):
        sim.choice_probs(scene_factory(0))


@pytest.mark.slow
def test_smollm2_likelihood_mode_matches_one_at_a_time(smollm2_backend, scene_factory):
    scene = scene_factory(2, k=5)
    prompt = build_likelihood_prompt(scene)
    (shared,) = smollm2_backend.continuation_logprobs([prompt], [scene["text"]["action_list"]])
    np.testing.assert_allclose(shared.logprob, _one_at_a_time(smollm2_backend, prompt, scene["text"]["action_list"]),
                               atol=1e-3, rtol=0)
    sim = UserSimulator("smollm2-135m", backend=smollm2_backend, options=SimOptions(mode="likelihood"))
    result = sim.choice_probs(scene)
    assert result.probs.shape == (5,) and result.probs.sum() == pytest.approx(1.0) and np.isfinite(result.scores).all()
