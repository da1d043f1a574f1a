"""The fidelity benchmark: every choice model, both scene variants, one table (DESIGN.md §8).

:func:`run_fidelity` does, in order:

1. raws (ML-100K is converted from its PyPI package when missing), the user split and the eval
   scenes of both variants (built once, then read back);
2. the rows: random (1/K), popularity (p ~ 1 + causal count), most popular (argmax of the
   causal count), collaborative (spectral embedding fitted on train users' interactions
   only), the base LLM in direct mode on every scene and in decision mode on the first
   ``decision_limit`` scenes, the direct-mode fine-tune of
   :mod:`usermirrorer.data_pipeline.training.direct_finetune` (when its manifest exists), the pipeline's fine-tuned
   checkpoints and any extra models named by the caller;
3. per row and variant: sampled accuracy with 95% CI, expected and top-1 accuracy, log-loss,
   ECE, choice share per letter, throughput; reliability bins;
4. paired comparisons of each fine-tune with its base and with the popularity choosers;
5. ``fidelity.md``, ``fidelity.json``, ``fidelity_accuracy.png`` and
   ``fidelity_reliability.png`` under the results folder.

Each row's answers are cached per scene under ``<project>/fidelity/cache`` so an interrupted run
resumes; ``fresh=True`` ignores the caches.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.training.likelihood_train import LOSS_MODES
from usermirrorer.errors import ConfigError, UserMirrorerError
from usermirrorer.sim.metrics import fit_prior_weight, fit_temperature
from usermirrorer.sim.mnl import FEATURES, fit_scenes_from_log, interleave_halves
from usermirrorer.sim.pool import fit_pool_weights, log_probs, member_log_terms, pool_probs, pool_terms
from usermirrorer.sim.prompts import MODES
from usermirrorer.sim.simulator import DEBIAS
from usermirrorer.fidelity import report
from usermirrorer.fidelity.eval_scenes import (
    VARIANTS,
    EvalSceneSpec,
    check_eval_scenes,
    scenes_fingerprint,
    summarize_popularity_match,
)
from usermirrorer.fidelity.runner import ModelRun, ModelSpec, build_choice_model, run_model
from usermirrorer.fidelity.stats import paired_difference, reliability_bins, score_run
from usermirrorer.fidelity.workspace import (
    FidelityPaths,
    ensure_eval_scenes,
    ensure_split,
    load_benchmark_raws,
    load_direct_ft_manifest,
    load_likelihood_ft_manifests,
    scenes_build_seconds,
    users_in_files,
)

__all__ = ["FidelityConfig", "ExtraModel", "parse_extra_model", "plan_rows", "run_fidelity"]

RESULT_STEM = "fidelity"
ROLE_EXTRA = "extra"  # a --model row


@dataclass(frozen=True)
class ExtraModel:
    """A model named on the command line: ``NAME`` or ``NAME@decision``, optionally with the
    training-data files it was trained on (JSONL with ``user_id``): it is then scored only on
    eval scenes of users absent from those files."""

    model: str
    mode: str = "direct"
    label: str | None = None
    trained_on: tuple[str, ...] = ()
    role: str = ROLE_EXTRA


def parse_extra_model(text: str, role: str = ROLE_EXTRA) -> ExtraModel:
    """``NAME[@direct|@decision|@likelihood][=LABEL]`` -> :class:`ExtraModel`."""
    label = None
    if "=" in text:
        text, label = text.split("=", 1)
    mode = "direct"
    if "@" in text:
        text, mode = text.rsplit("@", 1)
    if mode not in MODES:
        raise ConfigError(f"model {text!r}: mode after '@' must be one of {list(MODES)}, got {mode!r}")
    if not text:
        raise ConfigError("empty model name; expected NAME[@direct|@decision|@likelihood][=LABEL]")
    return ExtraModel(model=text, mode=mode, label=label, role=role)


@dataclass(frozen=True)
class FidelityConfig:
    """Options of one benchmark run.

    Attributes:
        project_path: working directory (raws, split, scenes, caches, fine-tune outputs).
        results_dir: where the md/json/png go.
        dataset, n_scenes, k, seed, eval_user_fraction, embedder: the eval scenes
            (:class:`~usermirrorer.fidelity.eval_scenes.EvalSceneSpec`).
        limit: evaluate every row on at most this many scenes per variant (quick runs).
        llm_limit: evaluate direct-mode LLM rows on at most this many scenes per variant (the
            log-only rows still answer every scene); None: all.
        likelihood_limit: like ``llm_limit``, for likelihood-mode rows (None: all scenes).
        decision_limit: scenes per variant for decision-mode rows.
        n_thoughts, max_thought_tokens: decision-mode settings.
        base_model: the base LLM.
        base_modes: modes the base LLM runs in.
        finetuned: the pipeline's fine-tuned checkpoints (evaluated in direct mode and, if
            ``finetuned_decision``, decision mode).
        finetuned_decision: also run the fine-tuned checkpoints in decision mode.
        extra_models: other models from the command line.
        direct_ft: include the direct-mode fine-tune recipe's model when it exists.
        likelihood_ft: include the likelihood-mode trainings (``usermirrorer train``) when they
            exist: the last checkpoint on the likelihood rows' scenes, the earlier ones (the
            learning curve) on the first ``curve_limit`` scenes per variant.
        curve_limit: scenes per variant of the learning-curve points.
        trained_limit: scenes per variant of a training's last checkpoint (None: as
            ``likelihood_limit``).
        baselines: which log-only rows to run.
        row_minutes: stop computing an LLM row after this many minutes (its answers so far are
            kept, cached and reported with their count); None: no limit.
        repeats: behaviours sampled per scene for the accuracy.
        batch_size: scenes per LLM backend call.
        fit_scenes: train-user scenes (half standard, half popularity-matched) the ``content``
            and ``mnl`` rows are fitted on.
        likelihood_fit_scenes: the first this many of them fit a likelihood-mode row's
            temperature and the pools' weights (its answers on them are cached like eval
            answers); 600, as ``usermirrorer fit-pool`` fits its pool.
        debias: extra base-LLM direct-mode rows, one per letter-debiasing method
            (``reversed``, ``cyclic``, ``prior``), on the ``llm_limit`` scenes.
        pool: add the hybrid rows: each trained likelihood row pooled with the collaborative
            row, and with every row that can join (the untrained LLM in likelihood mode,
            collaborative, MNL, content, popularity) (:func:`_pool_rows`), weights fitted on
            the ``likelihood_fit_scenes`` (all, or one construction's), and the wide pool once
            more gated by the popularity spread of the slate (one fit for both constructions).
        fresh: ignore caches (recompute every row).
        progress: rich progress bars.
        command: the command line, recorded in the results.
    """

    project_path: str = "./workspace"
    results_dir: str = "benchmarks/results"
    dataset: str = "ml-100k"
    n_scenes: int = 1000
    k: int = 5
    seed: int = 0
    eval_user_fraction: float = 0.2
    embedder: str | None = "minilm"
    limit: int | None = None
    llm_limit: int | None = None
    likelihood_limit: int | None = None
    decision_limit: int = 100
    n_thoughts: int = 1
    max_thought_tokens: int = 128
    base_model: str = "smollm2-135m"
    base_modes: tuple[str, ...] = ("likelihood", "direct", "decision")
    finetuned: tuple[ExtraModel, ...] = ()
    finetuned_decision: bool = False
    extra_models: tuple[ExtraModel, ...] = ()
    direct_ft: bool = True
    likelihood_ft: bool = True
    curve_limit: int = 200
    trained_limit: int | None = None
    baselines: tuple[str, ...] = ("random", "popularity", "most-popular", "collaborative", "content", "cooccurrence", "mnl",
                                  "mnl-standard", "mnl-matched")
    row_minutes: float | None = None
    repeats: int = 10
    batch_size: int = 8
    fit_scenes: int = 1000
    likelihood_fit_scenes: int = 600  # as fit-pool; 200 moved the pools ~0.5 pp
    debias: tuple[str, ...] = ()
    pool: bool = True
    fresh: bool = False
    progress: bool = True
    command: str = ""

    @property
    def scene_spec(self) -> EvalSceneSpec:
        return EvalSceneSpec(dataset=self.dataset, n_scenes=self.n_scenes, k=self.k, seed=self.seed,
                             eval_user_fraction=self.eval_user_fraction, embedder=self.embedder).validate()

    def validate(self) -> FidelityConfig:
        self.scene_spec  # noqa: B018 - validates the scene options
        for name in ("limit", "llm_limit", "likelihood_limit", "curve_limit", "trained_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.decision_limit < 0:
            raise ConfigError(f"decision_limit must be >= 0 (0 skips decision mode), got {self.decision_limit}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        bad = [m for m in self.base_modes if m not in MODES]
        if bad:
            raise ConfigError(f"base_modes {bad} are not modes; expected some of {list(MODES)}")
        bad = [m for m in self.debias if m not in DEBIAS or m == "none"]
        if bad:
            raise ConfigError(f"debias methods {bad} are not known; expected some of {[m for m in DEBIAS if m != 'none']}")
        if self.fit_scenes < 10:
            raise ConfigError(f"fit_scenes must be >= 10 (train-user scenes the fitted rows learn from), got {self.fit_scenes}")
        return self


LABEL_RANDOM = "random (1/K)"
LABEL_POPULARITY = "popularity (p ∝ 1+count)"
LABEL_MOST_POPULAR = "most popular (argmax count)"
LABEL_COLLABORATIVE = "collaborative (spectral)"
LABEL_CONTENT = "content similarity (MiniLM)"
LABEL_COOCCURRENCE = "item co-occurrence (recent history)"
LABEL_MNL = f"learned MNL ({len(FEATURES)} features)"
_BASELINE_ROWS = {
    "random": (LABEL_RANDOM, "uniform over the K options"),
    "popularity": (LABEL_POPULARITY, "causal counts (before the scene time)"),
    "most-popular": (LABEL_MOST_POPULAR, "causal counts; ties split evenly"),
    "collaborative": (LABEL_COLLABORATIVE, "embedding fitted on train users only"),
    "content": (LABEL_CONTENT, "cosine of the option's MiniLM embedding to the history's; one weight fitted on "
                "train-user scenes"),
    "cooccurrence": (LABEL_COOCCURRENCE, ("how often train users interacted with the option within 10 positions "
                                          "of the user's last 20 items (recency-weighted, cosine-normalised, the "
                                          "user's own rows left out); one weight fitted on train-user scenes")),
    "mnl": (LABEL_MNL, "multinomial logit over popularity, collaborative, content, recency, genre overlap, item "
            "co-occurrence; fitted on train-user scenes of both constructions"),
    "mnl-standard": (LABEL_MNL + ", fitted on standard", "the same, fitted on standard-construction train-user "
                     "scenes only"),
    "mnl-matched": (LABEL_MNL + ", fitted on popularity-matched", "the same, fitted on popularity-matched "
                    "train-user scenes only"),
}
# baseline name -> (model kind, train-user scenes it is fitted on)
_FITTED_ROWS = {"content": ("content", "both"), "cooccurrence": ("cooccurrence", "both"), "mnl": ("mnl", "both"), "mnl-standard": ("mnl", "standard"),
                "mnl-matched": ("mnl", "popularity-matched")}


def _short(model: str) -> str:
    return {"smollm2-135m": "SmolLM2-135M-Instruct"}.get(model, Path(model).name or model)


ROLE_CURVE = "learning curve"


def _trained_label(manifest: Mapping[str, Any], examples: int) -> str:
    return f"{_short(manifest['base_model'])} trained ({manifest['loss']}, {examples} ex), {_trained_mode(manifest)}"


def _trained_mode(manifest: Mapping[str, Any]) -> str:
    """The simulator mode a training's checkpoints are scored in (its loss trained for it)."""
    return LOSS_MODES.get(manifest["loss"], "likelihood")


def plan_rows(config: FidelityConfig, direct_ft_manifest: Mapping[str, Any] | None,
              likelihood_ft_manifests: Sequence[Mapping[str, Any]] = ()) -> list[ModelSpec]:
    """The rows of the table, in order."""
    rows: list[ModelSpec] = []
    for name in config.baselines:
        if name not in _BASELINE_ROWS:
            raise ConfigError(f"unknown baseline {name!r}; expected some of {sorted(_BASELINE_ROWS)}")
        if name == "content" and config.embedder is None:
            continue  # no text embedder, no content row (the MNL then drops that feature too)
        label, note = _BASELINE_ROWS[name]
        kind, fit_on = _FITTED_ROWS.get(name, (name, "both"))
        fitted = config.fit_scenes if name in _FITTED_ROWS else 0
        rows.append(ModelSpec(label=label, kind=kind, limit=config.limit, note=note, fit_on=fit_on,
                              fit_scenes=fitted))

    def llm(label: str, model: str, mode: str, role: str, note: str = "") -> ModelSpec:
        mode_limit = config.likelihood_limit if mode == "likelihood" else config.llm_limit
        limits = [x for x in (config.limit, mode_limit) if x]
        limit = min(limits) if limits else None
        if mode == "decision":
            limit = min(config.decision_limit, limit) if limit else config.decision_limit
            note = (note + "; " if note else "") + (
                f"decision subset: first {limit} scenes, {config.n_thoughts} thought(s) of <= "
                f"{config.max_thought_tokens} tokens")
        return ModelSpec(label=label, kind="llm", model=model, mode=mode, limit=limit, role=role,
                         n_thoughts=config.n_thoughts, max_thought_tokens=config.max_thought_tokens,
                         batch_size=config.batch_size, note=note)

    base = _short(config.base_model)
    for mode in config.base_modes:
        if mode == "decision" and config.decision_limit == 0:
            continue
        rows.append(llm(f"{base} base, {mode}", config.base_model, mode, "base LLM", "not fine-tuned"))
    for method in config.debias:
        row = llm(f"{base} base, direct (debiased: {method})", config.base_model, "direct", "base LLM",
                  f"not fine-tuned; letter positions debiased ({method})")
        rows.append(replace(row, debias=method))
    if config.direct_ft and direct_ft_manifest is not None:
        steps = "; ".join(f"{s['stage'].upper()} {s['steps']} steps × {s['batch_size']}" for s in direct_ft_manifest["stages"])
        rows.append(llm(f"{_short(direct_ft_manifest['base_model'])} direct-FT (ours, CPU)", direct_ft_manifest["model_dir"],
                        "direct", "fine-tuned", f"{direct_ft_manifest['train_scenes']} train-user scenes; {steps}"))
    for manifest in likelihood_ft_manifests if config.likelihood_ft else ():
        *earlier, last = sorted(manifest["checkpoints"], key=lambda c: c["examples"])
        note = (f"{manifest['loss']} loss on {last['examples']} train-user scenes, top "
                f"{manifest['config']['trainable_layers']} layers, {last['seconds'] / 60:.0f} min")
        mode = _trained_mode(manifest)
        final = llm(_trained_label(manifest, last["examples"]), last["model_dir"], mode, "fine-tuned", note)
        if config.trained_limit:
            final = replace(final, limit=min(x for x in (final.limit, config.trained_limit) if x))
        rows.append(final)
        for point in earlier:
            curve_row = llm(_trained_label(manifest, point["examples"]), point["model_dir"], mode, ROLE_CURVE,
                            f"learning-curve point: {point['examples']} train-user scenes")
            rows.append(replace(curve_row, limit=min(x for x in (curve_row.limit, config.curve_limit) if x)))
    for ft in config.finetuned:
        label = ft.label or f"{_short(ft.model)} pipeline fine-tune"
        rows.append(llm(f"{label}, direct", ft.model, "direct", "fine-tuned", "pipeline checkpoint"))
        if config.finetuned_decision and config.decision_limit:
            rows.append(llm(f"{label}, decision", ft.model, "decision", "fine-tuned", "pipeline checkpoint"))
    for extra in config.extra_models:
        label = extra.label or f"{_short(extra.model)}, {extra.mode}"
        rows.append(llm(label, extra.model, extra.mode, extra.role, "from the command line"))
    labels = [r.label for r in rows]
    dupes = {lb for lb in labels if labels.count(lb) > 1}
    if dupes:
        raise ConfigError(f"two rows share the label(s) {sorted(dupes)}; give extra models a label with NAME=LABEL")
    return rows


def _external_rows(config: FidelityConfig, rows: Sequence[ModelSpec]) -> list[tuple[ExtraModel, str]]:
    """(model given on the command line, label of each of its rows)."""
    out = []
    for ft in (*config.finetuned, *config.extra_models):
        for row in rows:
            if row.kind == "llm" and row.model == ft.model and row.role == ft.role:
                out.append((ft, row.label))
    return out


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled)


