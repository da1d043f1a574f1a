"""Recipe: fine-tune SmolLM2-135M on ML-100K in *direct* mode, on CPU, on train users only.

The full pipeline (DESIGN.md §7) needs decision thoughts from a strong and a weak LLM, which a
2-core CPU cannot write at scale. This recipe is the cheap variant the fidelity benchmark
compares against its base model and the popularity chooser:

1. train scenes are sampled from the **train users only** of a user split the caller passes
   (the fidelity benchmark's: :func:`~usermirrorer.fidelity.workspace.finetune_direct_row`);
   the eval users are passed to the sampler as excluded users, and the result is checked;
2. direct-mode preference pairs (:func:`usermirrorer.data_pipeline.training.uncertainty.build_direct_pref`):
   chosen = ``Behavior: [<real letter>]``, rejected = ``Behavior: [<a random other letter>]``,
   no decision texts;
3. torchtune SFT on the chosen answers (:func:`usermirrorer.data_pipeline.training.finetune.finetune`),
   optionally followed by LoRA DPO on the pairs. In direct mode the SFT loss is exactly the
   log-loss of the real letter, which is the benchmark's own metric; DPO adds a push away from
   one random wrong letter, so it is off by default where steps are expensive.

Everything lands in the caller's output folder (the benchmark's ``<project>/fidelity/direct-ft/``);
``training.json`` there records the model folder, the train users, scenes, steps and seconds.
The benchmark reads it, refuses to score a model whose train users meet its eval users, and
labels the row with the steps and examples.

CPU cost: torchtune trains in fp32 on CPU; one SmolLM2-135M step on a ~350-token example takes
a few seconds on 2 free cores (more when the cores are shared), so a few hundred examples is
the budget of an interactive run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.jsonl import write_jsonl
from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.data_pipeline.training.finetune import finetune
from usermirrorer.data_pipeline.training.preference import build_direct_pref
from usermirrorer.data_pipeline.training.train_scenes import TRAIN_NEGATIVES, sample_train_scenes
from usermirrorer.errors import ConfigError

__all__ = ["DirectFinetuneConfig", "run_direct_finetune", "MANIFEST_NAME", "TRAIN_NEGATIVES"]

_TRAIN_SEED_TAG = 83
# The manifest the fidelity benchmark reads to find (and vet) the trained model.
MANIFEST_NAME = "training.json"


@dataclass(frozen=True)
class DirectFinetuneConfig:
    """Options of the direct-mode fine-tune recipe.

    Attributes:
        project_path: working directory (raws, the benchmark's split, outputs).
        dataset: raw dataset name.
        seed, eval_user_fraction: the benchmark's split (must match the benchmark's options).
        train_scenes: train scenes sampled (each gives one example per stage epoch).
        k: options per train scene.
        negatives: ``standard``, ``popularity-matched`` or ``mixed`` (half each).
        base_model: model to start from (registry name or folder).
        sft_steps: SFT optimizer steps (0 skips SFT).
        dpo_steps: DPO steps after SFT (0: SFT only).
        batch_size: examples per step.
        sft_lr: SFT learning rate (the shipped config's 2e-4 when None).
        embedder: content-scorer embedder of the standard construction (None: leave it out).
        threads: torch threads of the training process.
    """

    project_path: str = "./workspace"
    dataset: str = "ml-100k"
    seed: int = 0
    eval_user_fraction: float = 0.2
    train_scenes: int = 400
    k: int = 5
    negatives: str = "mixed"
    base_model: str = "smollm2-135m"
    sft_steps: int = 200
    dpo_steps: int = 0
    batch_size: int = 2
    sft_lr: float | None = None
    embedder: str | None = "minilm"
    threads: int = 2

    def validate(self) -> DirectFinetuneConfig:
        if self.negatives not in TRAIN_NEGATIVES:
            raise ConfigError(f"negatives must be one of {list(TRAIN_NEGATIVES)}, got {self.negatives!r}")
        if self.train_scenes < 2:
            raise ConfigError(f"train_scenes must be >= 2, got {self.train_scenes}")
        if self.sft_steps < 0 or self.dpo_steps < 0 or self.sft_steps + self.dpo_steps == 0:
            raise ConfigError(f"need sft_steps >= 0, dpo_steps >= 0 and at least one step; got "
                              f"sft_steps={self.sft_steps}, dpo_steps={self.dpo_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        return self


def run_direct_finetune(config: DirectFinetuneConfig, ds: RawDataset, train_users: Sequence[str],
                        eval_users: Sequence[str], out: str | os.PathLike, *,
                        split_info: Mapping[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the recipe; returns (and writes ``<out>/training.json``) the manifest.

    Args:
        config: the recipe's options.
        ds: the dataset.
        train_users: users whose interactions may be trained on.
        eval_users: held-out users; none of their interactions is ever used.
        out: output folder (preference file, checkpoints, ``training.json``).
        split_info: how the split was made, recorded in the manifest.
        progress: show torchtune's output.

    Raises:
        DataError: eval users would leak into training.
        BackendError / MissingDependency: from the torchtune runner.
    """
    config.validate()
    started = time.perf_counter()
    scenes = sample_train_scenes(ds, config.train_scenes, k=config.k, negatives=config.negatives, seed=config.seed,
                                 seed_tag=_TRAIN_SEED_TAG, train_users=train_users, eval_users=eval_users,
                                 project_path=config.project_path, embedder=config.embedder)
    pairs = build_direct_pref(scenes, np.random.default_rng([config.seed, _TRAIN_SEED_TAG, 1]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pref_file = out / f"{config.dataset}_direct_pref.jsonl"
    write_jsonl(pref_file, pairs)
    scene_seconds = time.perf_counter() - started

    stages: list[dict[str, Any]] = []
    model = config.base_model
    for stage, steps in (("sft", config.sft_steps), ("dpo", config.dpo_steps)):
        if steps == 0:
            continue
        overrides = [f"optimizer.lr={config.sft_lr}"] if stage == "sft" and config.sft_lr is not None else []
        # the runner caps each epoch at max_steps_per_epoch: spread the steps over as few
        # epochs as the data allows
        per_epoch = max(1, len(pairs) // config.batch_size)
        epochs = -(-steps // per_epoch)
        cap = -(-steps // epochs)
        result = finetune(stage, model, pref_file, out / stage, overrides=overrides,
                          max_steps_per_epoch=cap, epochs=epochs, batch_size=config.batch_size,
                          threads=config.threads, quiet=not progress)
        done = cap * epochs
        stages.append({"stage": stage, "steps": done, "batch_size": config.batch_size,
                       "examples": done * config.batch_size, "seconds": round(result.seconds, 1),
                       "model_dir": str(result.model_dir), "log": str(result.log_file)})
        model = str(result.model_dir)

    manifest = {
        "recipe": "usermirrorer.data_pipeline.training.direct_finetune",
        "command": _command_line(config),
        "config": asdict(config),
        "dataset": config.dataset,
        "base_model": config.base_model,
        "model_dir": model,
        "negatives": config.negatives,
        "train_scenes": len(scenes),
        "pairs": len(pairs),
        "pref_file": str(pref_file),
        "train_users": len({s["user_id"] for s in scenes}),
        "trained_user_ids": sorted({str(s["user_id"]) for s in scenes}),
        "split": {**dict(split_info or {}), "eval_users": len(eval_users)},
        "stages": stages,
        "scene_seconds": round(scene_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _command_line(config: DirectFinetuneConfig) -> str:
    default = DirectFinetuneConfig()
    parts = ["usermirrorer bench fidelity-finetune"]
    flags = {"project_path": "--project-path", "train_scenes": "--train-scenes", "negatives": "--negatives",
             "sft_steps": "--sft-steps", "dpo_steps": "--dpo-steps", "batch_size": "--batch-size",
             "base_model": "--base-model", "seed": "--seed"}
    for field_name, flag in flags.items():
        value = getattr(config, field_name)
        if value != getattr(default, field_name):
            parts.append(f"{flag} {value}")
    return " ".join(parts)
