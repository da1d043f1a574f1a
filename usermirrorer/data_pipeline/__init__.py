"""The data ground: the raw schema and its IO, JSONL files and the scene type (DESIGN.md §2).

>>> from usermirrorer.data_pipeline import load_raws, read_jsonl, render_scene  # doctest: +SKIP

Higher layers live in the subpackages and are imported by name:
:mod:`usermirrorer.data_pipeline.sampling` (scene sampling) and
:mod:`usermirrorer.data_pipeline.training` (the training-data pipeline). Importing this package
does not import them, nor torch.
"""

from usermirrorer.data_pipeline.jsonl import (
    JsonlAppender,
    done_keys,
    iter_jsonl,
    read_jsonl,
    write_jsonl,
)
from usermirrorer.data_pipeline.raw import (
    TIME_FORMAT,
    RawDataset,
    format_time,
    load_raws,
    parse_time,
    raw_paths,
    write_raws,
)
from usermirrorer.data_pipeline.scene import (
    RatingQuery,
    Scene,
    SceneText,
    render_scene,
    reorder_options,
    reversed_scene,
    scene_fields,
    scene_id,
    scene_target,
    scene_text,
)

__all__ = [
    # raw
    "RawDataset",
    "load_raws",
    "write_raws",
    "raw_paths",
    "parse_time",
    "format_time",
    "TIME_FORMAT",
    # jsonl
    "read_jsonl",
    "write_jsonl",
    "iter_jsonl",
    "JsonlAppender",
    "done_keys",
    # scene
    "Scene",
    "SceneText",
    "RatingQuery",
    "render_scene",
    "scene_fields",
    "scene_id",
    "scene_text",
    "scene_target",
    "reorder_options",
    "reversed_scene",
]
