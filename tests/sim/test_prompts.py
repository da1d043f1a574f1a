"""Prompt construction, overrides from files and the 26-option limit."""

from __future__ import annotations

import json

import pytest

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.sim import DEFAULT_PROMPTS, PromptSet, build_messages, build_prompt, load_prompts, scene_id


def test_user_message_layout(scene_factory):
    scene = scene_factory(1, k=3)
    system, user = build_messages(scene, "direct")
    assert system == {"role": "system", "content": DEFAULT_PROMPTS.direct_system}
    t = scene["text"]
    expected = (
        f"# User Profile\n{t['profile']}\n\n## History\n{t['history']}\n\n# Exposure List\n"
        f"[A] {t['action_list'][0]}\n[B] {t['action_list'][1]}\n[C] {t['action_list'][2]}"
    )
    assert user == {"role": "user", "content": expected}


def test_modes_select_system_prompt_and_prefix(scene_factory):
    scene = scene_factory(2)
    direct = build_prompt(scene, "direct")
    decision = build_prompt(scene, "decision")
    scored = build_prompt(scene, "decision", thought="Thought:\nStimulus: bored.\nBehavior: [C]")
    assert direct.assistant_prefix == "Behavior: ["
    assert decision.assistant_prefix == "Thought:\nStimulus:"
    # a thought is cut before any behavior line it carries, then the marker is appended once
    assert scored.assistant_prefix == "Thought:\nStimulus: bored.\nBehavior: ["
    assert direct.messages[0]["content"] == DEFAULT_PROMPTS.direct_system
    assert decision.messages[0]["content"] == DEFAULT_PROMPTS.decision_system
    for word in ("Stimulus", "Knowledge", "Evaluation", "logical", "intuitive", "impulsive", "habitual", "Behavior: [X]"):
        assert word in DEFAULT_PROMPTS.decision_system
    assert direct.letters == ("A", "B", "C", "D", "E") and direct.scene_id == scene_id(scene)


def test_scene_id_default_and_explicit(scene_factory):
    scene = scene_factory(3)
    assert scene_id(scene) == "toy:u3:m3:1998-03-04 12:00:00"
    assert scene_id({**scene, "scene_id": 17}) == "17"


def test_more_than_26_options_is_a_clear_error(scene_factory):
    scene = scene_factory(0, k=27)
    with pytest.raises(ConfigError, match="27 options.*at most 26"):
        build_messages(scene)
    build_messages(scene_factory(0, k=26))  # 26 is fine


def test_malformed_scene_names_the_field(scene_factory):
    scene = scene_factory(0)
    scene["text"]["action_list"] = "not a list"
    with pytest.raises(DataError, match="action_list"):
        build_messages(scene)
    with pytest.raises(DataError, match="empty"):
        build_messages({**scene_factory(0), "text": {"profile": "", "history": "", "action_list": []}})


def test_override_from_yaml_and_json(tmp_path, scene_factory):
    yml = tmp_path / "p.yaml"
    yml.write_text(
        "direct_system: |\n  Pick a movie.\n"
        "user_template: \"Who: {profile}\\nSeen: {history}\\nOptions:\\n{exposure_list}\"\n"
        "option_template: \"({letter}) {item}\"\n",
        encoding="utf-8",
    )
    prompts = load_prompts(yml)
    system, user = build_messages(scene_factory(1, k=2), "direct", prompts)
    assert system["content"] == "Pick a movie.\n"
    assert user["content"].startswith("Who: age: 21") and "\nOptions:\n(A) Feature film 10" in user["content"]
    assert prompts.decision_system == DEFAULT_PROMPTS.decision_system  # untouched fields keep defaults

    js = tmp_path / "p.json"
    js.write_text(json.dumps({"decision_prefix": "Reasoning:"}), encoding="utf-8")
    assert build_prompt(scene_factory(1), "decision", load_prompts(js)).assistant_prefix == "Reasoning:"


def test_override_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("direct_sytem: typo\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown prompt field.*direct_sytem"):
        load_prompts(bad)
    missing = tmp_path / "m.json"
    missing.write_text(json.dumps({"user_template": "{profile} only"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="missing \\['history', 'exposure_list'\\]"):
        load_prompts(missing)
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts(tmp_path / "nope.yaml")
    txt = tmp_path / "p.txt"
    txt.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=".yaml, .yml or .json"):
        load_prompts(txt)
    with pytest.raises(ConfigError, match="mode"):
        PromptSet().system("chatty")