def _scoring_rule(row: ModelSpec) -> str:
    """A likelihood row's scoring rule (its label's last parenthesis, set by :func:`_likelihood_rows`)."""
    return row.label.rsplit(" (", 1)[-1] if row.mode == "likelihood" and " (" in row.label else ""


def _comparisons(runs: Mapping[tuple[str, str], ModelRun], rows: Sequence[ModelSpec],
                 variants: Sequence[str]) -> list[dict[str, Any]]:
    """Each fine-tuned or ``--model`` row against the base LLM in the same mode (and scoring
    rule) and the log-only bars (the popularity choosers, collaborative, the learned MNL); each
    base row against those bars; and each ``--model`` row against the later ones in the same mode
    and scoring rule (an A/B of two checkpoints is two ``--model`` rows)."""
    out = []
    base = {(r.mode, _scoring_rule(r)): r.label for r in rows if r.role == "base LLM"}
    bars = (LABEL_MOST_POPULAR, LABEL_POPULARITY, LABEL_COLLABORATIVE, LABEL_COOCCURRENCE, LABEL_MNL)
    pairs = [(r.label, o) for r in rows if r.role in ("fine-tuned", ROLE_EXTRA)
             for o in (base.get((r.mode, _scoring_rule(r))), *bars) if o]
    pairs += [(r.label, o) for r in rows if r.role == "base LLM" for o in bars]
    # a pool against its LLM member, the collaborative row and the MNL fitted on the same scenes
    mnl_of = {"both": LABEL_MNL, "standard": LABEL_MNL + ", fitted on standard",
              "popularity-matched": LABEL_MNL + ", fitted on popularity-matched"}
    # and a pool with an LLM against the log-only pool fitted the same way: what the LLM adds
    log_only_pools = {(r.fit_on, "gated by" in r.label): r.label for r in rows if r.role == ROLE_HYBRID and not r.model}
    for r in rows:
        if r.role == ROLE_HYBRID:
            member = next((m.label for m in rows if m.kind == "llm" and m.model == r.model and m.role == "fine-tuned"
                           and m.label.endswith(" (PMI)")), None) if r.model else None
            log_only = log_only_pools.get((r.fit_on, "gated by" in r.label)) if r.model else None
            pairs += [(r.label, o) for o in (member, LABEL_COLLABORATIVE, LABEL_COOCCURRENCE, mnl_of[r.fit_on],
                                             log_only) if o]
    extras = [r for r in rows if r.role == ROLE_EXTRA]
    pairs += [(a.label, b.label) for i, a in enumerate(extras) for b in extras[i + 1:]
              if (a.mode, _scoring_rule(a)) == (b.mode, _scoring_rule(b))]
    for a, b in pairs:
        for variant in variants:
            ra, rb = runs.get((a, variant)), runs.get((b, variant))
            if ra is None or rb is None:
                continue
            # the scenes both rows answered (a row may skip users it was trained on)
            index_b = {sid: i for i, sid in enumerate(rb.scene_ids)}
            ia = [i for i, sid in enumerate(ra.scene_ids) if sid in index_b]
            if not ia:
                continue
            ib = [index_b[ra.scene_ids[i]] for i in ia]
            out.append(paired_difference(a, ra.probs[ia], b, rb.probs[ib], ra.item_pos[ia], variant).as_dict())
    return out


