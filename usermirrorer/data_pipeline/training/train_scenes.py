"""Train scenes of the fine-tune recipes: sampled from train users only, checked for leaks.

The recipes (:mod:`~usermirrorer.data_pipeline.training.direct_finetune`,
:mod:`~usermirrorer.data_pipeline.training.likelihood_train`) learn from scenes of the users a
benchmark split left for training; the eval users are excluded in the sampler and the result
is checked again here, so a benchmark never scores a model on users it was trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, sample_scenes
from usermirrorer.errors import ConfigError, DataError

__all__ = ["TRAIN_NEGATIVES", "sample_train_scenes"]

TRAIN_NEGATIVES = ("standard", "popularity-matched", "mixed")


def sample_train_scenes(ds: RawDataset, n_scenes: int, *, k: int, negatives: str, seed: int, seed_tag: int,
                        train_users: Sequence[str], eval_users: Sequence[str],
                        project_path: str | os.PathLike, embedder: str | None,
                        history_length: str = "uniform") -> list[dict[str, Any]]:
    """``n_scenes`` train scenes of ``k`` options from ``train_users``, in a seeded random order.

    Args:
        ds: the dataset.
        n_scenes: scenes to sample (``mixed``: half standard, half popularity-matched).
        k: options per scene.
        negatives: ``standard``, ``popularity-matched`` or ``mixed``.
        seed, seed_tag: the sampler's seed is ``seed * 1000 + seed_tag`` (one tag per recipe, so
            two recipes draw different scenes under one benchmark seed).
        train_users, eval_users: the split; no eval user's interaction is ever used.
        project_path: where the sampler finds (or writes) its embeddings.
        embedder: the content scorer of the standard construction (None: left out).
        history_length: ``uniform`` (the sampler's train rule) or ``longest`` (the eval length;
            the same scenes otherwise).

    Raises:
        ConfigError: unknown ``negatives`` or ``history_length``.
        DataError: a sampled scene belongs to an eval user.
    """
    if negatives not in TRAIN_NEGATIVES:
        raise ConfigError(f"negatives must be one of {list(TRAIN_NEGATIVES)}, got {negatives!r}")
    parts = {"standard": [("standard", n_scenes)],
             "popularity-matched": [("popularity-matched", n_scenes)],
             "mixed": [("standard", n_scenes - n_scenes // 2), ("popularity-matched", n_scenes // 2)]}[negatives]
    scenes: list[dict[str, Any]] = []
    for construction, n in parts:
        scene_config = SceneConfig(n_samples=n, min_exposure=k, max_exposure=k, split="train",
                                   history_length=history_length, seed=seed * 1000 + seed_tag,
                                   negatives=construction, embedder=embedder)
        records, _ = sample_scenes(ds, scene_config, project_path=project_path, users=list(train_users),
                                   exclude_users=list(eval_users))
        scenes.extend(records)
    leaked = {s["user_id"] for s in scenes} & set(eval_users)
    if leaked:  # the sampler was told to exclude them; this guards the guarantee itself
        raise DataError(f"train scenes contain {len(leaked)} eval user(s); refusing to train on them")
    rng = np.random.default_rng([seed, seed_tag])
    return [scenes[i] for i in rng.permutation(len(scenes))]
