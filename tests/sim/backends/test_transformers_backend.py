"""Transformers backend and UserSimulator on the tiny random model (and SmolLM2, marked slow)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from usermirrorer.errors import BackendError, ConfigError
from usermirrorer.sim import LETTERS, SimOptions, UserSimulator, build_prompt, load_prompts


def _probs(backend, prompts, share: bool) -> list[np.ndarray]:
    old = backend.share_prefix
    backend.share_prefix = share
    try:
        return [np.exp(lp) for lp in backend.letter_logprobs(prompts, [list(p.letters) for p in prompts])]
    finally:
        backend.share_prefix = old


def test_letters_are_verified_single_tokens(tiny_backend):
    ids = tiny_backend.letter_token_ids("Behavior: [", tuple(LETTERS))
    assert len(ids) == 26 and len(set(ids)) == 26
    assert [tiny_backend.tokenizer.decode([i]) for i in ids] == list(LETTERS)
    # after a space this tokenizer merges " A" into one token: scoring "A" alone would be wrong
    with pytest.raises(BackendError, match="does not encode option letter 'A' as one token"):
        tiny_backend.letter_token_ids("Behavior: ", ("A", "B"))


def test_prefix_without_bracket_is_rejected_when_scoring(tmp_path, tiny_backend, scene_factory):
    prompts_file = tmp_path / "p.yaml"
    prompts_file.write_text("direct_prefix: 'Choice '\nbehavior_marker: 'Choice '\n", encoding="utf-8")
    sim = UserSimulator(backend=tiny_backend, prompts=load_prompts(prompts_file))
    with pytest.raises(BackendError, match="one token"):
        sim.choice_probs(scene_factory(0))


def test_direct_probs_have_k_entries_and_sum_to_one(tiny_backend, scenes):
    sim = UserSimulator(backend=tiny_backend, options=SimOptions(batch_size=4))
    results = sim.choice_probs(scenes)
    assert len(results) == len(scenes)
    for scene, res in zip(scenes, results):
        assert res.probs.shape == (len(scene["text"]["action_list"]),)
        assert res.probs.dtype == np.float64 and res.probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert res.rationales == [] and res.thought_probs is None
    single = sim.choice_probs(scenes[2])  # one scene in -> one result out, same numbers
    np.testing.assert_allclose(single.probs, results[2].probs, atol=1e-5)
    assert 0 <= single.sample(np.random.default_rng(0)) < len(single.probs)


def test_shared_prefix_equals_plain_scoring(tiny_backend, scenes, scene_factory):
    tiny_backend.clear_cache()
    prompts = [build_prompt(s, "direct") for s in scenes]
    plain = _probs(tiny_backend, prompts, share=False)
    shared = _probs(tiny_backend, prompts, share=True)
    again = _probs(tiny_backend, prompts, share=True)  # now served from the LRU
    for a, b, c in zip(plain, shared, again):
        np.testing.assert_allclose(a, b, atol=1e-3)
        np.testing.assert_allclose(a, c, atol=1e-3)
    # thoughts of one scene share the whole scene: grouped prefix
    thoughts = [build_prompt(scenes[1], "decision", thought=f"Thought:\nStimulus: option {t} looks fine") for t in range(4)]
    for a, b in zip(_probs(tiny_backend, thoughts, False), _probs(tiny_backend, thoughts, True)):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_session_reuses_longest_cached_prefix(tiny_backend, scene_factory):
    """An env session: same user, history growing by one line per step, one scene per call."""
    tiny_backend.clear_cache()
    base = scene_factory(3, k=4, history_lines=10)
    lines = base["text"]["history"].split("\n")
    steps = []
    for n in range(4, 10):
        s = {**base, "text": {**base["text"], "history": "\n".join(lines[:n])}}
        steps.append(build_prompt(s, "direct"))
    before = tiny_backend.stats.computed_tokens
    shared = [_probs(tiny_backend, [p], share=True)[0] for p in steps]
    computed = tiny_backend.stats.computed_tokens - before
    total = sum(tiny_backend.prompt_lengths(steps))
    plain = [_probs(tiny_backend, [p], share=False)[0] for p in steps]
    for a, b in zip(plain, shared):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # after the first step only the new history line and the exposure list are computed
    assert computed < 0.45 * total, (computed, total)


def test_parallel_sessions_reuse_their_own_rows(tiny_backend, scene_factory):
    """A vector env: three users per call; each next call repeats each user's previous prompt."""
    tiny_backend.clear_cache()
    users = [scene_factory(i, k=3, history_lines=8) for i in range(3)]

    def step(n):
        return [build_prompt({**u, "text": {**u["text"], "history": "\n".join(u["text"]["history"].split("\n")[:n])}})
                for u in users]

    _probs(tiny_backend, step(5), share=True)
    before = tiny_backend.stats.computed_tokens
    shared = _probs(tiny_backend, step(6), share=True)
    computed = tiny_backend.stats.computed_tokens - before
    plain = _probs(tiny_backend, step(6), share=False)
    for a, b in zip(plain, shared):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert computed < 0.3 * sum(tiny_backend.prompt_lengths(step(6))), computed


