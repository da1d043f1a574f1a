"""Fine-tuning with torchtune: SFT on chosen thoughts, then DPO on chosen/rejected (DESIGN.md §7.6).

We ship torchtune YAML configs (``usermirrorer/data_pipeline/configs/``) for SmolLM2-135M
(CPU), Llama-3.2-3B and Qwen2.5-3B (GPU). :func:`finetune` fills in the paths of one config
and runs the torchtune recipe in a child process (``python -m torchtune._cli.tune run ...``,
i.e. exactly ``tune run``), then publishes the last epoch's checkpoint as a clean Hugging Face
folder that ``UserSimulator(model=<folder>)`` loads.

The SmolLM2 configs build the model from the checkpoint's own ``config.json``
(:func:`llama_from_hf_config`), so they also train any small Llama-architecture folder with
tied embeddings (the tests use the tiny random model). SmolLM2's tokenizer is a GPT-2-style
byte-level BPE; :func:`smollm2_tokenizer` reads it from ``vocab.json`` + ``merges.txt``
(written from ``tokenizer.json`` by :func:`export_bpe_files`) and pre-tokenises exactly like
the Hugging Face tokenizer (the GPT-2 regex of its ``ByteLevel`` pre-tokenizer), so training sees
the same token ids as the simulator at inference.

Nothing heavy is imported at module level: torchtune and torch are imported inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from usermirrorer.errors import BackendError, ConfigError, DataError, MissingDependency

__all__ = [
    "CONFIG_DIR",
    "RECIPES",
    "FinetuneResult",
    "shipped_configs",
    "config_path",
    "default_config",
    "export_bpe_files",
    "smollm2_tokenizer",
    "llama_from_hf_config",
    "lora_llama_from_hf_config",
    "finetune",
    "publish_checkpoint",
    "add_parser",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RECIPES = {"sft": "full_finetune_single_device", "dpo": "lora_dpo_single_device"}
# Files of a torchtune epoch folder that a Hugging Face loader needs (weights are matched by suffix).
_HF_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
             "model.safetensors.index.json")
# GPT-2's byte-level pre-tokenisation pattern (what tokenizers' ByteLevel(use_regex=True) uses).
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@dataclass(frozen=True)
class FinetuneResult:
    """What one fine-tuning stage produced.

    Attributes:
        stage: "sft" or "dpo".
        model_dir: clean Hugging Face folder of the trained model (load it with UserSimulator).
        run_dir: torchtune's output folder (epoch checkpoints, logs).
        log_file: the recipe's combined stdout/stderr.
        seconds: wall time of the recipe.
        command: the exact command that ran.
    """

    stage: str
    model_dir: Path
    run_dir: Path
    log_file: Path
    seconds: float
    command: tuple[str, ...]

    def __repr__(self) -> str:
        return f"FinetuneResult(stage={self.stage!r}, model_dir='{self.model_dir}', seconds={self.seconds:.1f})"


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------

def shipped_configs() -> dict[str, Path]:
    """Name -> path of every YAML config shipped with the package."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def config_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped config name (``smollm2_135m_sft``) or a YAML path -> the YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return path
    configs = shipped_configs()
    if str(name_or_path) not in configs:
        raise ConfigError(f"unknown fine-tuning config {str(name_or_path)!r}; shipped configs: "
                          f"{sorted(configs)}, or pass a path to a .yaml file")
    return configs[str(name_or_path)]


def default_config(model_dir: str | os.PathLike, stage: str) -> str:
    """Pick the shipped config for a model folder from its ``config.json``.

    Qwen2 architectures get ``qwen2_5_3b_<stage>``, Llama with 3B geometry (28 layers, 3072
    hidden) gets ``llama3_2_3b_<stage>``, any other Llama gets ``smollm2_135m_<stage>`` (which
    builds the model from ``config.json``).
    """
    if stage not in RECIPES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {sorted(RECIPES)}")
    cfg = _read_hf_config(model_dir)
    arch = cfg.get("model_type")
    if arch == "qwen2":
        return f"qwen2_5_3b_{stage}"
    if arch == "llama":
        if cfg.get("num_hidden_layers") == 28 and cfg.get("hidden_size") == 3072:
            return f"llama3_2_3b_{stage}"
        if not cfg.get("tie_word_embeddings", False):
            raise ConfigError(f"{model_dir}: a Llama model without tied embeddings has no shipped config; "
                              "copy a YAML from usermirrorer/data_pipeline/configs and pass --config")
        return f"smollm2_135m_{stage}"
    raise ConfigError(f"{model_dir}: model_type {arch!r} has no shipped fine-tuning config "
                      "(llama, qwen2 are supported); pass --config with your own YAML")


