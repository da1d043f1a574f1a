"""The torchtune components our fine-tuning configs name (``_component_: ...`` in the YAMLs).

The SmolLM2 configs build the model from the checkpoint's own ``config.json``
(:func:`llama_from_hf_config`), so they also train any small Llama-architecture folder with
tied embeddings (the tests use the tiny random model). SmolLM2's tokenizer is a GPT-2-style
byte-level BPE; :func:`smollm2_tokenizer` reads it from ``vocab.json`` + ``merges.txt``
(written from ``tokenizer.json`` by :func:`export_bpe_files`) and pre-tokenises exactly like
the Hugging Face tokenizer (the GPT-2 regex of its ``ByteLevel`` pre-tokenizer), so training sees
the same token ids as the simulator at inference.

torchtune is imported inside the builders: they run in torchtune's process, and importing this
module stays cheap.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from usermirrorer.errors import ConfigError

__all__ = [
    "read_hf_config",
    "llama_from_hf_config",
    "lora_llama_from_hf_config",
    "smollm2_tokenizer",
    "export_bpe_files",
]

# GPT-2's byte-level pre-tokenisation pattern (what tokenizers' ByteLevel(use_regex=True) uses).
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def read_hf_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{model_dir} is not a local Hugging Face folder (no config.json); fine-tuning "
                          "needs the weights on disk")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# model + tokenizer builders named by the SmolLM2 YAMLs (``_component_`` dotpaths)
# --------------------------------------------------------------------------------------------

def _llama_args(config_json: str) -> dict[str, Any]:
    cfg = json.loads(Path(config_json).read_text())
    rope = cfg.get("rope_parameters") or {}
    rope_base = rope.get("rope_theta", cfg.get("rope_theta", 10_000.0))
    scaling = cfg.get("rope_scaling") or {}
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or \
            rope.get("rope_type", "default") != "default":
        raise ConfigError(f"{config_json}: RoPE scaling {scaling or rope} is not supported by the generic "
                          "builder; use the model family's own torchtune builder")
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if head_dim * cfg["num_attention_heads"] != cfg["hidden_size"]:
        raise ConfigError(f"{config_json}: head_dim {head_dim} x heads != hidden_size; not supported")
    return {
        "vocab_size": cfg["vocab_size"],
        "num_layers": cfg["num_hidden_layers"],
        "num_heads": cfg["num_attention_heads"],
        "num_kv_heads": cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        "embed_dim": cfg["hidden_size"],
        "intermediate_dim": cfg["intermediate_size"],
        "max_seq_len": cfg.get("max_position_embeddings", 8192),
        "norm_eps": cfg.get("rms_norm_eps", 1e-5),
        "rope_base": rope_base,
        # scale_factor 1 makes Llama-3 scaled RoPE the plain RoPE the HF config describes
        "scale_factor": 1,
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", True)),
    }


def llama_from_hf_config(config_json: str):
    """torchtune Llama decoder with the geometry of an HF Llama ``config.json`` (plain RoPE).

    For SmolLM2-135M this is 30 layers, 9 heads / 3 KV heads, hidden 576, RoPE base 100,000,
    tied embeddings.
    """
    from torchtune.models.llama3_2._component_builders import llama3_2

    return llama3_2(**_llama_args(config_json))


def lora_llama_from_hf_config(config_json: str, lora_attn_modules: list[str], apply_lora_to_mlp: bool = False,
                              apply_lora_to_output: bool = False, lora_rank: int = 8, lora_alpha: float = 16,
                              lora_dropout: float = 0.0):
    """:func:`llama_from_hf_config` with LoRA adapters (used by the DPO config)."""
    from torchtune.models.llama3_2._component_builders import lora_llama3_2

    return lora_llama3_2(lora_attn_modules=lora_attn_modules, apply_lora_to_mlp=apply_lora_to_mlp,
                         apply_lora_to_output=apply_lora_to_output, lora_rank=lora_rank,
                         lora_alpha=lora_alpha, lora_dropout=lora_dropout, **_llama_args(config_json))


@lru_cache(maxsize=1)
def _smollm2_tokenizer_class():
    import regex
    from torchtune.models.qwen2._tokenizer import Qwen2Tokenizer

    pattern = regex.compile(_GPT2_PATTERN)

    class SmolLM2Tokenizer(Qwen2Tokenizer):
        """Qwen2's ChatML byte-level BPE with GPT-2 pre-tokenisation (SmolLM2's ByteLevel regex)."""

        def _tokenize(self, text: str) -> list[str]:
            tokens: list[str] = []
            for word in pattern.findall(text):
                mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                tokens.extend(self._bpe(mapped).split(" "))
            return tokens

    return SmolLM2Tokenizer


def smollm2_tokenizer(path: str, merges_file: str, special_tokens_path: str, max_seq_len: int | None = None):
    """SmolLM2 tokenizer for torchtune (ChatML turns, ``<|im_end|>`` ends each turn).

    Args:
        path: ``vocab.json``; merges_file: ``merges.txt`` (see :func:`export_bpe_files`).
        special_tokens_path: the model's ``tokenizer.json`` (its added tokens give the ids of
            ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``).
        max_seq_len: truncate tokenised samples to this length.
    """
    from torchtune.modules.transforms.tokenizers import parse_hf_tokenizer_json

    cls = _smollm2_tokenizer_class()
    return cls(path=path, merges_file=merges_file, special_tokens=parse_hf_tokenizer_json(special_tokens_path),
               max_seq_len=max_seq_len)


def export_bpe_files(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` from a BPE ``tokenizer.json`` (once; reused after).

    Raises:
        ConfigError: the tokenizer is not a BPE model (e.g. SentencePiece/tiktoken).
    """
    out = Path(out_dir)
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    if vocab_file.exists() and merges_file.exists():
        return out
    src = Path(model_dir) / "tokenizer.json"
    if not src.exists():
        raise ConfigError(f"{model_dir} has no tokenizer.json to export vocab.json/merges.txt from")
    model = json.loads(src.read_text(encoding="utf-8")).get("model", {})
    if model.get("type") != "BPE":
        raise ConfigError(f"{src}: tokenizer model is {model.get('type')!r}, expected a byte-level BPE")
    out.mkdir(parents=True, exist_ok=True)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    tmp_v, tmp_m = vocab_file.with_suffix(".tmp"), merges_file.with_suffix(".tmp")
    tmp_v.write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    tmp_m.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    os.replace(tmp_v, vocab_file)
    os.replace(tmp_m, merges_file)
    return out


# --------------------------------------------------------------------------------------------
# running a recipe
# --------------------------------------------------------------------------------------------
