"""The training-data pipeline and fine-tuning (DESIGN.md §7).

Train scenes -> :mod:`~usermirrorer.data_pipeline.training.decisions` (N thoughts per scene
from a strong and a weak LLM) -> :mod:`~usermirrorer.data_pipeline.training.probs` (the
predictor's letter distribution after each thought) ->
:mod:`~usermirrorer.data_pipeline.training.uncertainty` (entropies, noise removal, stratified
selection) -> :mod:`~usermirrorer.data_pipeline.training.preference` (SFT/DPO records and
files) -> :mod:`~usermirrorer.data_pipeline.training.finetune` (torchtune SFT then DPO, with
:mod:`~usermirrorer.data_pipeline.training.torchtune_components` and the shipped configs).
The LLM stages share :mod:`~usermirrorer.data_pipeline.training.stage` (chunk seeds, resume);
:mod:`~usermirrorer.data_pipeline.training.direct_finetune` is the cheap direct-mode recipe;
:mod:`~usermirrorer.data_pipeline.training.likelihood_train` trains a model for likelihood mode
(next-item or listwise loss; ``usermirrorer train``).
Importing this package does not import torch or torchtune.
"""

from __future__ import annotations

from usermirrorer.data_pipeline.training.decisions import decisions_path, run_decisions
from usermirrorer.data_pipeline.training.direct_finetune import (
    DirectFinetuneConfig,
    run_direct_finetune,
)
from usermirrorer.data_pipeline.training.finetune import FinetuneResult, finetune, shipped_configs
from usermirrorer.data_pipeline.training.likelihood_train import (
    LikelihoodTrainConfig,
    LikelihoodTrainRecipe,
)
from usermirrorer.data_pipeline.training.preference import (
    build_direct_pref,
    filter_preferences,
    pref_path,
    run_direct_pref,
    run_filter,
)
from usermirrorer.data_pipeline.training.probs import probs_path, run_probs
from usermirrorer.data_pipeline.training.stage import (
    VERSIONS,
    StageReport,
    load_train_scenes,
    run_resumable,
)
from usermirrorer.data_pipeline.training.uncertainty import FilterConfig, FilterReport

__all__ = [
    "VERSIONS",
    "DirectFinetuneConfig",
    "FilterConfig",
    "FilterReport",
    "FinetuneResult",
    "LikelihoodTrainConfig",
    "LikelihoodTrainRecipe",
    "StageReport",
    "build_direct_pref",
    "decisions_path",
    "filter_preferences",
    "finetune",
    "load_train_scenes",
    "pref_path",
    "probs_path",
    "run_decisions",
    "run_direct_finetune",
    "run_direct_pref",
    "run_filter",
    "run_probs",
    "run_resumable",
    "shipped_configs",
]