def _conclusion(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """One line per fine-tune and opponent, both variants, with the numbers."""
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in comparisons:
        by_pair.setdefault((c["a"], c["b"]), []).append(c)
    lines = []
    for (a, b), items in by_pair.items():
        parts = []
        for c in items:
            word = "beats" if c["ci_low"] > 0 else "is worse than" if c["ci_high"] < 0 else "does not significantly differ from"
            parts.append(f"{c['variant']}: {word} it, {100 * c['difference']:+.1f} pp "
                         f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]")
        lines.append(f"- **{a}** vs {b} — " + "; ".join(parts) + ".")
    return ("**Verdicts (computed from the paired differences above):**\n" + "\n".join(lines)) if lines else ""


# The scoring rules a likelihood row is reported under (all from one run's cached likelihoods):
# name -> (label suffix, prior weight w of ``logprob - w * prior``, per-token mean); w None: fitted.
_LIKELIHOOD_RULES = {
    "pmi": ("PMI", 1.0, False),
    "pmi-t1": ("PMI at T=1", 1.0, False),
    "sum": ("sum of log-probs", 0.0, False),
    "mean": ("per-token mean", 0.0, True),
    "fitted": ("prior weight fitted", None, False),
}
# Rules shown for comparison only: their rows get this role and no paired tests of their own.
_VARIANT_RULES = ("pmi-t1", "sum", "mean")
ROLE_SCORING_VARIANT = "scoring variant"


def _likelihood_rows(row: ModelSpec, variant_runs: dict[str, ModelRun], fit_scenes: Sequence[dict],
                     make_model: Any, cache_dir: Path, config: FidelityConfig,
                     progress: Any) -> tuple[list[tuple[ModelSpec, dict[str, ModelRun]]], ModelRun]:
    """One likelihood run reported under each rule of :data:`_LIKELIHOOD_RULES`, and the
    model's run on the train-user fit scenes.

    The run keeps every option's log-likelihood after the scene's context and after the neutral
    one, so each rule's probabilities are derived here: ``softmax(score / T)`` with ``T`` (and,
    for the fitted rule, the prior weight) chosen by log-loss on train-user scenes the same
    model answers (cached like eval answers).
    """
    fit = fit_scenes[: config.likelihood_fit_scenes]
    fit_row = replace(row, limit=None, label=row.label + " [fit]")
    fitted = run_model(fit_row, {"train-users": fit}, make_model, cache_dir=cache_dir,
                       chunk_size=config.batch_size, progress=progress)["train-users"]
    if fitted.likelihood is None or any(r.likelihood is None for r in variant_runs.values()):
        raise ConfigError(f"row {row.label!r}: answers without option likelihoods (cached by an older version?); "
                          "rerun with --fresh")

    def scores_of(table: np.ndarray, weight: float, mean: bool) -> np.ndarray:
        lp, prior, tokens = table[:, 0], table[:, 1], table[:, 2]
        return lp / np.maximum(tokens, 1.0) if mean else lp - weight * prior

    out = []
    for name, (suffix, weight, mean) in _LIKELIHOOD_RULES.items():
        if weight is None:
            weight, temperature = fit_prior_weight(list(fitted.likelihood[:, 0]), list(fitted.likelihood[:, 1]),
                                                   list(fitted.item_pos))
            suffix = f"{suffix}, w={weight:.2f}"
        elif name == "pmi-t1":  # not calibrated: shows what the fitted temperature trades for log-loss
            temperature = 1.0
        else:
            temperature = fit_temperature(list(scores_of(fitted.likelihood, weight, mean)), list(fitted.item_pos))
        derived: dict[str, ModelRun] = {}
        for variant, run in variant_runs.items():
            z = scores_of(run.likelihood, weight, mean) / temperature
            z = np.exp(z - z.max(axis=1, keepdims=True))
            derived[variant] = replace(run, probs=z / z.sum(axis=1, keepdims=True))
        note = (f"score: {suffix}; softmax temperature {temperature:.3g} " + ("(not fitted)" if name == "pmi-t1" else
                f"fitted on {len(fitted.scene_ids)} train-user scenes"))
        role = ROLE_SCORING_VARIANT if name in _VARIANT_RULES and row.role != ROLE_CURVE else row.role
        out.append((replace(row, label=f"{row.label} ({suffix.split(',')[0]})", role=role,
                            note=(row.note + "; " if row.note else "") + note), derived))
    return out, fitted


def train_fit_scenes(ds: Any, split: Any, config: FidelityConfig) -> tuple[list[dict[str, Any]],
                                                                            dict[str, list[dict[str, Any]]]]:
    """The train-user scenes (never an eval user) fitted rows learn from, ids ``fit-0``, ``fit-1`` ...

    Returns:
        ``(scenes, by_construction)``: the scenes with the two constructions interleaved, so a
        prefix (a likelihood row's ``likelihood_fit_scenes``) holds both; and the same scenes
        under ``"standard"``, ``"popularity-matched"`` and ``"both"``.
    """
    scenes = fit_scenes_from_log(ds, config.fit_scenes, k=config.k, seed=config.seed,
                                 users=list(split.train_users), exclude_users=list(split.eval_users),
                                 embedder=config.embedder, project_path=config.project_path)
    half = len(scenes) // 2
    by_construction = {"standard": scenes[:half], "popularity-matched": scenes[half:]}
    scenes = interleave_halves(scenes)
    for i, scene in enumerate(scenes):
        scene["scene_id"] = f"fit-{i}"
    by_construction["both"] = scenes
    return scenes, by_construction


ROLE_HYBRID = "hybrid"
_POOL_FITS = ("both", "standard", "popularity-matched")
# log-only rows the widest pool takes in (not "most popular": its zeros have no log)
_POOL_LOG_ONLY = {LABEL_COLLABORATIVE: "collaborative", LABEL_MNL: "MNL", LABEL_CONTENT: "content",
                  LABEL_POPULARITY: "popularity"}


def _pmi(run: ModelRun, rows: Sequence[int] | slice = slice(None)) -> np.ndarray:
    """A likelihood run's PMI scores (before any temperature): log P(option | user) - log P(option)."""
    return run.likelihood[rows, 0] - run.likelihood[rows, 1]


@dataclass
class _PoolMember:
    """One member of a pooled row: the row its eval answers are read from and its log-terms on
    the fit scenes (in the order of the trained LLM's fit run)."""

    label: str
    name: str
    fit_terms: np.ndarray
    likelihood: bool  # eval log-terms are PMI scores of run.likelihood, else log run.probs

    def eval_terms(self, run: ModelRun, rows: Sequence[int]) -> np.ndarray:
        return _pmi(run, rows) if self.likelihood else log_probs(run.probs[rows])


def _pool_rows(lead_row: ModelSpec, members: Sequence[_PoolMember], fit_ids: Sequence[str],
               fit_item_pos: np.ndarray, runs: Mapping[tuple[str, str], ModelRun],
               fit_by_construction: Mapping[str, Sequence[dict]],
               gate: int | None = None) -> list[tuple[ModelSpec, dict[str, ModelRun]]]:
    """Rows of a log-linear pool (:class:`usermirrorer.sim.pool.LogLinearPool`) of
    ``members`` (the first: the trained LLM, PMI scores), weights fitted on the train-user scenes
    the LLM's temperature was fitted on: all of them, or only those of one construction (as the
    MNL rows). Derived from the members' cached answers: no model runs again. A row is scored on
    the trained LLM's scenes; every member answered them. With ``gate`` (a member index) one
    gated pool is fitted on all fit scenes: every weight moves with that member's spread
    (:func:`usermirrorer.sim.pool.gated_terms`), so it needs no construction label."""
    construction = {s["scene_id"]: name for name in ("standard", "popularity-matched")
                    for s in fit_by_construction.get(name, ())}
    names = " × ".join(m.name if m.label != lead_row.label else lead_row.label.rsplit(" (", 1)[0] for m in members)
    out = []
    for fit_on in _POOL_FITS if gate is None else ("both",):
        mask = np.array([fit_on == "both" or construction.get(i) == fit_on for i in fit_ids])
        if mask.sum() < 10:
            continue
        weights = fit_pool_weights(pool_terms([m.fit_terms[mask] for m in members], gate), fit_item_pos[mask])
        derived: dict[str, ModelRun] = {}
        for variant in VARIANTS:
            lead = runs[(lead_row.label, variant)]
            terms, seconds = [], 0.0
            for m in members:
                run = runs[(m.label, variant)]
                index = {sid: i for i, sid in enumerate(run.scene_ids)}
                terms.append(m.eval_terms(run, [index[sid] for sid in lead.scene_ids]))
                seconds += run.seconds * len(lead.scene_ids) / max(len(run.scene_ids), 1)
            derived[variant] = replace(lead, probs=pool_probs(pool_terms(terms, gate), weights), seconds=seconds)
        fitted_on = "both constructions" if fit_on == "both" else f"{fit_on} ones"
        label = f"pool: {names}" + (
            "" if fit_on == "both" else f", fitted on {fit_on}") + (
            "" if gate is None else f", gated by {members[gate].name} spread")
        member_names = ["trained LLM" if m.label == lead_row.label else m.name for m in members]
        if gate is not None:
            member_names += [f"{n} × spread" for n in member_names]
        weights_text = ", ".join(f"{n} {w:.3g}" for n, w in zip(member_names, weights))
        note = (f"log-linear pool p ∝ prod_m p_m^w_m of the rows above (LLMs: PMI scores); weights {weights_text}, "
                f"fitted by log-loss on {int(mask.sum())} train-user scenes ({fitted_on})") + (
            "" if gate is None else f"; each weight w_m = a_m + b_m × the scene's spread (std over options) "
                                    f"of the {members[gate].name} log-terms, the '× spread' weights are the b_m")
        # a pool of log-only rows has no model: it is what the LLM pools are paired against
        with_llm = any(m.likelihood for m in members)
        spec = ModelSpec(label=label, kind="pool", model=lead_row.model if with_llm else None, mode="-",
                         role=ROLE_HYBRID, note=note,
                         fit_on=fit_on, fit_scenes=int(mask.sum()))
        out.append((spec, derived))
    return out


# scoring rules the learning curve is shown under (the label suffixes of _likelihood_rows)
_CURVE_RULES = ("PMI", "sum of log-probs", "prior weight fitted")
# and, for likelihood trainings, each point's PMI scores in the gated pool with the log-only
# models (what `usermirrorer fit-pool` would save from that checkpoint): the simulator a
# training serves, so its curve is the one that says whether more training pays
CURVE_POOLED = "pooled"
# the same pool without any LLM, on the same scenes: the curve's floor
CURVE_LOG_ONLY = "log-only pool"


def _learning_curve(config: FidelityConfig, manifests: Sequence[Mapping[str, Any]],
                    runs: Mapping[tuple[str, str], ModelRun]) -> list[dict[str, Any]]:
    """Held-out scores after 0 (the base model), ..., N train examples, on the same scenes.

    Every point is scored on the first ``curve_limit`` scenes per variant (the final checkpoint
    and the base row answered more: their answers are cut to those scenes), so the points differ
    only in training.
    """
    out = []
    for manifest in manifests:
        mode = _trained_mode(manifest)
        # likelihood rows come split by scoring rule (label suffixes); a direct-mode row is one rule
        rules = {rule: f" ({rule})" for rule in _CURVE_RULES} if mode == "likelihood" else {"letters": ""}
        base = f"{_short(config.base_model)} base, {mode}"
        points = [(0, base)] if manifest["base_model"] == config.base_model else []
        points += [(c["examples"], _trained_label(manifest, c["examples"])) for c in manifest["checkpoints"]]
        if mode == "likelihood":
            rules[CURVE_POOLED] = f" ({CURVE_POOLED})"
        for examples, label in points:
            for rule, suffix in rules.items():
                for variant in VARIANTS:
                    run = runs.get((f"{label}{suffix}", variant))
                    if run is None:
                        continue
                    n = min(config.curve_limit, len(run.scene_ids))
                    score = score_run(run.probs[:n], run.item_pos[:n], run.seconds, config.repeats, seed=config.seed)
                    out.append({"loss": manifest["loss"], "examples": examples, "rule": rule, "variant": variant,
                                "label": label, "score": score.as_dict()})
    n = {p["score"]["n"] for p in out if p["rule"] == CURVE_POOLED}
    for variant in VARIANTS if n else ():
        run = runs.get((CURVE_LOG_ONLY, variant))
        if run is not None:
            cut = min(min(n), len(run.scene_ids))
            score = score_run(run.probs[:cut], run.item_pos[:cut], run.seconds, config.repeats, seed=config.seed)
            out.append({"loss": CURVE_LOG_ONLY, "examples": 0, "rule": CURVE_POOLED, "variant": variant,
                        "label": CURVE_LOG_ONLY, "score": score.as_dict()})
    return out


def run_fidelity(config: FidelityConfig, console: Any = None) -> dict[str, Any]:
    """Run the benchmark and write its results; returns the result dict (what the JSON holds).

    Raises:
        DataError: a fine-tuned model was trained on eval users; scenes break the contract.
        ConfigError: conflicting options.
    """
    config.validate()
    if console is None:
        from rich.console import Console

        # a log file gets the wide tables a terminal would
        console = Console() if sys.stdout.isatty() else Console(width=170)
    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    paths = FidelityPaths(config.project_path)
    spec = config.scene_spec

    t = time.perf_counter()
    ds = load_benchmark_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    stage_seconds["load raws + user split"] = time.perf_counter() - t

    t = time.perf_counter()
    with console.status("eval scenes (built once, then read back) ..."):
        scenes, built = ensure_eval_scenes(ds, spec, split, config.project_path, progress=False, fresh=config.fresh)
    stage_seconds["eval scenes (" + ("built" if built else "read back") + ")"] = time.perf_counter() - t
    checks = {v: check_eval_scenes(scenes[v], spec, split, f"{v} eval scenes") for v in VARIANTS}
    t = time.perf_counter()
    pop_match = {v: summarize_popularity_match(ds, scenes[v]).as_dict() for v in VARIANTS}
    stage_seconds["popularity check of the scenes"] = time.perf_counter() - t

    manifest = load_direct_ft_manifest(config.project_path) if config.direct_ft else None
    if manifest is not None:
        split.check_disjoint(manifest.get("trained_user_ids", []), f"the direct-mode fine-tune {manifest['model_dir']}")
    trained = load_likelihood_ft_manifests(config.project_path) if config.likelihood_ft else []
    for ft_manifest in trained:
        split.check_disjoint(ft_manifest.get("trained_user_ids", []), f"the likelihood-mode training {ft_manifest['loss']}")
    rows = plan_rows(config, manifest, trained)
    # a model trained elsewhere is scored only on eval users absent from its training data
    excluded: dict[str, set[str]] = {}
    for ft, label in _external_rows(config, rows):
        if ft.trained_on:
            excluded[label] = users_in_files(ft.trained_on) & set(split.eval_users)

    fingerprint = scenes_fingerprint(scenes)
    cache_dir = paths.cache / fingerprint
    if config.fresh and cache_dir.exists():
        import shutil

        shutil.rmtree(cache_dir)
    fit_rows = ds.rows_of_users(split.train_users)
    # Train-user scenes (never an eval user) that fitted rows learn from: the MNL's weights, the
    # content row's weight, a likelihood row's temperature.
    fit_scenes: list[dict[str, Any]] = []
    fit_by_construction: dict[str, list[dict[str, Any]]] = {}
    if any(r.kind in ("mnl", "content", "cooccurrence") or r.mode == "likelihood" for r in rows):
        t = time.perf_counter()
        fit_scenes, fit_by_construction = train_fit_scenes(ds, split, config)
        stage_seconds["train-user fit scenes"] = time.perf_counter() - t

    runs: dict[tuple[str, str], ModelRun] = {}
    result_rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    resumed_rows: list[str] = []
    examples: dict[str, Any] = {}
    final_rows: list[ModelSpec] = []  # the planned rows, a likelihood row once per scoring rule
    built: dict[str, Any] = {}  # row label -> its choice model, when this run built one
    # trained likelihood rows (PMI rule), their run on the fit scenes, their run key
    pool_members: list[tuple[ModelSpec, ModelRun, str]] = []
    base_fits: list[tuple[str, ModelRun]] = []  # the base LLM's likelihood row (PMI) and its fit-scene run
    curve_fits: list[tuple[ModelSpec, ModelRun]] = []  # learning-curve points (PMI row) and their fit-scene runs

    def record(row: ModelSpec, variant_runs: Mapping[str, ModelRun], run_key: str) -> None:
        """Score a row's runs into the table."""
        final_rows.append(row)
        for variant in VARIANTS:
            run = variant_runs[variant]
            runs[(row.label, variant)] = run
            if run.resumed:
                resumed_rows.append(f"{row.label} [{variant}: {run.resumed} scenes]")
            score = score_run(run.probs, run.item_pos, run.seconds, config.repeats, seed=config.seed)
            bins = reliability_bins(run.probs, run.item_pos)
            result_rows.append({
                "label": row.label, "variant": variant, "mode": row.mode, "kind": row.kind, "model": row.model,
                "role": row.role, "note": row.note, "score": score.as_dict(),
                "reliability": {k: v.tolist() for k, v in bins.items()}, "planned": run.planned, "run_key": run_key,
            })

    with _progress(config.progress) as progress:
        for spec_row in rows:
            t = time.perf_counter()

            def make_model(row: ModelSpec = spec_row) -> Any:
                built[row.label] = build_choice_model(row, ds, fit_rows=fit_rows, seed=config.seed,
                                                      fit_scenes=fit_by_construction.get(row.fit_on, fit_scenes),
                                                      embedder=config.embedder,
                                                      project_path=config.project_path)
                return built[row.label]

            row_scenes = scenes
            if excluded.get(spec_row.label):
                drop = excluded[spec_row.label]
                row_scenes = {v: [s for s in scenes[v] if s["user_id"] not in drop] for v in VARIANTS}
                spec_row = replace(spec_row, note=spec_row.note + f"; {len(drop)} eval users it was trained on "
                                   f"left out ({len(row_scenes[VARIANTS[0]])} scenes remain)")
            try:
                budget = config.row_minutes * 60 if config.row_minutes and spec_row.kind == "llm" else None
                # one backend batch per chunk, flushed to the cache, so an interrupted run keeps it
                # (decision chunks too: sampling 8 rows together costs ~30 ms per row and token on
                # 2 cores against ~80 ms one by one)
                variant_runs = run_model(spec_row, row_scenes, make_model, cache_dir=cache_dir,
                                         chunk_size=config.batch_size, progress=progress,
                                         budget_seconds=budget)
                if any(not r.complete for r in variant_runs.values()):
                    first = variant_runs[VARIANTS[0]]
                    spec_row = replace(spec_row, note=spec_row.note + f"; time budget ({config.row_minutes:g} min) "
                                       f"reached: {len(first.scene_ids)} of {first.planned} scenes answered")
                if any(len(r.scene_ids) == 0 for r in variant_runs.values()):
                    skipped[spec_row.label] = "no scene answered within the time budget"
                    stage_seconds[f"row: {spec_row.label}"] = time.perf_counter() - t
                    continue
                fit_report = getattr(built.get(spec_row.label), "fit_report", None)
                if fit_report:  # a fitted log-only row: show what it learned
                    weights = ", ".join(f"{k} {v:+.2f}" for k, v in fit_report["weights"].items())
                    spec_row = replace(spec_row, note=f"{spec_row.note}; weights on standardised features: "
                                       f"{weights} ({fit_report['scenes']} fit scenes)")
                run_key = spec_row.key  # the rows derived from one run (likelihood rules) share it
                reported = [(spec_row, variant_runs)]
                if spec_row.mode == "likelihood":
                    reported, fitted = _likelihood_rows(spec_row, variant_runs, fit_scenes, make_model, cache_dir,
                                                        config, progress)
                    if spec_row.role == "fine-tuned" and config.pool:
                        pool_members.append((reported[0][0], fitted, run_key))  # the PMI rule's row
                    if spec_row.role == "base LLM":
                        base_fits.append((reported[0][0].label, fitted))
                    if spec_row.role in ("base LLM", ROLE_CURVE, "fine-tuned") and config.pool:
                        curve_fits.append((reported[0][0], fitted))
                planned = spec_row
                for spec_row, variant_runs in reported:
                    record(spec_row, variant_runs, run_key)
                    for variant in VARIANTS:
                        run = variant_runs[variant]
                        if spec_row.mode == "decision" and run.rationales and spec_row.label not in examples:
                            first = next((i for i, r in enumerate(run.rationales) if r), None)
                            if first is not None:
                                examples[spec_row.label] = {
                                    "scene_id": run.scene_ids[first], "thought": run.rationales[first],
                                    "real_letter": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[run.item_pos[first]]}
                spec_row = planned
            except Exception as exc:  # one failing model must not lose the others' rows
                if not isinstance(exc, (UserMirrorerError, OSError, ValueError, RuntimeError)):
                    raise
                skipped[spec_row.label] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                console.print(f"[red]row {spec_row.label!r} failed:[/red] {exc}")
            stage_seconds[f"row: {spec_row.label}"] = time.perf_counter() - t

    if pool_members and LABEL_COLLABORATIVE in {r.label for r in final_rows}:
        t = time.perf_counter()
        by_label = {r.label: r for r in final_rows}
        fit_by_id = {s["scene_id"]: s for s in fit_scenes}
        log_only_terms: dict[str, np.ndarray] = {}  # per log-only row, its log-terms on the fit scenes
        for llm_row, fitted, run_key in pool_members:
            ids = fitted.scene_ids
            lead = _PoolMember(llm_row.label, llm_row.label, _pmi(fitted), True)
            extra = []
            for label, name in _POOL_LOG_ONLY.items():
                if label not in by_label:
                    continue
                if label not in log_only_terms:
                    row = by_label[label]
                    model = built.get(label) or build_choice_model(
                        row, ds, fit_rows=fit_rows, seed=config.seed,
                        fit_scenes=fit_by_construction.get(row.fit_on, fit_scenes),
                        embedder=config.embedder, project_path=config.project_path)
                    log_only_terms[label] = np.stack([member_log_terms(r) for r in
                                                      model.choice_probs([fit_by_id[i] for i in ids])])
                extra.append(_PoolMember(label, name, log_only_terms[label], False))
            if base_fits:  # the untrained model, PMI: the trained one moved away from its prior
                base_label, base_fit = base_fits[0]
                index = {sid: i for i, sid in enumerate(base_fit.scene_ids)}
                if all(i in index for i in ids):
                    extra.insert(0, _PoolMember(base_label, "untrained LLM", _pmi(base_fit, [index[i] for i in ids]), True))
            covered = [m for m in extra if all(set(runs[(llm_row.label, v)].scene_ids)
                                                <= set(runs[(m.label, v)].scene_ids) for v in VARIANTS)]
            collab = [m for m in covered if m.label == LABEL_COLLABORATIVE]
            pools = [[lead, *collab]] + ([[lead, *covered]] if len(covered) > 1 else [])
            # the wide pool once more, gated by the popularity member's spread (one fit for both
            # constructions), and the same gated pool of the log-only rows alone: what pooling
            # gives without any LLM (scored on the trained row's scenes, once)
            # gates: the wide pool without the untrained LLM too, the simulator `usermirrorer
            # fit-pool` saves (one LLM per step)
            gates = []
            wide = pools[-1] if len(pools) > 1 else []
            servable: list[_PoolMember] = []
            if "popularity" in [m.name for m in wide]:
                log_only = [m for m in wide if not m.likelihood]
                servable = [lead, *log_only]
                gates += [(members, [m.name for m in members].index("popularity"))
                          for members in (wide, servable, log_only) if len(members) > 1]
            seen: set[tuple[Any, ...]] = set()
            for members, gate in [(members, None) for members in pools] + gates:
                key = (*[m.label for m in members], gate)
                if key in seen:
                    continue  # no untrained LLM row: the servable pool is the wide one
                seen.add(key)
                for row, variant_runs in _pool_rows(llm_row, members, ids, fitted.item_pos, runs,
                                                    fit_by_construction, gate=gate):
                    if gate is not None and key[:-1] == tuple(m.label for m in servable):
                        row = replace(row, note=row.note + "; the simulator `usermirrorer fit-pool` fits the same "
                                      "way and saves (usermirrorer/fidelity/pool_fit.py)")
                    if (row.label, VARIANTS[0]) not in runs:  # a log-only pool, once per run
                        record(row, variant_runs, run_key)
                        if gate is not None and not row.model:
                            for variant in VARIANTS:
                                runs[(CURVE_LOG_ONLY, variant)] = variant_runs[variant]
        # each learning-curve point (and the base model, 0 examples) in the servable pool
        pool_log_only = servable[1:]
        for point_row, point_fit in curve_fits if pool_log_only else ():
            if list(point_fit.scene_ids) != list(ids):
                continue  # fitted on other scenes: its pool would not be comparable
            members = [_PoolMember(point_row.label, point_row.label, _pmi(point_fit), True), *pool_log_only]
            ((_, derived),) = _pool_rows(point_row, members, ids, point_fit.item_pos, runs, fit_by_construction,
                                         gate=[m.name for m in members].index("popularity"))
            stem = point_row.label.rsplit(" (", 1)[0]
            for variant in VARIANTS:
                runs[(f"{stem} ({CURVE_POOLED})", variant)] = derived[variant]
        stage_seconds["pooled rows (fit + derive)"] = time.perf_counter() - t

    if not config.finetuned:
        skipped[f"{_short(config.base_model)} pipeline fine-tune (SFT+DPO on decision thoughts)"] = (
            "not run: no checkpoint given with --finetuned (the pipeline, `usermirrorer reproduce`, writes "
            "<W>/checkpoints/<profile>/dpo/model; pass it with --trained-on <W>/datasets/<D>_train.jsonl)")
    comparisons = _comparisons(runs, final_rows, VARIANTS)
    tuned = {r.label for r in final_rows if r.role in ("fine-tuned", ROLE_EXTRA, ROLE_HYBRID)}
    result: dict[str, Any] = {
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "setup": {
            "dataset": config.dataset, "k": config.k, "n_scenes": config.n_scenes, "variants": list(VARIANTS),
            "repeats": config.repeats, "limit": config.limit, "llm_limit": config.llm_limit,
            "decision_limit": config.decision_limit,
            "machine": _machine(), "command": config.command or "usermirrorer bench fidelity",
            "config": {k: v for k, v in asdict(config).items() if k not in ("finetuned", "extra_models")},
            "split": {"seed": split.seed, "eval_user_fraction": split.eval_user_fraction,
                      "eval_users": len(split.eval_users), "train_users": len(split.train_users),
                      "reserved": len(split.reserved)},
            "scene_checks": checks, "popularity_match": pop_match, "scenes_fingerprint": fingerprint,
        },
        "row_order": [r.label for r in final_rows] + [r.label for r in rows if r.label in skipped],
        "rows": result_rows,
        "skipped": skipped,
        "comparisons": comparisons,
        "conclusion": _conclusion([c for c in comparisons if c["a"] in tuned]),
        "direct_finetune": manifest and {k: v for k, v in manifest.items() if k != "trained_user_ids"},
        "likelihood_training": [{k: v for k, v in m.items() if k != "trained_user_ids"} for m in trained],
        "learning_curve": _learning_curve(config, trained, runs),
        "example_thoughts": examples,
        "resumed_rows": resumed_rows,
        "stage_seconds": stage_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    # what a run from nothing costs on this machine: building the scenes + every row's model time
    model_seconds = sum({(r["run_key"], r["variant"]): r["score"]["seconds"] for r in result_rows}.values())
    build = scenes_build_seconds(config.project_path)
    result["cold_run_estimate_seconds"] = model_seconds + (build or 0.0)
    result["model_seconds_total"] = model_seconds
    result["scene_build_seconds"] = build
    # the same, had every LLM row answered all n_scenes (decision rows: their subset) per variant
    full_by_run: dict[tuple[str, str], float] = {}
    for row in result_rows:
        s = row["score"]
        target = row["planned"] if row["mode"] == "decision" else config.n_scenes
        full_by_run[(row["run_key"], row["variant"])] = s["seconds"] / s["n"] * max(target, s["n"]) if s["n"] else 0.0
    full = sum(full_by_run.values())
    result["full_run_estimate_seconds"] = full + (build or 0.0)
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(result, results_dir / f"{RESULT_STEM}.json")
    (results_dir / f"{RESULT_STEM}.md").write_text(report.markdown_report(result), encoding="utf-8")
    if result_rows:
        report.plot_accuracy(result, results_dir / f"{RESULT_STEM}_accuracy.png")
        report.plot_reliability(result, results_dir / f"{RESULT_STEM}_reliability.png")
        report.plot_learning_curve(result, results_dir / f"{RESULT_STEM}_learning_curve.png")
    console.print(report.rich_table(result))
    console.print(report.reference_table())
    console.print(f"results: {results_dir / (RESULT_STEM + '.md')} (+ .json, _accuracy.png, _reliability.png); "
                  f"total {result['total_seconds'] / 60:.1f} min")
    return result


def _machine() -> str:
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a core dependency
        threads = None
    cores = os.cpu_count()
    return (f"{cores} CPU cores ({platform.machine()}), torch threads {threads}, Python "
            f"{sys.version.split()[0]}, no GPU")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command line as typed (for the results)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith("usermirrorer"):
        argv[0] = "usermirrorer"
    return " ".join(shlex.quote(a) for a in argv)

