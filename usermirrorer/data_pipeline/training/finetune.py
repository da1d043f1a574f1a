"""Fine-tuning with torchtune: SFT on chosen thoughts, then DPO on chosen/rejected (DESIGN.md §7.6).

We ship torchtune YAML configs (``usermirrorer/data_pipeline/configs/``) for SmolLM2-135M
(CPU), Llama-3.2-3B and Qwen2.5-3B (GPU). :func:`finetune` fills in the paths of one config
and runs the torchtune recipe in a child process (``python -m torchtune._cli.tune run ...``,
i.e. exactly ``tune run``), then publishes the last epoch's checkpoint as a clean Hugging Face
folder that ``UserSimulator(model=<folder>)`` loads.

The SmolLM2 configs name the model and tokenizer builders of
:mod:`~usermirrorer.data_pipeline.training.torchtune_components` as their ``_component_``s.

Nothing heavy is imported at module level: torchtune runs in the child process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from usermirrorer.data_pipeline.jsonl import iter_jsonl
from usermirrorer.data_pipeline.training.torchtune_components import export_bpe_files, read_hf_config
from usermirrorer.errors import BackendError, ConfigError, DataError, MissingDependency
from usermirrorer.sim.models import resolve_model

__all__ = [
    "CONFIG_DIR",
    "RECIPES",
    "FinetuneResult",
    "shipped_configs",
    "config_path",
    "default_config",
    "finetune",
    "publish_checkpoint",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RECIPES = {"sft": "full_finetune_single_device", "dpo": "lora_dpo_single_device"}
# Files of a torchtune epoch folder that a Hugging Face loader needs (weights are matched by suffix).
_HF_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
             "model.safetensors.index.json")


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
    cfg = read_hf_config(model_dir)
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


def _check_pref_file(path: Path, stage: str) -> int:
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
