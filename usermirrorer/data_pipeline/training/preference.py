"""Preference records: the selected scenes rendered as SFT/DPO pairs, and their files (DESIGN.md §7.5).

:func:`filter_preferences` runs the uncertainty steps of
:mod:`~usermirrorer.data_pipeline.training.uncertainty` on a batch of scored scenes and renders
``messages_chosen`` / ``messages_rejected`` with the simulator's decision prompt;
:func:`run_filter` reads the scored train scenes and writes
``<project>/datasets/<CONFIG>_pref.jsonl``. :func:`build_direct_pref` builds *direct-mode*
preference data instead (chosen = the real item, rejected = another option, assistant text
``Behavior: [X]`` only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usermirrorer.data_pipeline.jsonl import write_jsonl
from usermirrorer.data_pipeline.training.decisions import decisions_path
from usermirrorer.data_pipeline.training.probs import probs_path
from usermirrorer.data_pipeline.training.stage import VERSIONS, load_train_scenes, stage_records
from usermirrorer.data_pipeline.training.uncertainty import (
    FilterConfig,
    FilterReport,
    pick_pairs,
    require_frame_columns,
    scene_uncertainty,
    score_thoughts,
    stratified_select,
    thought_table,
)
from usermirrorer.errors import ConfigError, DataError, data_problem
from usermirrorer.sim.prompts import DEFAULT_PROMPTS, LETTERS, build_messages, clean_thought

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "decision_answer",
    "direct_answer",
    "build_pref_records",
    "filter_preferences",
    "build_direct_pref",
    "pref_path",
    "load_scored_scenes",
    "run_filter",
    "run_direct_pref",
]


def decision_answer(thought: str, letter: str, prompts: Any = None) -> str:
    """Assistant text of a decision-mode answer: ``<thought>\\nBehavior: [X]``.

    Built from the same :class:`~usermirrorer.sim.prompts.PromptSet` fields the simulator scores
    with (``thought_separator``, ``behavior_marker``), so training and inference see one format.
    """
    prompts = prompts or DEFAULT_PROMPTS
    return clean_thought(thought, prompts) + prompts.thought_separator + prompts.behavior_marker + letter + "]"


def direct_answer(letter: str, prompts: Any = None) -> str:
    """Assistant text of a direct-mode answer: ``Behavior: [X]``."""
    return (prompts or DEFAULT_PROMPTS).direct_prefix + letter + "]"


def _chat(scene: Mapping[str, Any], mode: str, answer: str, prompts: Any) -> list[dict[str, str]]:
    return build_messages(dict(scene), mode, prompts or DEFAULT_PROMPTS) + [{"role": "assistant", "content": answer}]


def build_pref_records(
    scenes: Sequence[Mapping[str, Any]],
    pairs: pd.DataFrame,
    uncertainty: pd.DataFrame | None = None,
    prompts: Any = None,
) -> list[dict[str, Any]]:
    """Render the preference records of the selected pairs.

    Columns in: scenes need ``scene_id``, ``dataset``, ``text``, ``item_pos``, ``choice_cnt``,
    ``thoughts`` = ``{version: [str, ...]}``; ``pairs`` rows come from :func:`pick_pairs`.

    Returns:
        One record per pair: ids (``scene_id``, ``dataset``, ``user_id``, ``item_id``,
        ``timestamp``), ``choice_cnt``, ``item_pos``, ``real_behavior``, ``chosen_behavior``,
        ``rejected_behavior`` (letters), versions/indices/entropies of both thoughts,
        ``messages_chosen`` and ``messages_rejected`` (system, user, assistant = thought +
        ``Behavior: [X]``), and the scene's uncertainty columns when given. ``prompts`` is the
        :class:`~usermirrorer.sim.prompts.PromptSet` to render with (default: the simulator's).
    """
    import pandas as pd

    require_frame_columns(pairs, ("scene_idx", "chosen_version", "chosen_thought_idx", "chosen_behavior",
                     "rejected_version", "rejected_thought_idx", "rejected_behavior"), "build_pref_records")
    extra = uncertainty.set_index("scene_idx") if uncertainty is not None else None
    unc_cols = [c for c in (extra.columns if extra is not None else [])
                if c.endswith(("_uncertainty", "_hits", "_logloss"))]
    records: list[dict[str, Any]] = []
    for row in pairs.itertuples(index=False):
        scene = scenes[int(row.scene_idx)]
        if "thoughts" not in scene or "text" not in scene:
            raise DataError("build_pref_records: scene lacks 'thoughts' or 'text'",
                            [data_problem("scenes", int(row.scene_idx) + 1, "thoughts/text", "missing")])
        c_thought = scene["thoughts"][row.chosen_version][int(row.chosen_thought_idx)]
        r_thought = scene["thoughts"][row.rejected_version][int(row.rejected_thought_idx)]
        c_letter = LETTERS[int(row.chosen_behavior)]
        r_letter = LETTERS[int(row.rejected_behavior)]
        record: dict[str, Any] = {
            "scene_id": scene["scene_id"],
            "dataset": scene["dataset"],
            "user_id": scene.get("user_id"),
            "item_id": scene.get("item_id"),
            "timestamp": scene.get("timestamp"),
            "choice_cnt": int(scene["choice_cnt"]),
            "item_pos": int(scene["item_pos"]),
            "real_behavior": LETTERS[int(scene["item_pos"])],
            "chosen_behavior": c_letter,
            "rejected_behavior": r_letter,
            "chosen_version": row.chosen_version,
            "chosen_thought_idx": int(row.chosen_thought_idx),
            "chosen_entropy": float(row.chosen_entropy) if hasattr(row, "chosen_entropy") else None,
            "rejected_version": row.rejected_version,
            "rejected_thought_idx": int(row.rejected_thought_idx),
            "rejected_entropy": float(row.rejected_entropy) if hasattr(row, "rejected_entropy") else None,
            "messages_chosen": _chat(scene, "decision", decision_answer(c_thought, c_letter, prompts), prompts),
            "messages_rejected": _chat(scene, "decision", decision_answer(r_thought, r_letter, prompts), prompts),
        }
        if extra is not None:
            for col in unc_cols:
                value = extra.at[int(row.scene_idx), col]
                record[col] = None if pd.isna(value) else float(value)
        records.append(record)
    return records


# --------------------------------------------------------------------------------------------
# whole stage
# --------------------------------------------------------------------------------------------

def filter_preferences(
    scenes: Sequence[Mapping[str, Any]],
    config: FilterConfig,
    rng: np.random.Generator,
    *,
    render: bool = True,
    prompts: Any = None,
) -> tuple[list[dict[str, Any]], pd.DataFrame, FilterReport]:
    """Run steps 1-5 on a batch of scored scenes.

    Columns in (per scene): ``scene_id``, ``dataset``, ``item_pos``, ``choice_cnt``, ``probs``
    (``{version: N x K}``), and for rendering ``text`` and ``thoughts`` (``{version: [str]}``).

    Returns:
        ``(records, selected, report)``: the preference records (empty if ``render`` is
        False), the selected scene table (uncertainties + picks) and the step counts.
    """
    if not scenes:
        raise DataError("no scored scenes to filter; run `usermirrorer decisions` and `usermirrorer probs` "
                        "for both versions first")
    report = FilterReport(scenes_in=len(scenes))
    table, probs = thought_table(scenes, config.versions)
    report.thoughts_in = len(table)
    thoughts = score_thoughts(table, probs, rng)
    unc = scene_uncertainty(thoughts, probs, config.versions)
    pairs = pick_pairs(thoughts, config)
    report.scenes_with_hit = int(pairs.attrs.get("scenes_with_hit", 0))
    report.scenes_with_pair = len(pairs)
    candidates = unc.merge(pairs, on="scene_idx", how="inner")
    if config.rank_by not in candidates:
        raise ConfigError(f"rank_by={config.rank_by!r} is not a scene column; choose one of "
                          f"{sorted(c for c in candidates.columns if candidates[c].dtype.kind == 'f')}")
    if config.max_chosen_entropy is not None:
        candidates = candidates.loc[candidates["chosen_entropy"] <= config.max_chosen_entropy]
    if config.min_rank_value is not None:
        candidates = candidates.loc[candidates[config.rank_by] >= config.min_rank_value]
    candidates = candidates.loc[candidates[config.rank_by].notna()]
    report.scenes_after_thresholds = len(candidates)
    selected = stratified_select(candidates, config)
    report.scenes_selected = len(selected)
    if len(selected):
        counts = selected.groupby(list(config.strata), sort=True).size()
        report.per_stratum = {"/".join(map(str, k if isinstance(k, tuple) else (k,))): int(v)
                              for k, v in counts.items()}
    records = build_pref_records(scenes, selected, unc, prompts) if render else []
    return records, selected, report


def build_direct_pref(scenes: Sequence[Mapping[str, Any]], rng: np.random.Generator,
                      prompts: Any = None) -> list[dict[str, Any]]:
    """Direct-mode preference pairs: chosen = the real item, rejected = a random other option.

    Columns in: ``text`` (profile, history, action_list), ``item_pos``; ids are copied when
    present. Scenes with a single option cannot have a rejected answer and raise.

    Returns:
        One record per scene with ``messages_chosen`` / ``messages_rejected`` (system = direct
        prompt, user, assistant = ``Behavior: [X]``), ``chosen_behavior``,
        ``rejected_behavior`` and the ids. ``rng`` draws one rejected option per scene.
    """
    problems = []
    for i, scene in enumerate(scenes):
        text = scene.get("text") or {}
        k = len(text.get("action_list") or [])
        if "item_pos" not in scene or k < 2 or not 0 <= int(scene["item_pos"]) < k:
            problems.append(data_problem("scenes", i + 1, "item_pos/text.action_list",
                                         f"need >= 2 options and 0 <= item_pos < K; got K={k}, "
                                         f"item_pos={scene.get('item_pos')}"))
    if problems:
        raise DataError("build_direct_pref: scenes are not usable", problems)
    counts = np.asarray([len(s["text"]["action_list"]) for s in scenes], dtype=np.int64)
    pos = np.asarray([int(s["item_pos"]) for s in scenes], dtype=np.int64)
    # draw among the K-1 other options, then shift past the real one
    other = np.floor(rng.random(len(scenes)) * (counts - 1)).astype(np.int64) if len(scenes) else pos
    other = other + (other >= pos)
    records = []
    for scene, c, r in zip(scenes, pos, other):
        records.append({
            "scene_id": scene.get("scene_id"),
            "dataset": scene.get("dataset"),
            "user_id": scene.get("user_id"),
            "item_id": scene.get("item_id"),
            "choice_cnt": len(scene["text"]["action_list"]),
            "item_pos": int(c),
            "chosen_behavior": LETTERS[int(c)],
            "rejected_behavior": LETTERS[int(r)],
            "messages_chosen": _chat(scene, "direct", direct_answer(LETTERS[int(c)], prompts), prompts),
            "messages_rejected": _chat(scene, "direct", direct_answer(LETTERS[int(r)], prompts), prompts),
        })
    return records


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------

def pref_path(project_path: str | os.PathLike, config_name: str) -> Path:
    """``<project>/datasets/<CONFIG>_pref.jsonl``."""
    return Path(project_path) / "datasets" / f"{config_name}_pref.jsonl"


def load_scored_scenes(project_path: str | os.PathLike, dataset: str,
                       versions: Sequence[str] = VERSIONS) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Join train scenes with their decisions and probs of every version.

    Scenes without probs in every version are left out and counted (``unscored``), so a
    filter run on a partly finished pipeline says how much it is missing.

    Returns:
        ``(scenes, counts)``; each scene gets ``scene_id``, ``thoughts`` and ``probs`` dicts.
    """
    scenes = load_train_scenes(project_path, dataset)
    thoughts: dict[str, dict[str, list[str]]] = {}
    probs: dict[str, dict[str, list[list[float]]]] = {}
    by_id = {s["scene_id"]: s for s in scenes}
    for version in versions:
        dpath = decisions_path(project_path, dataset, version)
        ppath = probs_path(project_path, dataset, version)
        command = f"--dataset {dataset} --version {version}"
        decisions = stage_records(dpath, by_id, made_by=f"usermirrorer decisions {command}")
        scored = stage_records(ppath, by_id, made_by=f"usermirrorer probs {command}")
        for _, rec in decisions:
            thoughts.setdefault(rec["scene_id"], {})[version] = rec["thoughts"]
        for lineno, rec in scored:
            sid = rec["scene_id"]
            if version not in thoughts.get(sid, {}):
                raise DataError("probs without decisions",
                                [data_problem(ppath, lineno, "scene_id", f"{sid!r} has no record in {dpath}")])
            if len(rec["probs"]) != len(thoughts[sid][version]):
                raise DataError("probs do not match decisions",
                                [data_problem(ppath, lineno, "probs",
                                              f"{len(rec['probs'])} rows for {len(thoughts[sid][version])} thoughts")])
            probs.setdefault(sid, {})[version] = rec["probs"]
    joined = []
    for scene in scenes:
        sid = scene["scene_id"]
        if set(versions) <= set(probs.get(sid, {})):
            joined.append({**scene, "thoughts": thoughts[sid], "probs": probs[sid]})
    return joined, {"scenes": len(scenes), "scored": len(joined), "unscored": len(scenes) - len(joined)}


def run_filter(project_path: str | os.PathLike, config_name: str, datasets: Sequence[str],
               config: FilterConfig = FilterConfig(), prompts: Any = None) -> tuple[Path, FilterReport]:
    """Filter the scored train scenes of ``datasets`` and write ``<CONFIG>_pref.jsonl``.

    The datasets are filtered together, so the ``filtered_num`` budget is shared across them
    in proportion to their eligible scenes (stratum = ``(dataset, choice_cnt)``). ``prompts``
    (a :class:`~usermirrorer.sim.prompts.PromptSet`) renders the messages; default: the simulator's.
    """
    if not datasets:
        raise ConfigError("no datasets given; pass --datasets D [D ...]")
    scenes: list[dict[str, Any]] = []
    for dataset in datasets:
        part, _ = load_scored_scenes(project_path, dataset, config.versions)
        scenes.extend(part)
    records, _, report = filter_preferences(scenes, config, np.random.default_rng(config.seed), prompts=prompts)
    path = pref_path(project_path, config_name)
    write_jsonl(path, records)
    return path, report


def run_direct_pref(project_path: str | os.PathLike, config_name: str, datasets: Sequence[str], seed: int = 0,
                    prompts: Any = None) -> tuple[Path, int]:
    """Direct-mode preference file from the train scenes of ``datasets`` (no LLM stage needed).

    Chosen = the real item, rejected = a uniformly drawn other option (see
    :func:`build_direct_pref`); written to ``<project>/datasets/<CONFIG>_pref.jsonl``.
    """
    if not datasets:
        raise ConfigError("no datasets given; pass --datasets D [D ...]")
    scenes = [s for d in datasets for s in load_train_scenes(project_path, d)]
    records = build_direct_pref(scenes, np.random.default_rng(seed), prompts)
    path = pref_path(project_path, config_name)
    return path, write_jsonl(path, records)
