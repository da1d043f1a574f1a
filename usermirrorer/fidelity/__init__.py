"""The fidelity benchmark: how often does a simulated user pick what the real user picked?

DESIGN.md §8. Held-out ML-100K users, K=5 options, two scene variants (standard construction
and popularity-matched negatives) over the same target interactions, every choice model side by
side, with the metrics of :mod:`usermirrorer.sim.metrics`.

>>> from usermirrorer.fidelity import FidelityConfig, run_fidelity
>>> run_fidelity(FidelityConfig(project_path="./workspace", limit=50))   # doctest: +SKIP

Modules: :mod:`~usermirrorer.fidelity.eval_scenes` (user split, scenes, scene checks),
:mod:`~usermirrorer.fidelity.runner` (rows, running a model with a resume cache),
:mod:`~usermirrorer.fidelity.stats` (row scores, reliability bins, paired differences),
:mod:`~usermirrorer.fidelity.report` (md/json/png), :mod:`~usermirrorer.fidelity.reference`
recipe), :mod:`~usermirrorer.fidelity.workspace` (files and the shared split),
:mod:`~usermirrorer.fidelity.benchmark` (the whole run). The policy-ranking benchmark (do
simulators order recommenders as the real logs do?) is :mod:`~usermirrorer.fidelity.policy_ranking`,
with :mod:`~usermirrorer.fidelity.rank_agreement` and :mod:`~usermirrorer.fidelity.policy_report`.
Importing this package does not import torch.
"""

from usermirrorer.fidelity.benchmark import ExtraModel, FidelityConfig, parse_extra_model, plan_rows, run_fidelity
from usermirrorer.fidelity.eval_scenes import (
    VARIANTS,
    EvalSceneSpec,
    UserSplit,
    build_eval_scenes,
    check_eval_scenes,
    option_popularity_ranks,
    split_users,
    summarize_popularity_match,
)
from usermirrorer.fidelity.policy_ranking import PolicyRankingConfig, run_policy_ranking
from usermirrorer.fidelity.reference import PAPER_REFERENCE
from usermirrorer.fidelity.runner import ModelRun, ModelSpec, run_model
from usermirrorer.fidelity.stats import paired_difference, reliability_bins, score_run

__all__ = [
    "FidelityConfig",
    "ExtraModel",
    "parse_extra_model",
    "plan_rows",
    "run_fidelity",
    "VARIANTS",
    "EvalSceneSpec",
    "UserSplit",
    "split_users",
    "build_eval_scenes",
    "check_eval_scenes",
    "option_popularity_ranks",
    "summarize_popularity_match",
    "PAPER_REFERENCE",
    "ModelSpec",
    "ModelRun",
    "run_model",
    "score_run",
    "reliability_bins",
    "paired_difference",
    "PolicyRankingConfig",
    "run_policy_ranking",
]