def _read_hf_config(model_dir: str | os.PathLike) -> dict[str, Any]:
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

def _check_pref_file(path: Path, stage: str) -> int:
    from usermirrorer.data_pipeline.jsonl import iter_jsonl

    if not path.exists():
        raise DataError(f"preference file {path} does not exist; run `usermirrorer filter` first")
    need = ("messages_chosen",) if stage == "sft" else ("messages_chosen", "messages_rejected")
    n = 0
    for lineno, rec in iter_jsonl(path):
        missing = [c for c in need if not rec.get(c)]
        if missing:
            raise DataError(f"{path}:{lineno}: record lacks {missing}; expected the output of "
                            "`usermirrorer filter` (or build_direct_pref)")
        n += 1
    if n == 0:
        raise DataError(f"preference file {path} is empty: the filter kept no scene; use more train "
                        "scenes or more thoughts per scene")
    return n


def _weight_files(model_dir: Path) -> list[str]:
    files = sorted(p.name for p in model_dir.glob("*.safetensors") if not p.name.startswith("adapter"))
    if not files:
        raise ConfigError(f"{model_dir} has no *.safetensors weights; torchtune's HF checkpointer needs them")
    return files


def finetune(
    stage: str,
    model: str,
    pref_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    max_steps_per_epoch: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    threads: int | None = 2,
    quiet: bool = True,
) -> FinetuneResult:
    """Run one torchtune stage and publish its last checkpoint as an HF folder.

    Args:
        stage: "sft" (``full_finetune_single_device`` on ``messages_chosen``) or "dpo"
            (``lora_dpo_single_device`` on chosen/rejected).
        model: registry name or local HF folder to start from (for DPO: the SFT result).
        pref_file: ``<CONFIG>_pref.jsonl``.
        output_dir: the stage's folder: torchtune writes ``epoch_*`` and ``logs`` there, the
            published model goes to ``<output_dir>/model``.
        config: shipped config name or YAML path; default from the model's architecture.
        overrides: extra ``key=value`` torchtune overrides (e.g. ``optimizer.lr=1e-4``).
        max_steps_per_epoch, epochs, batch_size: shortcuts for the common overrides;
            ``batch_size`` is examples per optimizer step (it also sets
            ``gradient_accumulation_steps=1``). The SmolLM2 DPO config instead accumulates 4
            single pairs, because its peak memory grows with the batch (~7 GB per pair on CPU).
        threads: torch threads of the child process (``OMP_NUM_THREADS``); None leaves it.
        quiet: write the recipe's output only to the log file.

    Raises:
        BackendError: the recipe failed (the message holds the end of its log).
        MissingDependency: torchtune is not installed.
    """
    import importlib.util

    from usermirrorer.sim.models import resolve_model

    if stage not in RECIPES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {sorted(RECIPES)}")
    if importlib.util.find_spec("torchtune") is None:
        raise MissingDependency("torchtune", "finetune")
    pref_file = Path(pref_file).resolve()
    _check_pref_file(pref_file, stage)
    model_dir = Path(resolve_model(model)).resolve()
    if not model_dir.exists():
        raise ConfigError(f"model {model!r} resolved to {model_dir}, which is not a local folder; fine-tuning "
                          "needs the weights on disk")
    yaml_path = config_path(config or default_config(model_dir, stage))
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    # a finished earlier run's epochs would be mistaken for this run's result
    for old in output_dir.glob("epoch_*"):
        shutil.rmtree(old)

    args = [f"model_dir={model_dir}", f"data_file={pref_file}", f"output_dir={output_dir}",
            f"checkpointer.checkpoint_files=[{','.join(_weight_files(model_dir))}]"]
    if "tokenizer_dir" in yaml_path.read_text():
        tok_dir = model_dir if (model_dir / "vocab.json").exists() else export_bpe_files(model_dir, output_dir / "tokenizer")
        args.append(f"tokenizer_dir={tok_dir}")
    if max_steps_per_epoch is not None:
        args.append(f"max_steps_per_epoch={max_steps_per_epoch}")
    if epochs is not None:
        args.append(f"epochs={epochs}")
    if batch_size is not None:
        # the shortcut means examples per optimizer step: no accumulation on top of it
        args += [f"batch_size={batch_size}", "gradient_accumulation_steps=1"]
    args.extend(overrides)
    command = (sys.executable, "-m", "torchtune._cli.tune", "run", RECIPES[stage], "--config", str(yaml_path), *args)

    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    log_file = output_dir / f"{stage}.log"
    start = time.perf_counter()
    with log_file.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        for line in proc.stdout or ():
            log.write(line)
            if not quiet:
                sys.stdout.write(line)
        rc = proc.wait()
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise BackendError(f"torchtune {RECIPES[stage]} failed (exit {rc}); full log: {log_file}\n{tail}")
    epochs_done = sorted(output_dir.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
    if not epochs_done:
        raise BackendError(f"torchtune {RECIPES[stage]} finished but wrote no epoch_* folder in {output_dir}; "
                           f"see {log_file}")
    published = publish_checkpoint(epochs_done[-1], output_dir / "model")
    return FinetuneResult(stage=stage, model_dir=published, run_dir=output_dir, log_file=log_file,
                          seconds=seconds, command=command)


def publish_checkpoint(epoch_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a torchtune epoch folder's HF files (weights, config, tokenizer) into ``target``.

    Adapter files and recipe state are left out, so loaders never mistake the folder for a
    PEFT adapter. Files are hard-linked when possible (same filesystem), else copied.
    """
    src, target = Path(epoch_dir), Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and (f.name in _HF_FILES or (f.suffix == ".safetensors" and not f.name.startswith("adapter"))):
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
    if not (tmp / "config.json").exists():
        raise BackendError(f"{src} has no config.json; it is not a torchtune HF checkpoint folder")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer finetune sft|dpo``."""
    p = subparsers.add_parser(
        "finetune",
        help="SFT / DPO with torchtune from the shipped configs",
        description=(
            "Run a torchtune recipe from a shipped config (smollm2_135m_* on CPU, llama3_2_3b_* and "
            "qwen2_5_3b_* on GPU) on <project>/datasets/<CONFIG>_pref.jsonl. sft: full fine-tune on "
            "messages_chosen (1 epoch, lr 2e-4). dpo: LoRA DPO on messages_chosen/messages_rejected "
            "(beta 0.1, lr 1e-5, 2 epochs), merged. The result is a Hugging Face folder "
            "<output-dir>/model usable as UserSimulator(model=...)."
        ),
    )
    p.add_argument("stage", choices=sorted(RECIPES), help="sft or dpo")
    p.add_argument("--model", required=True, help="registry name or HF folder to start from (dpo: the SFT model)")
    p.add_argument("--pref", help="preference file (default: <project-path>/datasets/<config-name>_pref.jsonl)")
    p.add_argument("--project-path", help="working directory (with --config-name instead of --pref)")
    p.add_argument("--config-name", help="name used by `usermirrorer filter`")
    p.add_argument("--output-dir", required=True, help="torchtune output folder; the model goes to <dir>/model")
    p.add_argument("--config", help=f"config name or YAML path; shipped: {', '.join(sorted(shipped_configs()))}")
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="examples per optimizer step (sets gradient_accumulation_steps=1); "
                   "SmolLM2 DPO on CPU needs ~7 GB per pair, so its config accumulates 4 single pairs")
    p.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS) of the recipe")
    p.add_argument("overrides", nargs="*", help="extra torchtune key=value overrides")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.pref:
        pref = Path(args.pref)
    elif args.project_path and args.config_name:
        from usermirrorer.data_pipeline.filtering import pref_path

        pref = pref_path(args.project_path, args.config_name)
    else:
        raise ConfigError("say which preference file to train on: --pref FILE, or --project-path W --config-name NAME")
    console = Console()
    with console.status(f"torchtune {RECIPES[args.stage]} ..."):
        result = finetune(args.stage, args.model, pref, args.output_dir, config=args.config,
                          overrides=args.overrides, max_steps_per_epoch=args.max_steps_per_epoch,
                          epochs=args.epochs, batch_size=args.batch_size, threads=args.threads)
    console.print(f"{args.stage} done in {result.seconds:.0f} s; model: {result.model_dir} (log: {result.log_file})")
    return 0
