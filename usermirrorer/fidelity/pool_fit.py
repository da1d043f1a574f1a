"""Fit the gated pool the fidelity table measures and save it as a simulator (``usermirrorer fit-pool``).

The pool is the benchmark's row "pool: <trained LLM> × collaborative × MNL × content ×
popularity, gated by popularity spread": the trained LLM's PMI scores in likelihood mode
pooled with the four log-only models, every weight moving with the popularity spread of the
slate (:mod:`usermirrorer.sim.pool`). It is fitted here exactly as the benchmark fits that row:
on the same train-user fit scenes (:func:`usermirrorer.fidelity.benchmark.train_fit_scenes`),
the MNL and content models on all of them, the pool weights on the first
``pool_fit_scenes`` (the scenes a likelihood row's temperature is fitted on), the
collaborative embeddings on the train users' rows only. So the saved file's held-out
fidelity is that row of ``benchmarks/results/fidelity.md``.

The untrained LLM, which the table's widest pool also takes in, is left out: it would double
the model time of every step for a weight near 0 (it moves the held-out E[acc] by the amount
the table's two gated rows differ).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usermirrorer.data_pipeline.training.stage import progress_bar
from usermirrorer.errors import ConfigError
from usermirrorer.fidelity.benchmark import FidelityConfig, train_fit_scenes
from usermirrorer.fidelity.workspace import (
    ensure_split,
    last_trained_checkpoint,
    load_benchmark_raws,
)
from usermirrorer.sim.choice_models import pool_member_model
from usermirrorer.sim.mnl import FEATURES, MultinomialLogitChoiceModel
from usermirrorer.sim.pool import LogLinearPool
from usermirrorer.sim.saved_pool import PoolMember, SavedPool

__all__ = ["PoolFitConfig", "fit_saved_pool", "fit_log_only_pool", "log_only_members", "default_pool_path",
           "POOL_MEMBER_NAMES"]

POOL_MEMBER_NAMES = ("trained LLM", "collaborative", "MNL", "content", "popularity")


def default_pool_path(project_path: str | os.PathLike, dataset: str = "ml-100k") -> Path:
    """Where ``fit-pool`` writes by default and the demo looks: ``<W>/pools/<dataset>/pool.json``."""
    return Path(project_path) / "pools" / dataset / "pool.json"


@dataclass(frozen=True)
class PoolFitConfig:
    """Options of :func:`fit_saved_pool`.

    Attributes:
        project_path: the benchmark's working directory (raws, user split, trainings).
        dataset, seed, eval_user_fraction, embedder: as the fidelity benchmark's (same split,
            same fit scenes).
        checkpoint: the trained LLM (default: the last checkpoint of ``usermirrorer train``'s
            listwise training in the project, else its next-item one).
        fit_scenes: train-user scenes the MNL and content members are fitted on.
        pool_fit_scenes: the first this many of them fit the pool weights (the LLM answers them).
        out: the pool file (default :func:`default_pool_path`).
        batch_size: scenes per LLM call.
        progress: a progress bar while the LLM answers.
    """

    project_path: str = "./workspace"
    dataset: str = "ml-100k"
    seed: int = 0
    eval_user_fraction: float = 0.2
    embedder: str = "minilm"
    checkpoint: str | None = None
    fit_scenes: int = 1000
    pool_fit_scenes: int = 600
    out: str | None = None
    batch_size: int = 8
    progress: bool = True

    def validate(self) -> PoolFitConfig:
        if not 10 <= self.pool_fit_scenes <= self.fit_scenes:
            raise ConfigError(f"pool_fit_scenes must lie in 10..fit_scenes={self.fit_scenes}, got {self.pool_fit_scenes}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        return self


def _trained_checkpoint(config: PoolFitConfig, split: Any) -> tuple[str, dict[str, Any]]:
    """The checkpoint folder and what is known of its training."""
    if config.checkpoint is not None:
        if not Path(config.checkpoint, "config.json").exists():
            raise ConfigError(f"--checkpoint {config.checkpoint}: no model folder there (config.json missing)")
        return str(Path(config.checkpoint).resolve()), {"checkpoint": str(config.checkpoint)}
    trained = last_trained_checkpoint(config.project_path)
    if trained is not None:
        manifest, last = trained
        split.check_disjoint(manifest.get("trained_user_ids", []), f"the likelihood-mode training {manifest['loss']}")
        return str(Path(last["model_dir"]).resolve()), {"loss": manifest["loss"], "examples": last["examples"],
                                                         "base_model": manifest.get("base_model")}
    raise ConfigError(f"no likelihood-mode training under {config.project_path}: run `usermirrorer train --profile cpu "
                      f"--project-path {config.project_path}` first (50-65 min on 2 cores, resumable), or pass "
                      "--checkpoint DIR")


def log_only_members(ds: Any, train_rows: Any, by_construction: dict[str, Any], config: PoolFitConfig
                     ) -> tuple[list[PoolMember], list[Any]]:
    """The pool's four log-only members (collaborative, MNL, content, popularity, in the saved
    order) as specs and fitted models: the MNL and content models on all train-user fit scenes,
    the collaborative embeddings on ``train_rows``."""
    collaborative, popularity = PoolMember("collaborative", "collaborative"), PoolMember("popularity", "popularity")
    specs = [collaborative]
    models = [pool_member_model(collaborative, ds, train_rows, config.seed, project_path=config.project_path)]
    for name, features in (("MNL", FEATURES), ("content", ("content",))):
        mnl = MultinomialLogitChoiceModel(ds, fit_rows=train_rows, embedder=config.embedder,
                                          project_path=config.project_path, seed=config.seed, features=features)
        models.append(mnl.fit(by_construction["both"]))
        specs.append(PoolMember(name, "mnl", options={"embedder": config.embedder}, state=mnl.fitted_state()))
    specs.append(popularity)
    models.append(pool_member_model(popularity, ds, train_rows))
    return specs, models


def _benchmark_fit_scenes(config: PoolFitConfig, ds: Any, split: Any) -> tuple[list[dict], dict[str, Any]]:
    bench = FidelityConfig(project_path=config.project_path, dataset=config.dataset, seed=config.seed,
                           eval_user_fraction=config.eval_user_fraction, embedder=config.embedder,
                           fit_scenes=config.fit_scenes)
    return train_fit_scenes(ds, split, bench)


def fit_log_only_pool(config: PoolFitConfig, ds: Any, split: Any) -> tuple[LogLinearPool, dict[str, Any]]:
    """The benchmark's gated pool of the log-only models alone (row "pool: collaborative × MNL ×
    content × popularity, gated by popularity spread"), fitted as :func:`fit_saved_pool` fits the
    servable pool, on train users only: the residual training's offset model.

    Returns:
        ``(pool, info)``: the fitted pool and what the training manifest records of it.
    """
    config.validate()
    fit_scenes, by_construction = _benchmark_fit_scenes(config, ds, split)
    specs, models = log_only_members(ds, ds.rows_of_users(split.train_users), by_construction, config)
    pool = LogLinearPool(models, names=[s.name for s in specs], gate="popularity")
    pool.fit(fit_scenes[: config.pool_fit_scenes])
    return pool, {"pool": "log-only gated pool (collaborative × MNL × content × popularity, gated by popularity "
                          "spread)", "weights": [float(w) for w in pool.weights], "fit": pool.fit_report,
                  "fit_scenes": config.fit_scenes, "pool_fit_scenes": config.pool_fit_scenes}


def fit_saved_pool(config: PoolFitConfig) -> SavedPool:
    """Fit the gated pool on train-user scenes and write it; returns what was written.

    Raises:
        ConfigError: no trained checkpoint, or options out of range.
        DataError: a training that saw eval users of this split.
    """
    config.validate()
    started = time.perf_counter()
    ds = load_benchmark_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    model_dir, trained = _trained_checkpoint(config, split)
    fit_scenes, by_construction = _benchmark_fit_scenes(config, ds, split)
    train_rows = ds.rows_of_users(split.train_users)
    out = Path(config.out) if config.out else default_pool_path(config.project_path, config.dataset)

    llm = PoolMember("trained LLM", "llm", model=os.path.relpath(model_dir, out.parent.resolve()),
                     options={"mode": "likelihood", "likelihood_score": "pmi", "truncate_history": True,
                              "batch_size": config.batch_size, "seed": config.seed})
    log_specs, log_models = log_only_members(ds, train_rows, by_construction, config)
    specs = [llm, *log_specs]
    models = [pool_member_model(llm, ds, train_rows, model_dir=model_dir), *log_models]
    pool = LogLinearPool(models, names=[s.name for s in specs], gate="popularity")
    scenes = fit_scenes[: config.pool_fit_scenes]
    with progress_bar(config.progress) as progress:
        task = progress.add_task("pool fit scenes (the LLM answers)", total=len(scenes))
        pool.fit(scenes, chunk_size=config.batch_size, on_chunk=lambda n: progress.advance(task, n))
    saved = SavedPool(
        dataset=ds.name, members=tuple(specs), weights=tuple(float(w) for w in pool.weights), gate="popularity",
        train_users=tuple(split.train_users), seed=config.seed,
        fit={**pool.fit_report, "trained": trained, "fit_scenes": config.fit_scenes,
             "pool_fit_scenes": config.pool_fit_scenes, "split": {"seed": split.seed,
                                                                  "eval_user_fraction": split.eval_user_fraction},
             "seconds": round(time.perf_counter() - started, 1),
             "benchmark_row": "pool: <trained LLM> × collaborative × MNL × content × popularity, gated by "
                              "popularity spread"})
    saved.write(out)
    return SavedPool.read(out)
