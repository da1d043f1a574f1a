"""Fine-tuning: every shipped YAML loads, the tokenizer matches HF, SFT + DPO run on CPU and the
checkpoint loads in UserSimulator."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_toys import toy_scenes

from usermirrorer.data_pipeline.training.preference import build_direct_pref, filter_preferences
from usermirrorer.data_pipeline.training.uncertainty import FilterConfig
from usermirrorer.data_pipeline.training.finetune import RECIPES, default_config, finetune, shipped_configs
from usermirrorer.errors import ConfigError, DataError


def _components(node, found):
    if isinstance(node, dict):
        if "_component_" in node:
            found.append(node["_component_"])
        for v in node.values():
            _components(v, found)
    elif isinstance(node, list):
        for v in node:
            _components(v, found)
    return found


def test_every_shipped_config_loads_and_names_importable_components():
    from omegaconf import OmegaConf

    configs = shipped_configs()
    assert {"smollm2_135m_sft", "smollm2_135m_dpo", "llama3_2_3b_sft", "llama3_2_3b_dpo",
            "qwen2_5_3b_sft", "qwen2_5_3b_dpo"} <= set(configs)
    for name, path in configs.items():
        text = path.read_text()
        assert text.startswith("#"), f"{name} must open with a comment"
        stage = name.rsplit("_", 1)[1]
        assert f"tune run {RECIPES[stage]}" in text.split("\n\n")[0] + text, name
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key in ("model", "tokenizer", "dataset", "checkpointer", "optimizer", "loss", "epochs", "output_dir"):
            assert key in cfg, f"{name}: missing {key}"
        for dotpath in _components(cfg, []):
            module, _, attr = dotpath.rpartition(".")
            assert callable(getattr(importlib.import_module(module), attr)), f"{name}: {dotpath}"
        lr = float(cfg["optimizer"]["lr"])
        if stage == "sft":
            assert (lr, cfg["epochs"], cfg["dataset"]["conversation_column"]) == (2e-4, 1, "messages_chosen")
        else:
            assert (lr, cfg["epochs"], cfg["loss"]["beta"]) == (1e-5, 2, 0.1)
            assert cfg["dataset"]["column_map"] == {"chosen": "messages_chosen", "rejected": "messages_rejected"}


def test_default_config_by_architecture(tmp_path):
    def folder(**cfg):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        return d

    assert default_config(folder(model_type="qwen2"), "dpo") == "qwen2_5_3b_dpo"
    assert default_config(folder(model_type="llama", num_hidden_layers=28, hidden_size=3072), "sft") == "llama3_2_3b_sft"
    assert default_config(folder(model_type="llama", num_hidden_layers=30, hidden_size=576, tie_word_embeddings=True),
                          "sft") == "smollm2_135m_sft"
    with pytest.raises(ConfigError, match="no shipped fine-tuning config"):
        default_config(folder(model_type="mamba"), "sft")


def _decision_pref(n_scenes: int, rng: np.random.Generator) -> list[dict]:
    """Preference records from the real filter on made-up thoughts and probabilities."""
    scenes = []
    for s in toy_scenes(n_scenes):
        k, pos = s["choice_cnt"], s["item_pos"]
        hit, miss = np.full(k, 0.0), np.full(k, 0.0)
        hit[pos], miss[(pos + 1) % k] = 1.0, 1.0
        s = {**s, "scene_id": s["item_id"],
             "probs": {"strong": [hit.tolist(), miss.tolist()], "weak": [miss.tolist()]},
             "thoughts": {"strong": [f"Thought:\nStimulus: I feel like option {'ABCD'[pos]}.",
                                     "Thought:\nStimulus: something else."],
                          "weak": ["Thought:\nStimulus: whatever."]}}
        scenes.append(s)
    records, _, report = filter_preferences(scenes, FilterConfig(filtered_num=n_scenes), rng)
    assert report.scenes_selected == n_scenes
    return records


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_pref_records_render_the_simulator_prompt():
    from usermirrorer.sim.prompts import build_prompt

    rec = _decision_pref(2, np.random.default_rng(0))[0]
    scene = toy_scenes(2)[0]
    chosen, rejected = rec["messages_chosen"], rec["messages_rejected"]
    assert [m["role"] for m in chosen] == ["system", "user", "assistant"]
    prompt = build_prompt(scene, "decision", thought=f"Thought:\nStimulus: I feel like option {rec['real_behavior']}.")
    assert chosen[:2] == list(prompt.messages) == rejected[:2]
    # training text = exactly what the simulator scores, followed by the letter and "]"
    assert chosen[2]["content"] == prompt.assistant_prefix + rec["chosen_behavior"] + "]"
    assert rec["chosen_behavior"] == rec["real_behavior"] != rec["rejected_behavior"]
    assert rejected[2]["content"].endswith(f"\nBehavior: [{rec['rejected_behavior']}]")


def test_direct_pref_rejects_a_uniform_other_option():
    scenes = toy_scenes(1) * 4000
    recs = build_direct_pref(scenes, np.random.default_rng(0))
    k, pos = scenes[0]["choice_cnt"], scenes[0]["item_pos"]
    letters = [r["rejected_behavior"] for r in recs]
    assert all(r["chosen_behavior"] == "ABCD"[pos] for r in recs) and "ABCD"[pos] not in letters
    counts = np.asarray([letters.count(x) for x in "ABCD"[:k] if x != "ABCD"[pos]])
    np.testing.assert_allclose(counts / len(recs), 1 / (k - 1), atol=0.03)
    assert recs[0]["messages_chosen"][2]["content"] == f"Behavior: [{'ABCD'[pos]}]"
    assert recs[0]["messages_chosen"][0]["content"].startswith("You are a user simulator")
    with pytest.raises(DataError, match=">= 2 options"):
        build_direct_pref([{"text": {"profile": "", "history": "", "action_list": ["x"]}, "item_pos": 0}],
                          np.random.default_rng(0))


def test_finetune_rejects_bad_inputs(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        finetune("sft", str(tiny_model_dir), empty, tmp_path / "o")
    bad = _write(tmp_path / "bad.jsonl", [{"messages_chosen": [{"role": "user", "content": "x"}]}])
    with pytest.raises(DataError, match="messages_rejected"):
        finetune("dpo", str(tiny_model_dir), bad, tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown stage"):
        finetune("ppo", str(tiny_model_dir), bad, tmp_path / "o")


def test_sft_then_dpo_on_cpu_and_load_in_simulator(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from usermirrorer.sim import UserSimulator

    pref = _write(tmp_path / "toy_pref.jsonl", _decision_pref(6, np.random.default_rng(1)))
    sft = finetune("sft", str(tiny_model_dir), pref, tmp_path / "sft", max_steps_per_epoch=3, batch_size=2)
    dpo = finetune("dpo", str(sft.model_dir), pref, tmp_path / "dpo", max_steps_per_epoch=2, batch_size=2, epochs=1)
    for stage, steps in (("sft", 3), ("dpo", 2)):
        log = next((tmp_path / stage / "logs").iterdir()).read_text()
        assert f"Step {steps} | loss:" in log, f"{stage} should take {steps} optimizer steps"
    for result in (sft, dpo):
        files = {p.name for p in result.model_dir.iterdir()}
        assert "config.json" in files and "tokenizer.json" in files and not any(f.startswith("adapter") for f in files)
    base = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    tuned = {}
    for f in dpo.model_dir.glob("*.safetensors"):
        tuned.update(load_file(str(f)))
    assert set(base) <= set(tuned) | {"lm_head.weight"}
    changed = [k for k in base if k in tuned and not np.allclose(base[k].float().numpy(), tuned[k].float().numpy())]
    assert len(changed) > len(base) // 2, "training should move most weights"

    sim = UserSimulator(model=str(dpo.model_dir), dtype="float32")
    result = sim.choice_probs(toy_scenes(1)[0])
    assert result.probs.shape == (toy_scenes(1)[0]["choice_cnt"],)
    assert result.probs.sum() == pytest.approx(1.0)


@pytest.mark.slow
def test_torchtune_tokenizer_matches_smollm2_hf_tokenizer(tmp_path):
    from torchtune.data import Message
    from transformers import AutoTokenizer

    from usermirrorer.data_pipeline.training.torchtune_components import export_bpe_files, smollm2_tokenizer
    from usermirrorer.sim.models import resolve_model

    model_dir = resolve_model("smollm2-135m")
    tok_dir = export_bpe_files(model_dir, tmp_path)
    ours = smollm2_tokenizer(f"{tok_dir}/vocab.json", f"{tok_dir}/merges.txt", f"{model_dir}/tokenizer.json")
    hf = AutoTokenizer.from_pretrained(model_dir)
    for rec in _decision_pref(3, np.random.default_rng(2)):
        for msgs in (rec["messages_chosen"], rec["messages_rejected"]):
            text = "\n".join(m["content"] for m in msgs) + "  12  345\n\n[B]  café — 日本"
            assert ours.encode(text, add_bos=False, add_eos=False) == hf.encode(text, add_special_tokens=False)
            tokens, _ = ours.tokenize_messages([Message.from_dict(dict(m)) for m in msgs])
            reference = hf.apply_chat_template(msgs, tokenize=False)
            assert hf.decode(tokens) == reference.rstrip("\n")
            assert tokens == hf.encode(reference.rstrip("\n"), add_special_tokens=False)


@pytest.mark.slow
def test_sft_on_smollm2_one_step_loads_in_simulator(tmp_path):
    from usermirrorer.sim import UserSimulator

    pref = _write(tmp_path / "toy_pref.jsonl", _decision_pref(4, np.random.default_rng(3)))
    sft = finetune("sft", "smollm2-135m", pref, tmp_path / "sft", max_steps_per_epoch=1, batch_size=1)
    sim = UserSimulator(model=str(sft.model_dir))
    result = sim.choice_probs(toy_scenes(1)[0])
    assert result.probs.sum() == pytest.approx(1.0) and np.isfinite(result.probs).all()
