"""A misspelt model name gets "did you mean ...?" before anything reaches the network (#15)."""

from __future__ import annotations

import socket

import gymnasium as gym
import pytest

import usermirrorer  # noqa: F401  registers usermirrorer/RecEnv-v0
from usermirrorer.errors import ConfigError
from usermirrorer.sim import choice_models
from usermirrorer.sim.models import check_model_name, resolve_model


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt and name lookup fails loudly and is recorded."""
    attempts: list[str] = []

    def refuse(what):
        def call(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"network call ({what}) for a misspelt model name")

        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    # Nor is a backend built (it would import torch and call from_pretrained with the name).
    monkeypatch.setattr(choice_models, "UserSimulator", refuse("UserSimulator"))
    return attempts


def test_misspelt_baseline_in_the_env_suggests_the_right_name(small_ds, no_network):
    with pytest.raises(ConfigError) as info:
        gym.make("usermirrorer/RecEnv-v0", dataset=small_ds, model="populatiry")
    message = str(info.value)
    assert "did you mean 'popularity'?" in message
    for name in (
        "smollm2-135m",
        "tiny-random",
        "usermirrorer-llama-3b",
        "random",
        "collaborative",
        "mnl",
    ):
        assert name in message
    assert no_network == []


def test_misspelt_registry_name_is_refused_by_resolve_model(no_network):
    with pytest.raises(ConfigError, match="did you mean 'smollm2-135m'"):
        resolve_model("smolm2-135m")
    with pytest.raises(ConfigError, match="did you mean 'tiny-random'"):
        choice_models.make_choice_model("tiny_random")
    assert no_network == []


def test_names_that_are_not_typos_pass(tmp_path, monkeypatch):
    check_model_name("popularity", ("popularity",))
    check_model_name("SmolLM2-135M")  # registry names are case-insensitive
    check_model_name("HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub id org/name
    check_model_name("gpt2")  # a bare hub id far from every known name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "populatiry").mkdir()
    check_model_name("populatiry")  # an existing folder, whatever its name
