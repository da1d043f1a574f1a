"""Markdown and a plot of the policy-ranking benchmark's result (:mod:`usermirrorer.fidelity.policy_ranking`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_report", "markdown_summary", "plot_scores"]


def _ci(low: float, high: float) -> str:
    return f"[{low:+.2f}, {high:+.2f}]" if np.isfinite(low) and np.isfinite(high) else "[n/a]"


def _corr(value: float, ci: tuple[float, float]) -> str:
    if not np.isfinite(value):
        return "n/a (every recommender scored alike)"
    return f"{value:+.2f} {_ci(*ci)}"


def _order(scores: Mapping[str, float]) -> list[str]:
    return sorted(scores, key=lambda a: -scores[a])


def _agreement_rows(result: Mapping[str, Any], key: str) -> list[str]:
    lines = ["| simulator | episodes (users) | Spearman [95% CI] | Kendall tau-b [95% CI] | pairwise order acc. [95% CI] "
             "| pairs ordered wrongly |", "|---|---:|---|---|---|---|"]
    n_llm = result["setup"]["llm_episodes"]
    for name, sim in result["simulators"].items():
        a = sim[key]
        n, users = (sim["episodes"], sim["users"]) if key == "agreement" else (n_llm, result["setup"]["llm_users"])
        wrong = ""
        if key == "agreement":
            scores = sim["expected_click"]
            tied = len({round(v, 12) for v in scores.values()}) == 1
            wrong = ("all tied" if tied else ", ".join(f"{x} > {y}" for x, y in sim["wrong_pairs"])) or "-"
        lines.append(f"| {sim['label']} | {n} ({users}) | {_corr(a['spearman'], a['spearman_ci'])} | "
                     f"{_corr(a['kendall'], a['kendall_ci'])} | {a['pairwise_accuracy']:.2f} "
                     f"{_ci(*a['pairwise_ci']).replace('+', '')} | {wrong} |")
    return lines


def markdown_summary(result: Mapping[str, Any]) -> str:
    """The agreement table alone (printed at the end of a run)."""
    return "\n".join(_agreement_rows(result, "agreement"))


def markdown_report(result: Mapping[str, Any]) -> str:
    """The whole report: setup, real-log scores, simulator scores, agreement, comparisons, cost."""
    setup, cfg = result["setup"], result["setup"]["config"]
    agents = result["agents"]
    k, n_next = cfg["slate_size"], cfg["next_n"]
    out = [
        "# Policy ranking: do simulators order recommenders the way real users do? (ML-100K)",
        "",
        f"Finished {result['finished_utc']}. Machine: {setup['machine']}. Load average at start "
        f"{setup['load_start']:.2f}, at end {setup['load_end']:.2f}. Total {result['total_seconds'] / 60:.1f} min.",
        "",
        f"Command: `{setup['command']}`",
        "",
        f"**Setup.** {setup['episodes']} episodes = {setup['users']} held-out users of the fidelity split "
        f"(none of them trained on by any model here) x up to {cfg['starts_per_user']} start times each, a start "
        f"being a real interaction time with >= {cfg['min_history']} interactions before and >= {n_next} from it "
        f"on. The LLM simulators play the first {setup['llm_episodes']} episodes ({setup['llm_users']} distinct "
        f"users). {len(agents)} recommenders, all fitted on train users only, each proposing K={k} unseen items.",
        "",
        f"**Real-log score**: the slate at the start time against the user's next {n_next} real interactions "
        f"(NDCG@{k}, binary relevance; hit rate and precision beside it). LinUCB learns from the log as it goes "
        "(its slate items among the real next items are its clicks).",
        "",
        f"**Simulator score**: the same recommenders play `RecEnv` episodes of {cfg['steps']} step(s) from the same "
        "users and start times, all agents of an episode stepped in lockstep through one simulator call (same env "
        f"seed: common random numbers). K={k} items + \"none of these\"; the score is the expected click rate "
        f"1 - p(skip). Every simulator skips by one rule: \"none of these\" scores at the {cfg['skip_quantile']:g} "
        "quantile of the user's scores over the catalog (log-only models: the whole catalog; LLMs in likelihood "
        f"mode: {cfg['n_reference']} fixed catalog items scored in the scene's own context).",
        "",
        "**Agreement**: Spearman and Kendall tau-b between the simulator's and the real-log mean score per "
        "recommender, and the share of recommender pairs the simulator orders as the logs do; 95% CIs from "
        f"{cfg['n_bootstrap']} bootstrap resamples of users (the real-log ranking is resampled with them).",
        "",
        "## Real-log scores",
        "",
        f"| recommender | NDCG@{k} | hit rate | precision | NDCG@{k}, LLM episodes | rank |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    real, real_llm = result["real_log"], result["real_log_llm_episodes"]
    order = _order(real["ndcg"])
    for a in order:
        out.append(f"| {a} | {real['ndcg'][a]:.4f} | {real['hit'][a]:.3f} | {real['precision'][a]:.4f} | "
                   f"{real_llm['ndcg'][a]:.4f} | {order.index(a) + 1} |")
    out += ["", "## Simulator scores (expected click rate per recommender; rank in brackets)", ""]
    sims = result["simulators"]
    out.append("| recommender | real-log rank | " + " | ".join(s["label"] for s in sims.values()) + " |")
    out.append("|---|---:|" + "---:|" * len(sims))
    ranks = {name: _order(s["expected_click"]) for name, s in sims.items()}
    for a in order:
        cells = [f"{s['expected_click'][a]:.3f} ({ranks[name].index(a) + 1})" for name, s in sims.items()]
        out.append(f"| {a} | {order.index(a) + 1} | " + " | ".join(cells) + " |")
    out += ["", "Sampled click rates (one draw per step, the env's own generator) are in the JSON (`click`).", "",
            "## Agreement with the real-log ranking", "", "Each simulator on all the episodes it played:", ""]
    out += _agreement_rows(result, "agreement")
    out += ["", f"Every simulator on the LLM episodes (the first {setup['llm_episodes']}), where they can be "
            "compared with each other:", ""]
    out += _agreement_rows(result, "agreement_llm_episodes")
    if result["comparisons"]:
        out += ["", "Paired difference in Spearman, the trained LLM (and the saved pool) minus each other simulator, "
                "on the LLM episodes (the same bootstrap resamples of users for both):", "",
                "| simulator | vs | difference | 95% CI |", "|---|---|---:|---|"]
        for c in result["comparisons"]:
            if not np.isfinite(c["difference"]):
                out.append(f"| {c['a']} | {sims[c['b']]['label']} | n/a (it scores every recommender alike) | |")
                continue
            out.append(f"| {c['a']} | {sims[c['b']]['label']} | {c['difference']:+.2f} | "
                       f"{_ci(c['ci_low'], c['ci_high'])} |")
    out += ["", "## Cost", "", "Seconds of simulation (model load and temperature fit included) over the episodes "
            "played, summed over the runs that played them (an interrupted run's episodes count where they were "
            "played); every agent of an episode is one step of one lockstep round.", "",
            "| simulator | episodes | seconds | episodes/s | steps/s (all agents) |", "|---|---:|---:|---:|---:|"]
    for s in sims.values():
        rate = s["episodes_per_second"]
        steps = f"{rate * len(agents) * cfg['steps']:.1f}" if rate else "-"
        out.append(f"| {s['label']} | {s['episodes']} | {s['seconds']:.0f} | {f'{rate:.2f}' if rate else '-'} | "
                   f"{steps} |")
    out += ["", f"The episode cache is `{setup['cache']}`: a rerun reads every finished episode back."]
    if result["skipped"]:
        out += ["", "## Left out", ""] + [f"- {name}: {why}" for name, why in result["skipped"].items()]
    out.append("")
    return "\n".join(out)


def plot_scores(result: Mapping[str, Any], path: str | os.PathLike) -> Path | None:
    """Real-log NDCG vs simulator expected click per recommender, one panel per simulator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = result["simulators"]
    if not sims:
        return None
    k = result["setup"]["config"]["slate_size"]
    cols = min(3, len(sims))
    rows = (len(sims) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows), squeeze=False)
    for ax, (name, sim) in zip(axes.ravel(), sims.items()):
        real = sim["real_ndcg_same_episodes"]
        agents = list(real)
        x = np.array([real[a] for a in agents])
        y = np.array([sim["expected_click"][a] for a in agents])
        ax.scatter(x, y, color="tab:blue")
        for a, xi, yi in zip(agents, x, y):
            ax.annotate(a, (xi, yi), fontsize=8, xytext=(3, 3), textcoords="offset points")
        agreement = sim["agreement"]
        rho = agreement["spearman"]
        rho_text = f"{rho:+.2f}" if np.isfinite(rho) else "n/a (all alike)"
        ax.set_title(f"{sim['label'][:48]}\nSpearman {rho_text}, {sim['episodes']} episodes", fontsize=9)
        ax.set_xlabel(f"real-log NDCG@{k}")
        ax.set_ylabel("simulated expected click rate")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(sims):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