def test_too_long_prompt_names_scene_and_length(tiny_backend, scene_factory, caplog):
    scene = {**scene_factory(4, history_lines=30), "scene_id": "long-one"}
    n_tokens = tiny_backend.prompt_lengths([build_prompt(scene, "direct")])[0]
    old = tiny_backend.context_length
    tiny_backend.context_length = n_tokens - 50
    try:
        sim = UserSimulator(backend=tiny_backend)
        with pytest.raises(BackendError, match=rf"scene 'long-one': the prompt is {n_tokens} tokens.*at most {n_tokens - 50}"):
            sim.choice_probs(scene)
        cut = UserSimulator(backend=tiny_backend, options=SimOptions(truncate_history=True))
        with caplog.at_level(logging.WARNING, logger="usermirrorer.sim.simulator"):
            res = cut.choice_probs(scene)
        assert "dropped the" in caplog.text and "oldest history line" in caplog.text
        dropped = int(caplog.text.split("dropped the ")[1].split(" ")[0])
        kept = scene["text"]["history"].split("\n")[dropped:]
        manual = {**scene, "text": {**scene["text"], "history": "\n".join(kept)}}
        assert tiny_backend.prompt_lengths([build_prompt(manual, "direct")])[0] <= n_tokens - 50
        tiny_backend.context_length = n_tokens + 1000
        np.testing.assert_allclose(sim.choice_probs(manual).probs, res.probs, atol=1e-6)
    finally:
        tiny_backend.context_length = old


def test_generation_stops_at_stop_string(tiny_backend, scene_factory):
    prompt = build_prompt(scene_factory(0), "decision")
    # seeded sampling draws the same tokens until the stop string cuts generation short
    free = tiny_backend.generate([prompt], n=1, temperature=1.0, top_p=1.0, max_tokens=12, stop=[], seed=5)[0][0]
    assert len(free) > 12
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    cut = tiny_backend.generate([prompt], n=1, temperature=1.0, top_p=1.0, max_tokens=12, stop=[stop], seed=5)[0][0]
    assert cut == free[: free.find(stop)]


def test_decision_mode_returns_rationales(tiny_backend, scenes):
    opts = SimOptions(mode="decision", n_thoughts=2, max_thought_tokens=6, batch_size=4, seed=3)
    sim = UserSimulator(backend=tiny_backend, options=opts)
    results = sim.choice_probs(scenes[:2])
    for scene, res in zip(scenes[:2], results):
        k = len(scene["text"]["action_list"])
        assert len(res.rationales) == 2 and res.thought_probs.shape == (2, k)
        assert all(r.startswith("Thought:\nStimulus:") and "Behavior: [" not in r for r in res.rationales)
        np.testing.assert_allclose(res.probs, res.thought_probs.mean(axis=0), atol=1e-12)
        assert res.probs.sum() == pytest.approx(1.0)
    again = sim.choice_probs(scenes[:2])  # same seed, same batch -> same thoughts
    assert [r.rationales for r in again] == [r.rationales for r in results]


def _thoughts(backend, prompts, share: bool, n: int = 3) -> list[list[str]]:
    old = backend.share_prefix
    backend.share_prefix = share
    try:
        return backend.generate(prompts, n=n, temperature=1.0, top_p=0.9, max_tokens=10, stop=[], seed=11)
    finally:
        backend.share_prefix = old


