"""The likelihood-mode training recipe: it learns a knowable rule, its packed scoring is exact,
it resumes, and its checkpoints load in the simulator."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from usermirrorer.data_pipeline.scene import render_scene
from usermirrorer.data_pipeline.training.likelihood_train import (
    LikelihoodTrainRecipe,
    attach_offsets,
    batch_option_logprobs,
    command_line,
    encode_examples,
    load_train_config,
    option_logprobs,
    profile_config,
)
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim.backends.base import ChatPromptEncoder
from usermirrorer.sim.evaluation import evaluate
from usermirrorer.sim.simulator import ChoiceResult, SimOptions, UserSimulator

GENRES = ("comedy", "horror", "western", "musical")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The recipe sets torch's thread count for its process; give the other tests theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def genre_scenes(n: int, seed: int, prefix: str) -> list[dict]:
    """Scenes whose real option is the one whose genre word the history shows (a knowable rule)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        genre = GENRES[rng.integers(len(GENRES))]
        history = "\n".join(f"- a {genre} film, rated 5/5" for _ in range(3))
        order = [str(g) for g in rng.permutation(GENRES)]
        out.append(render_scene(
            dataset="toy", user_id=f"{prefix}{i}", timestamp="2000-01-01 00:00:00",
            impression_list=[f"{prefix}{i}-{g}" for g in order], profile="a viewer", history=history,
            action_list=[f"a {g} film" for g in order], item_id=f"{prefix}{i}-{genre}", item_pos=order.index(genre),
            scene_id=f"{prefix}{i}"))
    return out


def tiny_config(tmp_path, **overrides):
    return replace(profile_config("tiny", project_path=str(tmp_path)), **overrides).validate()


def test_training_learns_a_visible_rule(tiny_model_dir, tmp_path):
    k = len(GENRES)
    config = tiny_config(tmp_path, base_model=str(tiny_model_dir), loss="listwise", examples=320, k=k,
                         trainable_layers=2, lr=3e-3, warmup=4, batch_size=4, curve=(), save_every=10**6)
    recipe = LikelihoodTrainRecipe(config, None, ["train"], ["eval"], tmp_path / "run")
    recipe.setup(scenes=genre_scenes(config.examples, seed=0, prefix="t"))
    manifest = recipe.train(progress=False)
    held_out = genre_scenes(200, seed=1, prefix="h")
    sim = UserSimulator(model=manifest["model_dir"], backend="transformers",
                        options=SimOptions(mode="likelihood", likelihood_score="sum"), dtype="fp32")
    top1 = evaluate(held_out, sim, repeats=1).summary()["all"].top1_accuracy
    # chance is 1/K; five standard errors of a chance-level model's top-1 hit rate above it
    bound = 1 / k + 5 * math.sqrt((1 / k) * (1 - 1 / k) / len(held_out))
    assert top1 > bound, (top1, bound)
    base = UserSimulator(model=str(tiny_model_dir), backend="transformers",
                         options=SimOptions(mode="likelihood", likelihood_score="sum"), dtype="fp32")
    assert evaluate(held_out, base, repeats=1).summary()["all"].top1_accuracy < bound  # learned, not known before


def test_packed_option_scores_equal_each_option_scored_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from usermirrorer.sim.backends.transformers_backend import TransformersBackend
    from usermirrorer.sim.prompts import build_likelihood_prompt

    scenes = genre_scenes(3, seed=2, prefix="p")
    encoder = ChatPromptEncoder.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    backend = TransformersBackend(str(tiny_model_dir), dtype="fp32", share_prefix=False)
    for example, scene in zip(encode_examples(scenes, encoder, "listwise", 4096), scenes):
        with torch.no_grad():
            packed = option_logprobs(model, example, autocast=False).numpy()
        (alone,) = backend.continuation_logprobs([build_likelihood_prompt(scene)], [scene["text"]["action_list"]])
        np.testing.assert_allclose(packed, alone.logprob, atol=1e-5, rtol=0)
        assert example.target == scene["item_pos"] and len(example.options) == len(GENRES)
    # the batch's options packed after one neutral context: each option's PMI as scored alone
    recipe = LikelihoodTrainRecipe(replace(profile_config("tiny"), loss="listwise"), None, [], [], "unused")
    recipe.model, recipe.autocast = model, False
    examples = encode_examples(scenes, encoder, "listwise", 4096)
    neutral = build_likelihood_prompt(None)
    with torch.no_grad():
        pmi = recipe.pmi_scores(examples)
    for scores, scene in zip(pmi, scenes):
        texts = scene["text"]["action_list"]
        (ctx,) = backend.continuation_logprobs([build_likelihood_prompt(scene)], [texts])
        (prior,) = backend.continuation_logprobs([neutral], [texts])
        np.testing.assert_allclose(scores.numpy(), ctx.logprob - prior.logprob, atol=1e-5, rtol=0)
    (next_item,) = encode_examples(scenes[:1], encoder, "next-item", 4096)
    assert len(next_item.options) == 1 and next_item.target == 0


