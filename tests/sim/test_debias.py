"""Position debiasing of letter mode (DESIGN.md §5): averages over option orders mapped back,
and PriDe's divided-out letter prior."""

from __future__ import annotations

import numpy as np
import pytest

from usermirrorer.errors import ConfigError
from usermirrorer.sim import SimOptions, UserSimulator
from usermirrorer.sim.simulator import debias_orders


class PositionBiased:
    """A scripted backend: the letter distribution is ``prior(letter) * taste(option text)``."""

    def __init__(self, prior):
        self.prior = np.asarray(prior, dtype=np.float64)

    def letter_logprobs(self, prompts, letters):
        out = []
        for prompt in prompts:
            lines = [line for line in prompt.messages[-1]["content"].splitlines() if line.startswith("[")]
            taste = np.array([float(line.split("score=")[1]) for line in lines])
            p = self.prior[: len(taste)] * taste
            out.append(np.log(p / p.sum()))
        return out

    def generate(self, *args, **kwargs):
        return []


def _scene(i: int, tastes) -> dict:
    return {"scene_id": f"s{i}", "text": {"profile": "p", "history": "h",
                                           "action_list": [f"item {j} score={t}" for j, t in enumerate(tastes)]}}


def test_orders_are_permutations_with_the_identity_first():
    assert debias_orders(3, "reversed") == [[0, 1, 2], [2, 1, 0]]
    assert debias_orders(3, "cyclic") == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert debias_orders(4, "none") == [[0, 1, 2, 3]]


@pytest.mark.parametrize("debias", ["reversed", "cyclic"])
def test_debiased_probs_equal_the_average_of_per_order_distributions(debias):
    backend = PositionBiased([0.5, 0.2, 0.15, 0.1, 0.05])
    tastes = [1.0, 3.0, 2.0, 1.0, 0.5]
    scene = _scene(0, tastes)
    debiased = UserSimulator("scripted", backend=backend, options=SimOptions(debias=debias)).choice_probs(scene).probs
    plain = UserSimulator("scripted", backend=backend)
    expected = np.zeros(5)
    orders = debias_orders(5, debias)
    for order in orders:  # one at a time: score the reordered scene, map its letters back
        reordered = _scene(0, [tastes[i] for i in order])
        expected[order] += plain.choice_probs(reordered).probs
    np.testing.assert_allclose(debiased, expected / len(orders), atol=1e-12)


def test_cyclic_averaging_removes_a_pure_letter_prior():
    # equal tastes: any preference left is position bias, and the K cyclic shifts cancel it exactly
    backend = PositionBiased([0.6, 0.1, 0.1, 0.1, 0.1])
    sim = UserSimulator("scripted", backend=backend, options=SimOptions(debias="cyclic"))
    np.testing.assert_allclose(sim.choice_probs(_scene(0, [1.0] * 5)).probs, 0.2, atol=1e-12)


def test_prior_division_recovers_the_unbiased_choice():
    prior = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    backend = PositionBiased(prior)
    rng = np.random.default_rng(0)
    scenes = [_scene(i, np.round(rng.uniform(0.5, 3.0, size=5), 3)) for i in range(12)]
    sim = UserSimulator("scripted", backend=backend, options=SimOptions(debias="prior", debias_scenes=4))
    results = sim.choice_probs(scenes)
    np.testing.assert_allclose(sim._letter_priors[5], prior / prior.sum(), atol=1e-9)
    for scene, result in zip(scenes, results):
        taste = np.array([float(a.split("score=")[1]) for a in scene["text"]["action_list"]])
        np.testing.assert_allclose(result.probs, taste / taste.sum(), atol=1e-9)


def test_debias_is_a_letter_mode_option():
    with pytest.raises(ConfigError, match="direct"):
        SimOptions(mode="decision", debias="cyclic")
    with pytest.raises(ConfigError, match="debias"):
        SimOptions(debias="sideways")
