"""Recipe: fine-tune SmolLM2-135M on ML-100K in *direct* mode, on CPU, on train users only.

The full pipeline (DESIGN.md §7) needs decision thoughts from a strong and a weak LLM, which a
2-core CPU cannot write at scale. This recipe is the cheap variant the fidelity benchmark
compares against its base model and the popularity chooser:

1. the user split of the benchmark (:func:`~usermirrorer.fidelity.workspace.ensure_split`);
   train scenes are sampled from **train users only** (the eval users are passed to the
   sampler as excluded users, and the result is checked);
2. direct-mode preference pairs (:func:`usermirrorer.data_pipeline.filtering.build_direct_pref`):
   chosen = ``Behavior: [<real letter>]``, rejected = ``Behavior: [<a random other letter>]``,
   no decision texts;
3. torchtune SFT on the chosen answers (:func:`usermirrorer.data_pipeline.finetune.finetune`),
   optionally followed by LoRA DPO on the pairs. In direct mode the SFT loss is exactly the
   log-loss of the real letter, which is the benchmark's own metric; DPO adds a push away from
   one random wrong letter, so it is off by default where steps are expensive.

Everything lands in ``<project>/fidelity/direct-ft/``; ``training.json`` records the model
folder, the train users, scenes, steps and seconds. The benchmark reads it, refuses to score a
model whose train users meet its eval users, and labels the row with the steps and examples.

CPU cost: torchtune trains in fp32 on CPU; one SmolLM2-135M step on a ~350-token example takes
a few seconds on 2 free cores (more when the cores are shared), so a few hundred examples is
the budget of an interactive run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError, DataError
from usermirrorer.fidelity.workspace import FidelityPaths, ensure_raws, ensure_split

__all__ = ["DirectFinetuneConfig", "run_direct_finetune", "load_direct_ft_manifest", "TRAIN_NEGATIVES"]

TRAIN_NEGATIVES = ("standard", "popularity-matched", "mixed")
_TRAIN_SEED_TAG = 83


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


def _train_scenes(ds, config: DirectFinetuneConfig, split, project_path) -> list[dict[str, Any]]:
    from usermirrorer.data_pipeline.scenes import SceneConfig, sample_scenes

    parts = {"standard": [("standard", config.train_scenes)],
             "popularity-matched": [("popularity-matched", config.train_scenes)],
             "mixed": [("standard", config.train_scenes - config.train_scenes // 2),
                       ("popularity-matched", config.train_scenes // 2)]}[config.negatives]
    scenes: list[dict[str, Any]] = []
    for negatives, n in parts:
        scene_config = SceneConfig(n_samples=n, min_exposure=config.k, max_exposure=config.k, split="train",
                                   seed=config.seed * 1000 + _TRAIN_SEED_TAG, negatives=negatives,
                                   embedder=config.embedder)
        records, _ = sample_scenes(ds, scene_config, project_path=project_path, users=list(split.train_users),
                                   exclude_users=list(split.eval_users))
        scenes.extend(records)
    leaked = {s["user_id"] for s in scenes} & set(split.eval_users)
    if leaked:  # the sampler was told to exclude them; this guards the guarantee itself
        raise DataError(f"train scenes contain {len(leaked)} eval user(s); refusing to train on them")
    rng = np.random.default_rng([config.seed, _TRAIN_SEED_TAG])
    return [scenes[i] for i in rng.permutation(len(scenes))]


def run_direct_finetune(config: DirectFinetuneConfig, progress: bool = True) -> dict[str, Any]:
    """Run the recipe; returns (and writes) the ``training.json`` manifest.

    Raises:
        DataError: eval users would leak into training.
        BackendError / MissingDependency: from the torchtune runner.
    """
    from usermirrorer.data_pipeline.filtering import build_direct_pref
    from usermirrorer.data_pipeline.finetune import finetune
    from usermirrorer.data_pipeline.jsonl import write_jsonl

    config.validate()
    started = time.perf_counter()
    paths = FidelityPaths(config.project_path)
    ds = ensure_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    scenes = _train_scenes(ds, config, split, config.project_path)
    pairs = build_direct_pref(scenes, np.random.default_rng([config.seed, _TRAIN_SEED_TAG, 1]))
    out = paths.direct_ft
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
        "recipe": "usermirrorer.fidelity.direct_finetune",
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
        "split": {"seed": split.seed, "eval_user_fraction": split.eval_user_fraction,
                  "eval_users": len(split.eval_users)},
        "stages": stages,
        "scene_seconds": round(scene_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    paths.direct_ft_manifest.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
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


def load_direct_ft_manifest(project_path: str | os.PathLike) -> dict[str, Any] | None:
    """The recipe's ``training.json`` if it exists and its model folder is there, else None."""
    path = FidelityPaths(project_path).direct_ft_manifest
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); delete it and rerun the recipe") from exc
    if not Path(manifest.get("model_dir", "")).joinpath("config.json").exists():
        return None
    return manifest
