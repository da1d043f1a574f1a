"""Uncertainty filtering: from scored thoughts to the scenes worth training on (DESIGN.md §7.3-7.4).

Input per train scene: the real item's position, and for each model version ("strong", "weak")
the N thoughts it wrote (``decisions``) with the predictor's letter distribution after each
thought (``probs``). The steps

1. score every thought: ``entropy = H(p)`` (bits), one behaviour sampled from ``p`` with the
   caller's generator, ``preference`` = that behaviour is the real item, log-loss of the real
   item (bits);
2. score every scene and version: ``total = H(mean p)``, ``model_unc = mean H(p)``,
   ``data_unc = total - model_unc``; ``diff_model_uncertainty = weak model_unc - strong
   model_unc``;
3. remove noise: keep scenes where some thought hit the real item, and pick *chosen* = the
   lowest-entropy hit among strong thoughts and *rejected* = the lowest-entropy miss among all
   thoughts, dropping scenes that lack either;
4. select ``filtered_num`` scenes stratified by ``(dataset, choice_cnt)`` in proportion to group
   size (largest-remainder rounding), highest ``diff_model_uncertainty`` first in each group.

Step 5 (rendering the preference records) and the file IO are in
:mod:`usermirrorer.data_pipeline.training.preference`. Each step is a function over a batch (a
table of thoughts or scenes) with its columns checked on entry, so it can run unchanged as a
``map_batches`` step (DESIGN.md §9).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from usermirrorer.data_pipeline.training.stage import VERSIONS
from usermirrorer.errors import ConfigError, DataError, data_problem

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FilterConfig",
    "FilterReport",
    "thought_table",
    "score_thoughts",
    "scene_uncertainty",
    "pick_pairs",
    "stratified_quota",
    "stratified_select",
    "require_frame_columns",
]

# Relative tolerance on a probability row summing to one before we call it malformed;
# backends return float32 softmaxes renormalised in float64, so 1e-3 is generous.
_SUM_TOL = 1e-3
_LOG_EPS = 1e-12


@dataclass(frozen=True)
class FilterConfig:
    """Every threshold and column the filter uses.

    Attributes:
        filtered_num: how many scenes to keep in total (default 10,000, as in the paper).
        strata: scene columns whose combinations form the strata of the selection.
        rank_by: scene column ranked within a stratum (``diff_model_uncertainty`` by default;
            any column of :func:`scene_uncertainty`'s output works).
        descending: rank highest first.
        chosen_from: versions whose hits may be the chosen thought.
        rejected_from: versions whose misses may be the rejected thought.
        versions: versions read; ``diff_model_uncertainty`` needs both "strong" and "weak".
        max_chosen_entropy: drop pairs whose chosen thought's entropy (bits) exceeds this.
        min_rank_value: drop scenes whose ``rank_by`` value is below this.
        seed: seed of the behaviour sampling when :func:`run_filter` makes the generator.
    """

    filtered_num: int = 10_000
    strata: tuple[str, ...] = ("dataset", "choice_cnt")
    rank_by: str = "diff_model_uncertainty"
    descending: bool = True
    chosen_from: tuple[str, ...] = ("strong",)
    rejected_from: tuple[str, ...] = ("strong", "weak")
    versions: tuple[str, ...] = VERSIONS
    max_chosen_entropy: float | None = None
    min_rank_value: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.filtered_num < 1:
            raise ConfigError(f"filtered_num must be >= 1, got {self.filtered_num}")
        for name in ("chosen_from", "rejected_from"):
            unknown = set(getattr(self, name)) - set(self.versions)
            if unknown:
                raise ConfigError(
                    f"{name} names versions {sorted(unknown)} that are not read "
                    f"(versions={list(self.versions)}); add them to versions or drop them"
                )
        if self.rank_by == "diff_model_uncertainty" and not {"strong", "weak"} <= set(self.versions):
            raise ConfigError(
                "rank_by='diff_model_uncertainty' needs versions 'strong' and 'weak'; "
                f"got versions={list(self.versions)}: read both or rank by another column "
                "(e.g. 'strong_model_uncertainty')"
            )


@dataclass
class FilterReport:
    """Counts after each step of :func:`filter_preferences` (what was dropped and why)."""

    scenes_in: int = 0
    thoughts_in: int = 0
    scenes_with_hit: int = 0
    scenes_with_pair: int = 0
    scenes_after_thresholds: int = 0
    scenes_selected: int = 0
    per_stratum: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"scenes in: {self.scenes_in} ({self.thoughts_in} thoughts)",
            f"with a hit by any thought: {self.scenes_with_hit}",
            f"with a chosen (strong hit) and a rejected (miss): {self.scenes_with_pair}",
            f"after thresholds: {self.scenes_after_thresholds}",
            f"selected: {self.scenes_selected}",
        ]


# --------------------------------------------------------------------------------------------
# 1. thoughts
# --------------------------------------------------------------------------------------------

_SCENE_COLUMNS = ("scene_id", "dataset", "item_pos", "choice_cnt", "probs")


def thought_table(scenes: Sequence[Mapping[str, Any]], versions: Sequence[str] = VERSIONS) -> tuple[pd.DataFrame, np.ndarray]:
    """Flatten scored scenes into one row per thought plus a padded probability matrix.

    Columns in (per scene): ``scene_id``, ``dataset``, ``item_pos``, ``choice_cnt``,
    ``probs`` = ``{version: [[p_1..p_K], ...one per thought]}``.

    Returns:
        ``(table, P)``: ``table`` has columns ``scene_idx`` (position in ``scenes``),
        ``scene_id``, ``dataset``, ``choice_cnt``, ``item_pos``, ``version``, ``thought_idx``;
        ``P`` is ``(n_thoughts, K_max)`` float64, row i = thought i's distribution padded with 0.
        Rows are ordered by scene, then ``versions`` order, then thought index, so sampling
        with a seeded generator is reproducible.

    Raises:
        DataError: a missing column, a row whose length differs from ``choice_cnt``, negative
            or non-finite values, or a row not summing to 1.
    """
    import pandas as pd

    problems: list[str] = []
    rows_scene: list[int] = []
    rows_version: list[str] = []
    rows_thought: list[int] = []
    vectors: list[Sequence[float]] = []
    for i, scene in enumerate(scenes):
        missing = [c for c in _SCENE_COLUMNS if c not in scene]
        if missing:
            problems.append(data_problem("scenes", i + 1, ",".join(missing), "missing column(s)"))
            continue
        k = int(scene["choice_cnt"])
        if not 0 <= int(scene["item_pos"]) < k:
            problems.append(data_problem("scenes", i + 1, "item_pos",
                                         f"{scene['item_pos']} is outside 0..choice_cnt-1={k - 1}"))
        for version in versions:
            per_thought = scene["probs"].get(version)
            if per_thought is None:
                problems.append(data_problem("scenes", i + 1, f"probs.{version}",
                                             f"no probabilities for version {version!r}; run "
                                             f"`usermirrorer probs --version {version}` first"))
                continue
            for t, vec in enumerate(per_thought):
                if len(vec) != k:
                    problems.append(data_problem("scenes", i + 1, f"probs.{version}[{t}]",
                                                 f"{len(vec)} probabilities for choice_cnt={k}"))
                    continue
                rows_scene.append(i)
                rows_version.append(version)
                rows_thought.append(t)
                vectors.append(vec)
        if len(problems) > 50:
            break
    if problems:
        raise DataError("scored scenes do not have the expected columns", problems)

    k_max = max((len(v) for v in vectors), default=1)
    probs = np.zeros((len(vectors), k_max), dtype=np.float64)
    for r, vec in enumerate(vectors):
        probs[r, : len(vec)] = vec
    _check_prob_rows(probs, rows_scene, rows_version, rows_thought)

    scene_idx = np.asarray(rows_scene, dtype=np.int64)
    ids = np.asarray([scenes[i]["scene_id"] for i in range(len(scenes))], dtype=object)
    datasets = np.asarray([scenes[i]["dataset"] for i in range(len(scenes))], dtype=object)
    cnts = np.asarray([int(scenes[i]["choice_cnt"]) for i in range(len(scenes))], dtype=np.int64)
    pos = np.asarray([int(scenes[i]["item_pos"]) for i in range(len(scenes))], dtype=np.int64)
    table = pd.DataFrame({
        "scene_idx": scene_idx,
        "scene_id": ids[scene_idx],
        "dataset": datasets[scene_idx],
        "choice_cnt": cnts[scene_idx],
        "item_pos": pos[scene_idx],
        "version": pd.Categorical(rows_version, categories=list(versions)),
        "thought_idx": np.asarray(rows_thought, dtype=np.int64),
    })
    return table, probs


def _check_prob_rows(probs: np.ndarray, scene: list[int], version: list[str], thought: list[int]) -> None:
    bad_value = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1)
    sums = probs.sum(axis=1)
    bad_sum = np.abs(sums - 1.0) > _SUM_TOL
    bad = np.flatnonzero(bad_value | bad_sum)
    if len(bad):
        problems = [
            data_problem("scenes", scene[r] + 1, f"probs.{version[r]}[{thought[r]}]",
                         f"not a probability vector (sum={sums[r]:.6g}, values={probs[r].tolist()})")
            for r in bad[:20]
        ]
        raise DataError(f"{len(bad)} probability row(s) are malformed", problems)
    # exact renormalisation so entropies of rows off by float error are comparable
    probs /= sums[:, None]


def _entropy_bits(probs: np.ndarray) -> np.ndarray:
    """Row-wise Shannon entropy in bits, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log2(np.where(probs > 0, probs, 1.0)), 0.0)
    return 0.0 - terms.sum(axis=1)  # 0.0 - x turns -0.0 into 0.0


