"""Scene sampling: interaction logs -> simulation scenes (DESIGN.md §3).

Modules: :mod:`~usermirrorer.data_pipeline.sampling.scorers` (random / popularity /
collaborative / content candidate lists and the scorer registry),
:mod:`~usermirrorer.data_pipeline.sampling.strategies` (per-domain templates, features and
filters), :mod:`~usermirrorer.data_pipeline.sampling.sampler` (the sampler, the whole run
with its report, and the split files), and what lets it scale to catalogs of millions:
:mod:`~usermirrorer.data_pipeline.sampling.draws` (draw maths, a fixed CDF per distribution,
skipped noise blocks), :mod:`~usermirrorer.data_pipeline.sampling.availability` (showable items
without a scenes x catalog mask), :mod:`~usermirrorer.data_pipeline.sampling.neighbours`
(blocked exact top-k, optional FAISS) and :mod:`~usermirrorer.data_pipeline.sampling.matched`
(popularity-matched negatives from count levels).

>>> from usermirrorer.data_pipeline.sampling import SceneConfig, sample_scenes
>>> scenes, report = sample_scenes(ds, SceneConfig(n_samples=100))   # doctest: +SKIP
"""

from __future__ import annotations

from usermirrorer.data_pipeline.sampling.sampler import (
    DEFAULT_SCORERS,
    NEGATIVES,
    SPLITS,
    LengthFilter,
    SceneConfig,
    SceneReport,
    SceneSampler,
    build_scene_file,
    eligible_rows,
    interaction_rows,
    sample_scenes,
    sample_train_eval,
    scenes_path,
)
from usermirrorer.data_pipeline.sampling.scorers import (
    SceneBatch,
    Scorer,
    ScorerContext,
    make_scorer,
    register_scorer,
    scorer_names,
)
from usermirrorer.data_pipeline.sampling.strategies import (
    DomainStrategy,
    GenericStrategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

__all__ = [
    "SceneConfig",
    "SceneReport",
    "SceneSampler",
    "LengthFilter",
    "SPLITS",
    "NEGATIVES",
    "DEFAULT_SCORERS",
    "sample_scenes",
    "sample_train_eval",
    "build_scene_file",
    "scenes_path",
    "eligible_rows",
    "interaction_rows",
    "SceneBatch",
    "Scorer",
    "ScorerContext",
    "make_scorer",
    "register_scorer",
    "scorer_names",
    "DomainStrategy",
    "GenericStrategy",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]
