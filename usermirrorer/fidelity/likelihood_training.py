"""Train the fidelity benchmark's likelihood-mode rows (``usermirrorer train``) on its train users.

The recipe is :mod:`usermirrorer.data_pipeline.training.likelihood_train`; this module gives it
the benchmark's user split and, for the ``residual`` loss, its offset model: the benchmark's
gated pool of the log-only models (:func:`usermirrorer.fidelity.pool_fit.fit_log_only_pool`),
fitted on the same train-user scenes the benchmark fits that row on.
"""

from __future__ import annotations

from typing import Any

from usermirrorer.data_pipeline.training.likelihood_train import (
    LikelihoodTrainConfig,
    LikelihoodTrainRecipe,
)
from usermirrorer.fidelity.pool_fit import PoolFitConfig, fit_log_only_pool
from usermirrorer.fidelity.workspace import FidelityPaths, ensure_split, load_benchmark_raws

__all__ = ["train_likelihood_row"]


def train_likelihood_row(config: LikelihoodTrainConfig, *, fresh: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train the benchmark's likelihood-mode rows on its train users only; returns the manifest.

    The split is the benchmark's (:func:`~usermirrorer.fidelity.workspace.ensure_split`); the
    run lands in ``<project>/fidelity/likelihood-ft/<loss>/`` and resumes from its state there.
    """
    ds = load_benchmark_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    offset_model = offset_info = None
    if config.loss == "residual":
        embedder = config.embedder or PoolFitConfig.embedder
        offset_model, offset_info = fit_log_only_pool(
            PoolFitConfig(project_path=config.project_path, dataset=config.dataset, seed=config.seed,
                          eval_user_fraction=config.eval_user_fraction, embedder=embedder), ds, split)
    recipe = LikelihoodTrainRecipe(config, ds, split.train_users, split.eval_users,
                                   FidelityPaths(config.project_path).likelihood_ft(config.loss),
                                   split_info={"seed": split.seed, "eval_user_fraction": split.eval_user_fraction},
                                   fresh=fresh, offset_model=offset_model, offset_info=offset_info)
    recipe.setup()
    return recipe.train(progress=progress)