def score_thoughts(table: pd.DataFrame, probs: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Per-thought metrics: entropy, a sampled behaviour, preference and log-loss.

    Columns in: ``item_pos`` (+ anything else, passed through); ``probs`` aligned with rows.
    Columns out (added): ``entropy`` (bits), ``behavior`` (sampled option index),
    ``preference`` (bool: behaviour == real item), ``logloss`` (``-log2 p[item_pos]``).

    Args:
        table: rows from :func:`thought_table`.
        probs: ``(len(table), K_max)`` distributions, zero-padded.
        rng: draws exactly one uniform per row, in row order.
    """
    require_frame_columns(table, ("item_pos",), "score_thoughts")
    if probs.shape[0] != len(table):
        raise DataError(f"score_thoughts: {probs.shape[0]} probability rows for {len(table)} thoughts")
    out = table.copy()
    out["entropy"] = _entropy_bits(probs)
    # inverse-CDF sampling, one uniform per row; zero padding never gets picked
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(out)) * cdf[:, -1] if len(out) else np.zeros(0)
    behavior = (cdf <= u[:, None]).sum(axis=1)
    last_nonzero = probs.shape[1] - 1 - np.argmax((probs > 0)[:, ::-1], axis=1) if len(out) else behavior
    out["behavior"] = np.minimum(behavior, last_nonzero).astype(np.int64)
    item_pos = out["item_pos"].to_numpy(np.int64)
    out["preference"] = out["behavior"].to_numpy() == item_pos
    p_real = probs[np.arange(len(out)), item_pos] if len(out) else np.zeros(0)
    out["logloss"] = -np.log2(np.maximum(p_real, _LOG_EPS))
    return out


# --------------------------------------------------------------------------------------------
# 2. scenes
# --------------------------------------------------------------------------------------------

def scene_uncertainty(thoughts: pd.DataFrame, probs: np.ndarray, versions: Sequence[str] = VERSIONS) -> pd.DataFrame:
    """Per-scene uncertainty for each version, and the strong/weak difference.

    Columns in: ``scene_idx``, ``scene_id``, ``dataset``, ``choice_cnt``, ``item_pos``,
    ``version``, ``entropy``, ``preference``, ``logloss`` (output of :func:`score_thoughts`).

    Columns out: one row per scene (ordered by ``scene_idx``) with ``scene_idx``, ``scene_id``,
    ``dataset``, ``choice_cnt``, ``item_pos``, and per version ``v``:
    ``{v}_total_uncertainty`` = H(mean p), ``{v}_model_uncertainty`` = mean H(p),
    ``{v}_data_uncertainty`` = total - model, ``{v}_hits`` (thoughts whose behaviour hit),
    ``{v}_logloss`` (mean per-thought log-loss, bits), ``{v}_n_thoughts``; plus
    ``diff_model_uncertainty`` = weak - strong model uncertainty when both versions are present.
    """
    import pandas as pd

    require_frame_columns(thoughts, ("scene_idx", "scene_id", "dataset", "choice_cnt", "item_pos", "version",
                        "entropy", "preference", "logloss"), "scene_uncertainty")
    base = (thoughts[["scene_idx", "scene_id", "dataset", "choice_cnt", "item_pos"]]
            .drop_duplicates("scene_idx").sort_values("scene_idx").set_index("scene_idx"))
    for version in versions:
        mask = (thoughts["version"] == version).to_numpy()
        sub = thoughts.loc[mask]
        if sub.empty:
            continue
        sidx = sub["scene_idx"].to_numpy()
        # mean distribution per scene via a sparse-free group sum over the padded matrix
        uniq, inverse = np.unique(sidx, return_inverse=True)
        sums = np.zeros((len(uniq), probs.shape[1]))
        np.add.at(sums, inverse, probs[mask])
        counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
        mean_p = sums / counts[:, None]
        total = pd.Series(_entropy_bits(mean_p), index=uniq)
        grouped = sub.groupby("scene_idx", sort=True)
        model = grouped["entropy"].mean()
        base[f"{version}_total_uncertainty"] = total
        base[f"{version}_model_uncertainty"] = model
        base[f"{version}_data_uncertainty"] = total - model
        base[f"{version}_hits"] = grouped["preference"].sum().astype(np.int64)
        base[f"{version}_logloss"] = grouped["logloss"].mean()
        base[f"{version}_n_thoughts"] = pd.Series(counts.astype(np.int64), index=uniq)
    if "strong_model_uncertainty" in base and "weak_model_uncertainty" in base:
        base["diff_model_uncertainty"] = base["weak_model_uncertainty"] - base["strong_model_uncertainty"]
    return base.reset_index()


# --------------------------------------------------------------------------------------------
# 3. chosen / rejected
# --------------------------------------------------------------------------------------------

def pick_pairs(thoughts: pd.DataFrame, config: FilterConfig = FilterConfig()) -> pd.DataFrame:
    """Pick one chosen and one rejected thought per scene; drop scenes lacking either.

    Chosen = the lowest-entropy thought among ``config.chosen_from`` versions whose behaviour
    hit the real item; rejected = the lowest-entropy miss among ``config.rejected_from``
    versions. Ties go to the earlier version in ``config.versions``, then the lower thought
    index. Scenes where no thought of any version hit are noise and are dropped first.

    Columns in: ``scene_idx``, ``version``, ``thought_idx``, ``entropy``, ``behavior``,
    ``preference``.

    Columns out: one row per kept scene: ``scene_idx``, ``chosen_version``,
    ``chosen_thought_idx``, ``chosen_behavior``, ``chosen_entropy``, ``rejected_version``,
    ``rejected_thought_idx``, ``rejected_behavior``, ``rejected_entropy``.
    """
    require_frame_columns(thoughts, ("scene_idx", "version", "thought_idx", "entropy", "behavior", "preference"), "pick_pairs")
    any_hit = thoughts.groupby("scene_idx", sort=True)["preference"].any()
    keep = any_hit.index[any_hit.to_numpy()]
    pool = thoughts.loc[thoughts["scene_idx"].isin(keep)]
    version_rank = pool["version"].astype(str).map({v: i for i, v in enumerate(config.versions)})
    pool = pool.assign(_vrank=version_rank.to_numpy())
    # a stable sort by (scene, entropy, version order, thought) makes "first per scene" the pick
    order = pool.sort_values(["scene_idx", "entropy", "_vrank", "thought_idx"], kind="mergesort")
    is_hit = order["preference"].to_numpy(bool)
    version = order["version"].astype(str)
    chosen = order.loc[is_hit & version.isin(config.chosen_from).to_numpy()].drop_duplicates("scene_idx")
    rejected = order.loc[~is_hit & version.isin(config.rejected_from).to_numpy()].drop_duplicates("scene_idx")
    cols = ["scene_idx", "version", "thought_idx", "behavior", "entropy"]
    pairs = chosen[cols].merge(rejected[cols], on="scene_idx", how="inner", suffixes=("_c", "_r"))
    pairs = pairs.rename(columns={
        "version_c": "chosen_version", "thought_idx_c": "chosen_thought_idx",
        "behavior_c": "chosen_behavior", "entropy_c": "chosen_entropy",
        "version_r": "rejected_version", "thought_idx_r": "rejected_thought_idx",
        "behavior_r": "rejected_behavior", "entropy_r": "rejected_entropy",
    })
    for col in ("chosen_version", "rejected_version"):
        pairs[col] = pairs[col].astype(str)
    pairs.attrs["scenes_with_hit"] = int(len(keep))
    return pairs.sort_values("scene_idx").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# 4. stratified selection
# --------------------------------------------------------------------------------------------

def stratified_quota(group_sizes: Mapping[Any, int], total: int) -> dict[Any, int]:
    """Split ``total`` over groups in proportion to their sizes (largest-remainder rounding).

    Each group gets ``floor(total * n_g / N)``; the leftover units go to the largest fractional
    parts (ties: the larger group, then the earlier key in sorted order). If ``total >= N``
    every group keeps all of its members. Quotas never exceed group sizes and sum to
    ``min(total, N)``.
    """
    keys = sorted(group_sizes)
    sizes = np.asarray([int(group_sizes[k]) for k in keys], dtype=np.int64)
    n = int(sizes.sum())
    if total >= n:
        return {k: int(s) for k, s in zip(keys, sizes)}
    exact = sizes * total / n
    quota = np.floor(exact).astype(np.int64)
    left = total - int(quota.sum())
    frac = exact - quota
    # lexsort: last key is primary -> fraction desc, then size desc, then key order
    order = np.lexsort((np.arange(len(keys)), -sizes, -frac))
    quota[order[:left]] += 1
    return {k: int(q) for k, q in zip(keys, quota)}


def stratified_select(scenes: pd.DataFrame, config: FilterConfig = FilterConfig()) -> pd.DataFrame:
    """Keep ``config.filtered_num`` scenes, stratified by ``config.strata``.

    Columns in: ``scene_idx``, every column of ``config.strata`` and ``config.rank_by``.
    Columns out: the selected rows (all columns kept), ordered by ``scene_idx``. Within a
    stratum the highest ``rank_by`` values win (ties: lower ``scene_idx``).
    """
    import pandas as pd

    require_frame_columns(scenes, ("scene_idx", *config.strata, config.rank_by), "stratified_select")
    if scenes.empty:
        return scenes.copy()
    strata = list(config.strata)
    sizes = scenes.groupby(strata, sort=True).size()
    keys = [k if isinstance(k, tuple) else (k,) for k in sizes.index]
    quota = stratified_quota(dict(zip(keys, sizes.to_numpy())), config.filtered_num)
    ranked = scenes.sort_values([config.rank_by, "scene_idx"], ascending=[not config.descending, True],
                                kind="mergesort")
    rank_in_group = ranked.groupby(strata, sort=False).cumcount().to_numpy()
    key_series = pd.Series(list(zip(*(ranked[c] for c in strata))), index=ranked.index)
    limit = key_series.map(quota).to_numpy()
    picked = ranked.loc[rank_in_group < limit]
    return picked.sort_values("scene_idx").reset_index(drop=True)


def require_frame_columns(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise a :class:`DataError` naming the columns of ``df`` that a step needs and lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; got columns {list(df.columns)}")