def test_a_padded_batch_scores_each_example_as_scored_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    scenes = genre_scenes(4, seed=3, prefix="b")
    for i, scene in enumerate(scenes):  # histories of different lengths, so the batch is padded
        scene["text"]["history"] = "\n".join([scene["text"]["history"]] * (i + 1))
    encoder = ChatPromptEncoder.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    examples = encode_examples(scenes, encoder, "listwise", 4096)
    assert len({e.n_tokens for e in examples}) == len(examples)
    with torch.no_grad():
        batched = batch_option_logprobs(model, examples, autocast=False)
        alone = [option_logprobs(model, e, autocast=False) for e in examples]
    for b, a in zip(batched, alone):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-5, rtol=0)


def _trainable(recipe):
    return {k: v.clone() for k, v in recipe._trainable_state().items()}


def test_an_interrupted_training_resumes_to_the_same_weights(tiny_model_dir, tmp_path):
    config = tiny_config(tmp_path, base_model=str(tiny_model_dir), examples=16, batch_size=4, save_every=8,
                         curve=(8,), warmup=1)
    scenes = genre_scenes(16, seed=3, prefix="r")
    whole = LikelihoodTrainRecipe(config, None, ["t"], ["e"], tmp_path / "whole")
    whole.setup(scenes=scenes)
    whole.train(progress=False)

    class Crash(LikelihoodTrainRecipe):
        calls = 0

        def batch_loss(self, batch):
            Crash.calls += 1
            if Crash.calls > 3:  # in the 4th step: the state of 8 examples is on disk
                raise KeyboardInterrupt
            return super().batch_loss(batch)

    crashed = Crash(config, None, ["t"], ["e"], tmp_path / "split")
    crashed.setup(scenes=scenes)
    with pytest.raises(KeyboardInterrupt):
        crashed.train(progress=False)
    resumed = LikelihoodTrainRecipe(config, None, ["t"], ["e"], tmp_path / "split")
    resumed.setup(scenes=scenes)
    assert resumed.done == 8
    manifest = resumed.train(progress=False)
    for name, value in _trainable(whole).items():
        torch.testing.assert_close(_trainable(resumed)[name], value, rtol=0, atol=1e-6)
    assert [c["examples"] for c in manifest["checkpoints"]] == [8, 16]
    assert json.loads((tmp_path / "split" / "training.json").read_text())["train_scenes"] == 16
    # another run's options are refused until --fresh
    other = LikelihoodTrainRecipe(replace(config, lr=1e-2), None, ["t"], ["e"], tmp_path / "split")
    with pytest.raises(ConfigError, match="other options.*--fresh"):
        other.setup(scenes=scenes)
    fresh = LikelihoodTrainRecipe(replace(config, lr=1e-2), None, ["t"], ["e"], tmp_path / "split", fresh=True)
    fresh.setup(scenes=scenes)
    assert fresh.done == 0


def test_eval_users_and_bad_configs_are_refused(tiny_model_dir, tmp_path):
    config = tiny_config(tmp_path, base_model=str(tiny_model_dir), examples=4, curve=())
    recipe = LikelihoodTrainRecipe(config, None, ["t"], ["r0"], tmp_path / "x")
    with pytest.raises(DataError, match="1 eval user"):
        recipe.setup(scenes=genre_scenes(4, seed=0, prefix="r"))
    with pytest.raises(ConfigError, match="loss must be one of"):
        tiny_config(tmp_path, loss="pairwise")
    with pytest.raises(ConfigError, match="curve points"):
        tiny_config(tmp_path, examples=10, curve=(20,))
    with pytest.raises(ConfigError, match="history_length must be one of"):
        tiny_config(tmp_path, history_length="all")
    # a resume state of one history length is refused by a run of the other
    plain = tiny_config(tmp_path)
    assert plain.fingerprint() != replace(plain, history_length="longest").fingerprint()
    assert command_line(replace(profile_config("cpu"), history_length="longest")).endswith(
        "--set history_length=longest")
    bad = tmp_path / "bad.yaml"
    bad.write_text("examples: 10\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['learning_rate'\]"):
        load_train_config(bad)
    bad.write_text("examples: ten\n")
    with pytest.raises(ConfigError, match="'examples' = 'ten'; expected a int"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="unknown training profile"):
        profile_config("gpu")
    assert profile_config("cpu", examples=1200).curve == (500, 1000)  # a shorter run keeps the points it reaches
    # the manifest's command reproduces a config: the profile plus what differs
    assert command_line(profile_config("cpu", examples=1200, batch_size=4)) == (
        "usermirrorer train --profile cpu --project-path ./workspace --examples 1200 --set batch_size=4 --curve 500,1000")