def test_generation_reads_each_prompt_once_for_n_samples(tiny_backend, scenes):
    # prompts of different lengths: the once-read prefill is left-padded like generate()'s own
    prompts = [build_prompt(s, "decision") for s in scenes[:3]]
    assert len({len(r) for r in tiny_backend.encode(prompts)}) > 1
    tiny_backend.clear_cache()
    shared = _thoughts(tiny_backend, prompts, share=True)
    plain = _thoughts(tiny_backend, prompts, share=False)
    assert shared == plain
    assert [len(t) for t in shared] == [3, 3, 3] and len(set(shared[0])) > 1


def test_decision_scoring_continues_from_the_generation_prefill(tiny_backend, scenes):
    opts = SimOptions(mode="decision", n_thoughts=2, max_thought_tokens=6, batch_size=4, seed=3)
    sim = UserSimulator(backend=tiny_backend, options=opts)
    tiny_backend.clear_cache()
    before = tiny_backend.stats.computed_tokens
    res = sim.choice_probs(scenes[:2])
    computed = tiny_backend.stats.computed_tokens - before
    prompt_tokens = sum(tiny_backend.prompt_lengths([build_prompt(s, "decision") for s in scenes[:2]]))
    # scoring computed only thoughts and behaviour suffixes: far less than one more prompt read
    assert computed < prompt_tokens / 2
    scored = [build_prompt(s, "decision", thought=t) for s, r in zip(scenes[:2], res) for t in r.rationales]
    plain = _probs(tiny_backend, scored, share=False)
    rows = [row for r in res for row in r.thought_probs]
    for got, want in zip(rows, plain, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


class _ScriptedBackend:
    """Writes a fixed thought (with a Behavior line, as a model would) and scores by thought."""

    def __init__(self):
        self.scored: list[str] = []

    def generate(self, prompts, n, temperature, top_p, max_tokens, stop, seed):
        assert stop == ["Behavior: ["]
        return [[f" mood {j}.\nKnowledge: fine.\nBehavior: [B]" for j in range(n)] for _ in prompts]

    def letter_logprobs(self, prompts, letters):
        self.scored.extend(p.assistant_prefix for p in prompts)
        out = []
        for p, lets in zip(prompts, letters):
            favourite = int(p.assistant_prefix.split("mood ")[1][0]) % len(lets)
            x = np.full(len(lets), -5.0)
            x[favourite] = 0.0
            out.append(x - np.log(np.exp(x).sum()))
        return out


def test_decision_flow_with_scripted_backend(scene_factory):
    backend = _ScriptedBackend()
    sim = UserSimulator(backend=backend, options=SimOptions(mode="decision", n_thoughts=2))
    res = sim.choice_probs(scene_factory(1, k=3))
    assert res.rationales == ["Thought:\nStimulus: mood 0.\nKnowledge: fine.", "Thought:\nStimulus: mood 1.\nKnowledge: fine."]
    assert backend.scored[0] == "Thought:\nStimulus: mood 0.\nKnowledge: fine.\nBehavior: ["
    assert res.thought_probs.argmax(axis=1).tolist() == [0, 1]
    np.testing.assert_allclose(res.probs, res.thought_probs.mean(axis=0))
    with pytest.raises(ConfigError, match="has no letter_logprobs"):
        UserSimulator(backend=object())


@pytest.mark.slow
def test_smollm2_shared_prefix_equals_plain(smollm2_backend, scene_factory):
    scenes = [scene_factory(i, k=3, history_lines=2) for i in range(3)]
    prompts = [build_prompt(s, "direct") for s in scenes]
    smollm2_backend.clear_cache()
    plain = _probs(smollm2_backend, prompts, share=False)
    shared = _probs(smollm2_backend, prompts, share=True)
    for a, b in zip(plain, shared):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # the real model puts real mass on the letters: not the uniform noise of a random model
    assert max(p.max() for p in plain) > 0.3


@pytest.mark.slow
def test_smollm2_decision_mode(smollm2_backend, scene_factory):
    opts = SimOptions(mode="decision", n_thoughts=1, max_thought_tokens=16, temperature=0.7, seed=1)
    sim = UserSimulator(backend=smollm2_backend, options=opts)
    res = sim.choice_probs(scene_factory(2, k=3, history_lines=2))
    thought = res.rationales[0]
    assert thought.startswith("Thought:\nStimulus:") and len(thought) > len("Thought:\nStimulus:") + 10
    assert "Behavior: [" not in thought
    assert res.probs.shape == (3,) and res.probs.sum() == pytest.approx(1.0)
