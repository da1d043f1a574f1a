"""Write the fidelity results: markdown table, JSON, reliability diagram and bar chart.

Everything here formats numbers that :mod:`usermirrorer.fidelity.benchmark` measured; nothing
is computed that a reader could not recompute from the JSON.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.fidelity.reference import PAPER_REFERENCE, POPULARITY_WARNING, REFERENCE_CAVEAT
from usermirrorer.sim.prompts import LETTERS

__all__ = [
    "markdown_report",
    "write_json",
    "plot_accuracy",
    "plot_reliability",
    "rich_table",
    "reference_table",
    "VARIANT_TITLES",
]

VARIANT_TITLES = {"standard": "standard construction (DESIGN §3)",
                  "popularity-matched": "popularity-matched negatives"}
# A reliability point from fewer scenes than this is noise; such bins still count in the ECE.
MIN_BIN_SCENES = 5


def _pct(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100 * x:.{digits}f}"


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "—"
    return f"{x:.{digits}f}"


def _rate(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x) or x >= 1000:
        return f"{x:,.0f}" if not math.isinf(x) else "—"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _acc_cell(score: Mapping[str, Any]) -> str:
    # the normal-approximation interval can cross 0 or 1 on small samples; show it clipped
    low = None if score["ci_low"] is None else max(0.0, score["ci_low"])
    high = None if score["ci_high"] is None else min(1.0, score["ci_high"])
    return f"{_pct(score['accuracy'])} [{_pct(low)}, {_pct(high)}]"


# rows shown in their own section (the learning curve), not in the main tables
_OWN_SECTION_ROLES = ("learning curve",)


def _rows_for(result: Mapping[str, Any], variant: str) -> list[Mapping[str, Any]]:
    return [r for r in result["rows"] if r["variant"] == variant and r.get("role") not in _OWN_SECTION_ROLES]


def markdown_report(result: Mapping[str, Any]) -> str:
    """The committed markdown table of one benchmark run (see ``benchmark.run_fidelity``)."""
    setup = result["setup"]
    variants = setup["variants"]
    k = setup["k"]
    lines: list[str] = []
    lines.append(f"# Fidelity benchmark — {setup['dataset']}, held-out users, K={k}")
    lines.append("")
    wall = f"this invocation {result['total_seconds'] / 60:.1f} min wall"
    if result.get("resumed_rows"):
        # a resumed run's wall time says little; the rows' model time is what was measured
        wall += (f", {len(result['resumed_rows'])} row-variants read back from the resume cache; "
                 f"model time of all rows {result['model_seconds_total'] / 60:.1f} min")
    lines.append(
        f"Measured {result['finished_utc']} on {setup['machine']} by `{setup['command']}` "
        f"({wall}; model time per row below)."
    )
    lines.append("")
    split = setup["split"]
    lines.append(
        f"**Scenes.** {setup['n_scenes']} per variant, built from {split['eval_users']} eval users "
        f"({split['eval_user_fraction']:.0%} of {split['eval_users'] + split['train_users']}, seed "
        f"{split['seed']}); no fine-tune in this table was trained on the users it is scored on"
        + ". Both variants use the same target interactions, so every row can be compared across "
        "variants scene for scene. The real item's position is drawn uniformly from all K positions."
    )
    lines.append("")
    lines.append(
        "**Metrics.** Accuracy: mean over scenes of the share of R="
        f"{setup['repeats']} behaviours sampled from the model's distribution that hit the real item, "
        "with a 95% CI over scenes (`usermirrorer.sim.metrics`; normal approximation, shown clipped to "
        "[0, 100]). E[acc] = mean probability of the real item (the sampled accuracy's expectation); "
        "top-1 = the most likely option is the real item (ties split). Log-loss in nats (random = ln K = "
        f"{math.log(k):.3f}; a model that puts probability 0 on the real item pays ln(1e12) = 27.6 "
        "there, which is why the one-hot 'most popular' chooser's log-loss is huge). ECE: top probability in 10 equal bins. Letter share: mean probability "
        "per position A..; TV = total-variation distance of that share from uniform (0 = no position "
        "bias). Throughput: scenes per second of model time on this machine."
    )
    lines.append("")

    # scene check -----------------------------------------------------------------------
    lines.append("## The scenes")
    lines.append("")
    lines.append("| variant | scenes | users | real item at A..| chi² p (uniform) | mean popularity rank of real item (0 = most popular; chance "
                 f"{(k - 1) / 2:.1f}) | 'most popular' hit rate | median log((1+c_neg)/(1+c_real)) | mean abs log gap |")
    lines.append("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for variant in variants:
        sc = setup["scene_checks"][variant]
        pm = setup["popularity_match"][variant]
        lines.append(
            f"| {variant} | {sc['scenes']} | {sc['users']} | {' / '.join(str(c) for c in sc['position_counts'])} | "
            f"{sc['position_chi2_p']:.2f} | {pm['mean_real_rank']:.2f} | {_pct(pm['most_popular_hit_rate'])}% | "
            f"{pm['median_log_ratio']:+.3f} | {pm['mean_abs_log_gap']:.3f} |"
        )
    lines.append("")
    lines.append("Popularity counts are causal: interactions strictly before the scene time.")
    lines.append("")

    # side by side ----------------------------------------------------------------------
    lines.append("## Accuracy side by side (%, 95% CI)")
    lines.append("")
    header = "| model | mode | scenes | " + " | ".join(variants) + " | note |"
    lines.append(header)
    lines.append("|---|---|---:|" + "---:|" * len(variants) + "---|")
    for label in result["row_order"]:
        per = {r["variant"]: r for r in result["rows"] if r["label"] == label}
        if not per or next(iter(per.values())).get("role") in _OWN_SECTION_ROLES:
            continue
        first = next(iter(per.values()))
        cells = [_acc_cell(per[v]["score"]) if v in per else "—" for v in variants]
        lines.append(f"| {label} | {first['mode']} | {first['score']['n']} | " + " | ".join(cells)
                     + f" | {first.get('note', '')} |")
    for label, why in result.get("skipped", {}).items():
        lines.append(f"| {label} | — | — | " + " | ".join("not run" for _ in variants) + f" | {why} |")
    lines.append("")

    # per variant -----------------------------------------------------------------------
    for variant in variants:
        lines.append(f"## {VARIANT_TITLES.get(variant, variant)}")
        lines.append("")
        lines.append("| model | mode | scenes | accuracy % [95% CI] | E[acc] % | top-1 % | log-loss | ECE | "
                     f"letter share % ({'/'.join(LETTERS[:k])}) | TV | scenes/s | model s |")
        lines.append("|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|")
        for row in _rows_for(result, variant):
            s = row["score"]
            share = "/".join(f"{100 * x:.0f}" for x in s["letter_share"])
            lines.append(
                f"| {row['label']} | {row['mode']} | {s['n']} | {_acc_cell(s)} | {_pct(s['expected_accuracy'])} | "
                f"{_pct(s['top1_accuracy'])} | {_num(s['log_loss'])} | {_num(s['ece'])} | {share} | "
                f"{_num(s['position_bias_tv'], 2)} | {_rate(s['scenes_per_second'])} | {_num(s['seconds'], 1)} |"
            )
        lines.append("")

    # comparisons -----------------------------------------------------------------------
    if result.get("comparisons"):
        lines.append("## Paired comparisons: fine-tunes and --model rows vs their base, LLM rows vs the log-only bars, "
                     "--model rows vs each other")
        lines.append("")
        lines.append("Paired difference of expected accuracy (mean p(real item), percentage points) on the "
                     "same scenes, 95% CI over scenes. Rows with a fitted temperature are compared as fitted "
                     "(calibrated); the scoring variants (PMI at T=1, sum, per-token mean) are shown above only.")
        lines.append("")
        lines.append("| A | B | variant | scenes | A − B (pp) [95% CI] | verdict for A |")
        lines.append("|---|---|---|---:|---|---|")
        for c in result["comparisons"]:
            lines.append(f"| {c['a']} | {c['b']} | {c['variant']} | {c['n']} | {100 * c['difference']:+.1f} "
                         f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] | {c['verdict']} |")
        lines.append("")
        if result.get("conclusion"):
            lines.append(result["conclusion"])
            lines.append("")

    # fine-tune recipe --------------------------------------------------------------------
    ft = result.get("direct_finetune")
    if ft:
        lines.append("## The direct-mode fine-tune (ML-100K, CPU)")
        lines.append("")
        lines.append(
            f"`{ft['command']}`: {ft['train_scenes']} train scenes ({ft['negatives']} negatives) from "
            f"{ft['train_users']} train users only (0 eval users); chosen = `Behavior: [real letter]`, "
            f"rejected = `Behavior: [a random other letter]`, no decision texts. "
            + "; ".join(f"{st['stage'].upper()}: {st['steps']} steps × batch {st['batch_size']} = "
                        f"{st['examples']} examples, {st['seconds'] / 60:.1f} min" for st in ft["stages"])
            + f". Base model {ft['base_model']}."
        )
        lines.append("")

    lines.extend(_training_section(result))

    # reference -------------------------------------------------------------------------
    lines.append("## The paper's figures (NOT measured here)")
    lines.append("")
    lines.append("| model (paper, arXiv 2508.18142) | accuracy %, 8-domain mean, 5 options, standard construction |")
    lines.append("|---|---:|")
    for fig in PAPER_REFERENCE:
        lines.append(f"| {fig.model} | {fig.accuracy_pct:.1f} |")
    lines.append("")
    lines.append(REFERENCE_CAVEAT)
    lines.append("")
    lines.append(POPULARITY_WARNING + _most_popular_here(result))
    lines.append("")

    # runtime ---------------------------------------------------------------------------
    lines.append("## Runtime")
    lines.append("")
    lines.append("| stage | seconds |")
    lines.append("|---|---:|")
    for stage, secs in result["stage_seconds"].items():
        lines.append(f"| {stage} | {secs:.0f} |")
    lines.append(f"| **total (wall, this invocation)** | **{result['total_seconds']:.0f}** |")
    lines.append("")
    if result.get("cold_run_estimate_seconds") is not None:
        build = result.get("scene_build_seconds")
        lines.append(
            f"Model time recorded over all rows and both variants: {result['model_seconds_total'] / 60:.1f} min"
            + (f"; building the eval scenes took {build / 60:.1f} min" if build else "")
            + f". A run from nothing on this machine therefore takes about "
            f"{result['cold_run_estimate_seconds'] / 60:.0f} min (plus model loading), at the CPU contention "
            "these rows were measured under"
            + (f"; answering every planned scene of the rows cut by a time budget or limit would take about "
               f"{result['full_run_estimate_seconds'] / 60:.0f} min" if result.get("full_run_estimate_seconds")
               and result["full_run_estimate_seconds"] > 1.05 * result["cold_run_estimate_seconds"] else "")
            + "."
        )
        lines.append("")
    if result.get("resumed_rows"):
        lines.append("Rows read back from the resume cache of an earlier run (model seconds are the ones recorded "
                     "when they were computed): " + ", ".join(result["resumed_rows"]) + ".")
        lines.append("")
    examples = result.get("example_thoughts") or {}
    if examples:
        lines.append("## An example decision-mode thought")
        lines.append("")
        for label, ex in examples.items():
            text = ex["thought"].strip().replace("\n", " ")
            lines.append(f"*{label}*, scene `{ex['scene_id']}` (real item: {ex['real_letter']}): “{text[:600]}”")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _training_section(result: Mapping[str, Any]) -> list[str]:
    """The likelihood-mode trainings: how they ran, and the learning curve."""
    lines: list[str] = []
    for ft in result.get("likelihood_training") or []:
        c = ft["config"]
        mode = "Direct (letter)" if ft["loss"] == "letters" else "Likelihood"
        lines.append(f"## {mode}-mode training ({ft['loss']}, CPU)")
        lines.append("")
        lines.append(
            f"`{ft['command']}`: {ft['train_scenes']} train scenes ({c['negatives']} negatives, K={c['k']}) from "
            f"{ft['train_users']} train users only (0 eval users); base {ft['base_model']}, top "
            f"{c['trainable_layers']} layers + final norm trained, AdamW lr {c['lr']:g} (warm-up {c['warmup']} steps, "
            f"linear decay), batch {c['batch_size']}, bf16 autocast {'on' if ft['autocast_bf16'] else 'off'}, "
            f"{ft['threads']} threads. {ft['tokens_per_example']:.0f} tokens per example. Train time "
            f"{ft['train_seconds'] / 60:.1f} min: **{ft['examples_per_second']} examples/s**, about "
            f"{ft['flops_per_example'] / 1e9:.0f} GFLOP per example (frozen forward + trained layers' forward and "
            f"backward + the head at scored positions), so ~{ft['achieved_gflops']} GFLOP/s achieved; load average "
            f"at the end {ft.get('load')}."
        )
        lines.append("")
        if ft.get("history"):
            lines.append("Train loss (mean over each span): " + ", ".join(
                f"{h['examples']}: {h['loss']:.3f}" for h in ft["history"]) + ".")
            lines.append("")
    curve = result.get("learning_curve") or []
    if curve:
        variants = result["setup"]["variants"]
        lines.append("## Learning curve (held-out users)")
        lines.append("")
        n = {p["score"]["n"] for p in curve}
        lines.append(f"Each point scored on the same first {'/'.join(str(x) for x in sorted(n))} eval scenes per "
                     "variant; 0 examples = the base model. E[acc] % (log-loss) per scoring rule; the "
                     "temperature (and the prior weight) of each point fitted on train-user scenes; "
                     "'letters' = the letter-format training scored in direct mode (no temperature); "
                     "'pooled' = the point's PMI scores in the gated pool with the collaborative, MNL, content "
                     "and popularity models, weights refitted per point on the same train-user scenes (the "
                     "simulator `usermirrorer fit-pool` saves from a checkpoint); 'log-only pool' = that pool "
                     "without an LLM, on the same scenes.")
        lines.append("")
        rules = list(dict.fromkeys(p["rule"] for p in curve))
        lines.append("| loss | examples | " + " | ".join(f"{r}: {v}" for r in rules for v in variants) + " |")
        lines.append("|---|---:|" + "---:|" * (len(rules) * len(variants)))
        keys = list(dict.fromkeys((p["loss"], p["examples"]) for p in curve))
        for loss, examples in keys:
            cells = []
            for rule in rules:
                for v in variants:
                    hit = [p for p in curve if (p["loss"], p["examples"], p["rule"], p["variant"]) == (loss, examples, rule, v)]
                    cells.append(f"{_pct(hit[0]['score']['expected_accuracy'])} ({_num(hit[0]['score']['log_loss'])})"
                                 if hit else "—")
            lines.append(f"| {loss} | {examples} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot_learning_curve(result: Mapping[str, Any], path: str | os.PathLike) -> Path | None:
    """E[acc] against train examples, one line per loss, rule and variant (None: no curve)."""
    curve = result.get("learning_curve") or []
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["setup"]["variants"]), figsize=(11, 4), sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], result["setup"]["variants"]):
        for loss, rule in dict.fromkeys((p["loss"], p["rule"]) for p in curve):
            if loss == "log-only pool":  # no training: a level, not a curve
                (y,) = [100 * p["score"]["expected_accuracy"] for p in curve
                        if (p["loss"], p["variant"]) == (loss, variant)] or [None]
                if y is not None:
                    ax.axhline(y, color="black", linestyle="--", linewidth=1, label=loss)
                continue
            pts = sorted((p["examples"], 100 * p["score"]["expected_accuracy"]) for p in curve
                         if (p["loss"], p["rule"], p["variant"]) == (loss, rule, variant))
            ax.plot([max(x, 1) for x, _ in pts], [y for _, y in pts], marker="o", label=f"{loss}, {rule}")
        ax.axhline(100 / result["setup"]["k"], color="grey", linestyle=":", label="random")
        ax.set_xscale("log")
        ax.set_title(variant)
        ax.set_xlabel("train examples (0 plotted at 1)")
    axes[0][0].set_ylabel("held-out E[acc] %")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _most_popular_here(result: Mapping[str, Any]) -> str:
    """What the "most popular" chooser scored here, per variant (from the rows)."""
    parts = []
    for variant in result["setup"]["variants"]:
        pm = result["setup"]["popularity_match"].get(variant)
        if pm:
            parts.append(f"{_pct(pm['most_popular_hit_rate'])}% on the {variant} scenes")
    if not parts:
        return ""
    return " Measured on this benchmark's scenes (causal counts, ties split): " + ", ".join(parts) + "."


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the result (NaN/inf as null) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(result), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot_accuracy(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Horizontal bar chart: accuracy with 95% CI per model (one row each, so 40+ rows with long
    pool labels stay legible), one bar per variant, chance line at 1/K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["setup"]["variants"]
    labels = [lb for lb in result["row_order"] if any(r["label"] == lb for r in result["rows"])]
    fig, ax = plt.subplots(figsize=(12, max(4.0, 0.32 * len(labels) * len(variants) + 1.5)))
    width = 0.8 / len(variants)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    for j, variant in enumerate(variants):
        xs, ys, lo, hi = [], [], [], []
        for i, label in enumerate(labels):
            row = next((r for r in result["rows"] if r["label"] == label and r["variant"] == variant), None)
            if row is None:
                continue
            s = row["score"]
            xs.append(i + (j - (len(variants) - 1) / 2) * width)
            ys.append(100 * s["accuracy"])
            # the normal-approximation interval, clipped to [0, 1] like the table
            lo.append(100 * (s["accuracy"] - max(0.0, s["ci_low"])) if s["ci_low"] is not None else 0)
            hi.append(100 * (min(1.0, s["ci_high"]) - s["accuracy"]) if s["ci_high"] is not None else 0)
        ax.barh(xs, ys, width, xerr=[lo, hi], capsize=2, label=variant, color=colors[j % len(colors)])
    k = result["setup"]["k"]
    ax.axvline(100 / k, color="gray", linestyle="--", linewidth=1, label=f"random 1/K = {100 / k:.0f}%")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([textwrap.fill(lb, 70) for lb in labels], fontsize=7)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first row on top, like the table
    ax.set_xlabel("accuracy % (95% CI)")
    ax.set_title(f"Choice accuracy on held-out {result['setup']['dataset']} users, K={k}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Reliability diagram: per variant, accuracy vs mean top probability in 10 bins per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["setup"]["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.8), squeeze=False)
    markers = "osD^v<>ph*"
    for ax, variant in zip(axes[0], variants):
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
        for i, row in enumerate(_rows_for(result, variant)):
            bins = row["reliability"]
            conf = np.array([np.nan if v is None else v for v in bins["confidence"]], dtype=float)
            acc = np.array([np.nan if v is None else v for v in bins["accuracy"]], dtype=float)
            count = np.asarray(bins["count"], dtype=float)
            used = count >= MIN_BIN_SCENES
            if not used.any():
                continue
            ax.plot(conf[used], acc[used], marker=markers[i % len(markers)], markersize=4, linewidth=1,
                    label=f"{row['label']} (n={row['score']['n']}, ECE {row['score']['ece']:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean top probability in bin")
        ax.set_ylabel("share of scenes whose top option is the real item")
        ax.set_title(f"{VARIANT_TITLES.get(variant, variant)}\n(bins with >= {MIN_BIN_SCENES} scenes)", fontsize=10)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rich_table(result: Mapping[str, Any]):
    """A rich table of accuracy side by side (printed at the end of a run)."""
    from rich.table import Table

    variants = result["setup"]["variants"]
    table = Table(title=f"Fidelity on held-out {result['setup']['dataset']} users, K={result['setup']['k']}")
    table.add_column("model")
    table.add_column("mode")
    table.add_column("scenes", justify="right")
    for variant in variants:
        table.add_column(f"{variant} acc % [95% CI]", justify="right")
        table.add_column("log-loss", justify="right")
        table.add_column("ECE", justify="right")
    table.add_column("scenes/s", justify="right")
    for label in result["row_order"]:
        per = {r["variant"]: r for r in result["rows"] if r["label"] == label}
        if not per or next(iter(per.values())).get("role") in _OWN_SECTION_ROLES:
            continue
        first = next(iter(per.values()))
        cells = []
        for v in variants:
            if v in per:
                s = per[v]["score"]
                cells += [_acc_cell(s), _num(s["log_loss"]), _num(s["ece"])]
            else:
                cells += ["—", "—", "—"]
        table.add_row(label, first["mode"], str(first["score"]["n"]), *cells,
                      _rate(first["score"]["scenes_per_second"]))
    return table


def reference_table():
    """The paper's figures as a rich table, labelled as measured elsewhere."""
    from rich.table import Table

    table = Table(title="Paper figures (arXiv 2508.18142) — other data, standard construction, NOT measured here")
    table.add_column("model")
    table.add_column("accuracy % (8-domain mean, K=5)", justify="right")
    for fig in PAPER_REFERENCE:
        table.add_row(fig.model, f"{fig.accuracy_pct:.1f}")
    return table