def test_letter_examples_carry_no_letter_prior_and_score_what_letter_mode_reads(tiny_model_dir):
    """``letters`` loss: the i-th scene's real item is moved to letter i mod K (cyclic shift), and
    the packed letter scores are the direct-mode letter log-probs of the shown order."""
    from transformers import AutoModelForCausalLM

    from usermirrorer.data_pipeline.scene import reorder_options
    from usermirrorer.sim.backends.transformers_backend import TransformersBackend
    from usermirrorer.sim.prompts import build_prompt

    k = len(GENRES)
    scenes = genre_scenes(3 * k, seed=4, prefix="l")
    encoder = ChatPromptEncoder.from_pretrained(str(tiny_model_dir))
    examples = encode_examples(scenes, encoder, "letters", 4096)
    assert [e.target for e in examples] == [i % k for i in range(len(scenes))]
    assert np.bincount([e.target for e in examples], minlength=k).tolist() == [3] * k  # every letter equally often
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    backend = TransformersBackend(str(tiny_model_dir), dtype="fp32", share_prefix=False)
    for i, (example, scene) in enumerate(zip(examples, scenes)):
        shift = (scene["item_pos"] - i) % k
        shown = reorder_options(scene, [(j + shift) % k for j in range(k)], "check")
        assert shown["item_pos"] == example.target
        # the options keep their order around the circle
        assert shown["text"]["action_list"] == [scene["text"]["action_list"][(j + shift) % k] for j in range(k)]
        prompt = build_prompt(shown, "direct")
        (expected,) = backend.letter_logprobs([prompt], [list(prompt.letters)])
        with torch.no_grad():
            packed = torch.log_softmax(option_logprobs(model, example, autocast=False), dim=0).numpy()
        np.testing.assert_allclose(packed, expected, atol=1e-5, rtol=0)


class KnowsOneGenre:
    """A choice model that knows the rule for one genre only: it favours the option of that genre
    when the history shows it, and is uniform on every other scene (the residual's offset model)."""

    def __init__(self, genre: str, boost: float = 4.0):
        self.genre, self.boost = genre, boost

    def choice_probs(self, scenes):
        out = []
        for scene in scenes:
            options = scene["text"]["action_list"]
            logits = np.array([self.boost if self.genre in o and self.genre in scene["text"]["history"] else 0.0
                               for o in options])
            with np.errstate(invalid="ignore"):  # an infinite boost gives NaN probabilities on purpose
                out.append(ChoiceResult(probs=np.exp(logits) / np.exp(logits).sum()))
        return out


def test_residual_training_learns_what_its_offset_model_misses(tiny_model_dir, tmp_path):
    k = len(GENRES)
    offset_model = KnowsOneGenre("comedy")
    config = tiny_config(tmp_path, base_model=str(tiny_model_dir), loss="residual", examples=320, k=k,
                         trainable_layers=2, lr=3e-3, warmup=4, batch_size=4, curve=(), save_every=10**6)
    with pytest.raises(ConfigError, match="needs an offset model"):
        LikelihoodTrainRecipe(config, None, ["train"], ["eval"], tmp_path / "run")
    recipe = LikelihoodTrainRecipe(config, None, ["train"], ["eval"], tmp_path / "run", offset_model=offset_model,
                                   offset_info={"model": "knows comedy"})
    train = genre_scenes(config.examples, seed=0, prefix="t")
    recipe.setup(scenes=train)
    # the loss is the listwise NLL with the offsets added to the scaled PMI scores
    batch = recipe.examples[:4]
    with torch.no_grad():
        expected = [-torch.log_softmax(s * torch.exp(-recipe.log_temperature) + torch.tensor(e.offset), 0)[e.target]
                    for s, e in zip(recipe.pmi_scores(batch), batch)]
        assert torch.allclose(recipe.batch_loss(batch), torch.stack(expected))
    manifest = recipe.train(progress=False)
    assert manifest["offset_model"]["model"] == "knows comedy"

    held_out = [s for s in genre_scenes(300, seed=1, prefix="h") if "comedy" not in s["text"]["history"]]
    examples = encode_examples(held_out, recipe.encoder, "residual", config.max_tokens)
    attach_offsets(examples, held_out, offset_model)
    assert all(np.ptp(e.offset) == 0 for e in examples)  # the offset model knows nothing of these scenes
    recipe.model.eval()
    with torch.no_grad():
        scores = [s.numpy() for at in range(0, len(examples), 8) for s in recipe.pmi_scores(examples[at : at + 8])]
    top1 = float(np.mean([np.argmax(s) == e.target for s, e in zip(scores, examples)]))
    # chance is 1/K on the scenes the offsets leave uniform; five standard errors above it
    bound = 1 / k + 5 * math.sqrt((1 / k) * (1 - 1 / k) / len(examples))
    assert top1 > bound, (top1, bound)
    comedy = [s for s in genre_scenes(40, seed=2, prefix="c") if "comedy" in s["text"]["history"]][:1]
    with pytest.raises(DataError, match="expected 4 finite ones"):  # exp(inf) / inf: NaN probabilities
        attach_offsets(encode_examples(comedy, recipe.encoder, "residual", config.max_tokens), comedy,
                       KnowsOneGenre("comedy", boost=float("inf")))
