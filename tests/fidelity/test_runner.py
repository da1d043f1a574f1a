"""run_model with a fake choice model: interleaved variants, resume cache, time budget, checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.fidelity.runner import ModelSpec, run_model
from usermirrorer.sim import ChoiceResult


def scenes(variant: str, n: int, k: int = 4) -> list[dict]:
    return [{"scene_id": f"{variant}:{i}", "item_pos": i % k,
             "text": {"profile": "p", "history": "h", "action_list": [f"o{j}" for j in range(k)]}}
            for i in range(n)]


class FakeChooser:
    """Puts 0.7 on option 0; records the order of the scenes it was asked about."""

    def __init__(self, delay: float = 0.0, bad: bool = False):
        self.seen: list[str] = []
        self.delay = delay
        self.bad = bad

    def choice_probs(self, batch):
        self.seen.extend(s["scene_id"] for s in batch)
        time.sleep(self.delay)
        out = []
        for s in batch:
            k = len(s["text"]["action_list"])
            p = np.full(k, 0.3 / (k - 1))
            p[0] = 0.7
            out.append(ChoiceResult(probs=p[:-1] if self.bad else p))
        return out


def test_variants_are_interleaved_cached_and_resumed(tmp_path):
    spec = ModelSpec(label="fake", kind="random")
    data = {"standard": scenes("standard", 10), "popularity-matched": scenes("popularity-matched", 10)}
    model = FakeChooser()
    runs = run_model(spec, data, lambda: model, cache_dir=tmp_path, chunk_size=4)
    # scene i of each variant back to back: an LLM shares their common prefix
    assert model.seen[:4] == ["standard:0", "popularity-matched:0", "standard:1", "popularity-matched:1"]
    for variant, run in runs.items():
        assert run.scene_ids == [f"{variant}:{i}" for i in range(10)] and run.complete
        assert run.probs.shape == (10, 4) and np.allclose(run.probs[:, 0], 0.7)
        assert run.item_pos.tolist() == [i % 4 for i in range(10)] and run.resumed == 0 and run.seconds >= 0
    again = run_model(spec, data, lambda: pytest.fail("cached rows must not build the model"), cache_dir=tmp_path)
    assert all(r.resumed == 10 for r in again.values())
    assert np.array_equal(again["standard"].probs, runs["standard"].probs)
    # a limit takes the first scenes of every variant
    limited = run_model(ModelSpec(label="fake", kind="random", limit=3), data, lambda: model, cache_dir=tmp_path)
    assert [r.scene_ids for r in limited.values()] == [["standard:0", "standard:1", "standard:2"],
                                                       ["popularity-matched:0", "popularity-matched:1",
                                                        "popularity-matched:2"]]


def test_time_budget_keeps_what_was_answered_and_a_rerun_continues(tmp_path):
    spec = ModelSpec(label="slow", kind="random")
    data = {"standard": scenes("standard", 12), "popularity-matched": scenes("popularity-matched", 12)}
    # 30 ms: set-up on a loaded machine fits before it (10 ms did not, in CI), the first 50 ms chunk does not
    runs = run_model(spec, data, lambda: FakeChooser(delay=0.05), cache_dir=tmp_path, chunk_size=4,
                     budget_seconds=0.03)
    assert not runs["standard"].complete
    assert len(runs["standard"].scene_ids) == 2 and runs["standard"].planned == 12  # one chunk of 4
    rest = run_model(spec, data, lambda: FakeChooser(), cache_dir=tmp_path, chunk_size=4)
    assert all(r.complete and len(r.scene_ids) == 12 and r.resumed == 2 for r in rest.values())


def test_a_budget_spent_before_the_first_answer_keeps_nothing_and_a_rerun_answers_all(tmp_path):
    spec = ModelSpec(label="late", kind="random")
    data = {"standard": scenes("standard", 4), "popularity-matched": scenes("popularity-matched", 4)}
    runs = run_model(spec, data, lambda: FakeChooser(), cache_dir=tmp_path, chunk_size=4, budget_seconds=0.0)
    assert all(not r.complete and r.scene_ids == [] and r.probs.shape[0] == 0 for r in runs.values())
    rest = run_model(spec, data, lambda: FakeChooser(), cache_dir=tmp_path, chunk_size=4)
    assert all(r.complete and len(r.scene_ids) == 4 and r.resumed == 0 for r in rest.values())


def test_wrong_length_distributions_are_rejected(tmp_path):
    with pytest.raises(DataError, match="expected 4 non-negative probabilities"):
        run_model(ModelSpec(label="bad", kind="random"), {"standard": scenes("standard", 2)},
                  lambda: FakeChooser(bad=True))


def test_model_spec_validation_and_cache_key():
    with pytest.raises(ConfigError, match="needs a model"):
        ModelSpec(label="x", kind="llm")
    with pytest.raises(ConfigError, match="mode must be"):
        ModelSpec(label="x", kind="llm", model="m", mode="-")
    with pytest.raises(ConfigError, match="kind"):
        ModelSpec(label="x", kind="oracle")
    a = ModelSpec(label="x", kind="llm", model="m", mode="direct")
    assert a.key == ModelSpec(label="x", kind="llm", model="m", mode="direct", limit=5, note="n").key
    assert a.key != ModelSpec(label="x", kind="llm", model="m", mode="decision").key
    # thought settings do not change a direct-mode answer, so they do not invalidate its cache
    assert a.key == ModelSpec(label="x", kind="llm", model="m", mode="direct", max_thought_tokens=7).key
    d = ModelSpec(label="x", kind="llm", model="m", mode="decision")
    assert d.key != ModelSpec(label="x", kind="llm", model="m", mode="decision", max_thought_tokens=7).key
