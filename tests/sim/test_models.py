"""Model registry: names, local folders, the tiny random model."""

from __future__ import annotations

import pytest

from usermirrorer.errors import ConfigError
from usermirrorer.sim.backends import make_backend
from usermirrorer.sim.models import build_tiny_random, resolve_model, smollm2_gguf_path


def test_registry_names(tmp_path, tiny_model_dir):
    assert resolve_model("usermirrorer-llama-3b") == "Joinn/UserMirrorrer-Llama-DPO"
    assert resolve_model("usermirrorer-qwen-3b") == "Joinn/UserMirrorrer-Qwen-DPO"
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model("someorg/some-model") == "someorg/some-model"  # hub id passes through
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path))
    assert smollm2_gguf_path().name.endswith(".gguf")


def test_tiny_random_is_seeded(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    build_tiny_random(tmp_path / "again")
    a = load_file(str(tiny_model_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "again" / "tokenizer.json").exists()
    n_params = sum(v.numel() for v in a.values())
    assert 1_000_000 < n_params < 2_500_000


def test_make_backend_names():
    with pytest.raises(ConfigError, match="not known"):
        make_backend("tensorrt", "tiny-random")
