"""A few scenes to try a simulator on, from a bundled dataset, in one call.

>>> from usermirrorer.sim import UserSimulator, example_scenes
>>> scenes = example_scenes("ml-100k", n=4)            # doctest: +SKIP
>>> UserSimulator("smollm2-135m").choice_probs(scenes[0]).probs  # doctest: +SKIP

For real work build scene files with ``usermirrorer scenes`` (or
:func:`usermirrorer.data_pipeline.sampling.build_scene_file`); this helper samples a handful in
memory so a first try needs no working directory.
"""

from __future__ import annotations

import os

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.data_pipeline.sampling import SceneConfig, sample_scenes
from usermirrorer.data_pipeline.scene import Scene
from usermirrorer.preprocessing import locate_raws

__all__ = ["example_scenes"]


def example_scenes(
    dataset: str = "ml-100k",
    n: int = 4,
    exposure_size: int = 5,
    *,
    project_path: str | os.PathLike = ".",
    negatives: str = "standard",
    seed: int = 0,
) -> list[Scene]:
    """``n`` eval scenes of ``dataset`` (DESIGN.md §2 records), sampled in memory.

    The raws come from ``project_path/raws``, or for a bundled dataset (``ml-100k``) missing
    there from the user cache, converted on first use
    (:func:`usermirrorer.preprocessing.locate_raws`). Candidate lists come from the random,
    popularity and collaborative scorers (no content embedder, so no text model is loaded).

    Args:
        dataset: dataset name.
        n: scenes wanted.
        exposure_size: K, options per scene (the real item is one of them).
        project_path: folder holding ``raws/`` (and the collaborative embedding cache).
        negatives: ``"standard"`` or ``"popularity-matched"`` (DESIGN.md §8).
        seed: same seed, same scenes.

    Raises:
        DataError: the raws are missing (the message names the command that writes them).
        ConfigError: an invalid ``n``, ``exposure_size`` or ``negatives``.
    """
    project = locate_raws(project_path, dataset)
    ds = load_raws(project, dataset)
    config = SceneConfig(
        n_samples=n,
        min_exposure=exposure_size,
        max_exposure=exposure_size,
        split="eval",
        seed=seed,
        negatives=negatives,
        embedder=None,
    )
    records, _ = sample_scenes(ds, config, project_path=project)
    return records
