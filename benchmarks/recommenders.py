"""Recommenders against simulated users, and what KV-prefix reuse saves in an env session.

Two sections, both on MovieLens-100K (converted from the recbole copy if its raws are missing):

``agents``: random, popularity, collaborative and a learning agent (LinUCB) play the same
simulated users (same seeds: same user, start time and sampling stream per episode) under three
simulators — the popularity and collaborative choice models (instant, many episodes) and
SmolLM2-135M (few episodes; with ``debias_positions``, since the 135M model's preference for
option A otherwise swamps what the options are). Env: K=5 items + "none of these", patience 3, click reward.
Writes a table (reward, click rate, reciprocal rank, catalog coverage, intra-slate diversity)
and reward curves (episode return vs episode, moving average).

``cache``: one SmolLM2 env session scored by two simulators stepping in alternation on the
same slates: the default backend (prefix sharing + LRU of KV caches) and one with both turned
off. Reports CPU seconds and wall seconds per step, prompt vs computed tokens, and the largest
probability difference between the two (they must agree).

Run: ``python benchmarks/recommenders.py`` (defaults sized for a 2-core CPU, ~10 min);
``--quick`` for a smoke run. Results: ``benchmarks/results/recommenders.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ENV_KWARGS = dict(exposure_size=5, allow_skip=True, patience=3, reward="click", start="random")
AGENTS = ("random", "popularity", "collaborative", "linucb")


def ensure_ml100k(project: Path) -> None:
    from usermirrorer.preprocessing import ensure_raws

    ensure_raws(project, "ml-100k")


def run_agents(
    project: Path,
    simulator: str,
    episodes: int,
    steps: int,
    seed: int,
    dtype: str,
    debias: bool = False,
) -> dict:
    from usermirrorer.data_pipeline.embeddings import collaborative_embedding
    from usermirrorer.envs import RecEnv
    from usermirrorer.envs.agents import make_recommender
    from usermirrorer.envs.arena import run_arena, summarize
    from usermirrorer.envs.resources import load_choice_model, load_dataset

    ds = load_dataset("ml-100k", project)
    embedding = collaborative_embedding(ds, project)
    backend_kwargs = (
        {"dtype": dtype} if simulator not in ("popularity", "collaborative", "random") else None
    )
    model = load_choice_model(simulator, ds, backend_kwargs=backend_kwargs, project_path=project)
    agents = {
        name: make_recommender(
            name, ds, ENV_KWARGS["exposure_size"], seed=seed, embedding=embedding
        )
        for name in AGENTS
    }
    start = time.perf_counter()
    logs = run_arena(
        agents,
        lambda: RecEnv(ds, model, max_steps=steps, debias_positions=debias, **ENV_KWARGS),
        episodes,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    return {
        "simulator": simulator + (" (debias_positions)" if debias else ""),
        "episodes": episodes,
        "max_steps": steps,
        "seconds": seconds,
        "table": {
            name: summarize(agent_logs, ds.n_items, embedding) for name, agent_logs in logs.items()
        },
        "curves": {
            name: [log.episode_return for log in agent_logs] for name, agent_logs in logs.items()
        },
        "exp_click_curves": {
            name: [float(np.mean(log.expected_clicks)) for log in agent_logs]
            for name, agent_logs in logs.items()
        },
    }


def run_cache(project: Path, steps: int, seed: int, dtype: str, threads: int) -> dict:
    import torch

    from usermirrorer.envs import RecEnv
    from usermirrorer.envs.resources import load_dataset
    from usermirrorer.sim import UserSimulator

    # CPU seconds are the cost measure: on a shared machine, wall time follows the load. With
    # more than one thread, CPU time also counts OpenMP threads spinning while they wait for a
    # core, so the default measures with one thread.
    torch.set_num_threads(threads)
    ds = load_dataset("ml-100k", project)
    sims = {
        "prefix reuse (default)": UserSimulator("smollm2-135m", dtype=dtype),
        "no reuse": UserSimulator(
            "smollm2-135m", dtype=dtype, share_prefix=False, prefix_cache_size=0
        ),
    }
    envs = {name: RecEnv(ds, sim, max_steps=steps, **ENV_KWARGS) for name, sim in sims.items()}
    for env in envs.values():
        env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    cpu = {name: [] for name in sims}
    wall = {name: [] for name in sims}
    probs = {name: [] for name in sims}
    for _ in range(steps):
        slate = rng.choice(ds.n_items, ENV_KWARGS["exposure_size"], replace=False)
        # Alternate the two configurations step by step so load changes on a shared machine
        # hit both alike.
        for name, env in envs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            _, _, _, _, info = env.step(slate)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
            probs[name].append(info["probs"])
    names = list(sims)
    out = {
        "steps": steps,
        "threads": threads,
        "dtype": str(next(iter(sims.values())).backend.dtype).replace("torch.", ""),
        "configs": {},
    }
    for name in names:
        stats = sims[name].backend.stats
        out["configs"][name] = {
            "cpu_s_per_step_after_first": statistics.mean(cpu[name][1:]),
            "wall_s_per_step_after_first": statistics.mean(wall[name][1:]),
            "cpu_s_first_step": cpu[name][0],
            "prompt_tokens": stats.prompt_tokens,
            "computed_tokens": stats.computed_tokens,
        }
    a, b = (out["configs"][n] for n in names)
    out["cpu_speedup_after_first"] = (
        b["cpu_s_per_step_after_first"] / a["cpu_s_per_step_after_first"]
    )
    out["wall_speedup_after_first"] = (
        b["wall_s_per_step_after_first"] / a["wall_s_per_step_after_first"]
    )
    out["token_ratio"] = b["computed_tokens"] / a["computed_tokens"]
    out["max_prob_diff"] = float(
        max(np.abs(x - y).max() for x, y in zip(probs[names[0]], probs[names[1]]))
    )
    return out


def plot_curves(results: list[dict], path: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 7), squeeze=False)
    rows = (("curves", "episode return (clicks)"), ("exp_click_curves", "mean P(click) per step"))
    for col, res in enumerate(results):
        for row, (key, label) in enumerate(rows):
            ax = axes[row][col]
            curves = res.get(key, {})
            for name, curve in curves.items():
                y = np.asarray(curve, dtype=float)
                w = max(1, min(window, len(y) // 3 or 1))
                smooth = np.convolve(y, np.ones(w) / w, mode="valid")
                marker = "o" if len(y) < 10 else None
                ax.plot(np.arange(w, len(y) + 1), smooth, label=name, marker=marker)
            n = len(next(iter(curves.values()), []))
            ax.set_title(f"simulator: {res['simulator']}")
            ax.set_xlabel("episode")
            ax.set_ylabel(f"{label}, moving avg" if n >= 10 else label)
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(report: dict, path: Path) -> None:
    from usermirrorer.envs.arena import METRICS

    lines = [
        "# Recommenders against simulated users (ML-100K)",
        "",
        f"Machine: {report['machine']}. Command: `{report['command']}`.",
        "",
        f"Env: K={ENV_KWARGS['exposure_size']} + outside option, patience {ENV_KWARGS['patience']}, "
        "click reward, random real start time. Every agent plays the same users with the same "
        "seeds (paired). Metrics: see `usermirrorer.envs.arena.summarize`.",
        "",
    ]
    for res in report["agents"]:
        lines += [
            f"## Simulator: {res['simulator']} ({res['episodes']} episodes x <= {res['max_steps']} steps, "
            f"{res['seconds']:.0f} s)",
            "",
            "| agent | " + " | ".join(METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for name, row in res["table"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
        lines.append("")
    lines.append("Reward curves: `recommenders.png`.")
    if report.get("cache"):
        c = report["cache"]
        lines += [
            "",
            f"## KV-prefix reuse in an env session (SmolLM2-135M, {c['dtype']}, {c['steps']} steps, "
            f"{c.get('threads', 2)} torch thread(s))",
            "",
            "| backend | CPU s/step (steps 2..n) | wall s/step (steps 2..n) | CPU s step 1 | prompt tokens | computed tokens |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in c["configs"].items():
            lines.append(
                f"| {name} | {row['cpu_s_per_step_after_first']:.3f} | {row['wall_s_per_step_after_first']:.3f} | "
                f"{row['cpu_s_first_step']:.3f} | {row['prompt_tokens']} | {row['computed_tokens']} |"
            )
        lines += [
            "",
            f"Saving from prefix reuse, steps 2..n: {c['cpu_speedup_after_first']:.2f}x CPU time, "
            f"{c['wall_speedup_after_first']:.2f}x wall time, {c['token_ratio']:.2f}x fewer tokens computed "
            f"over the session; largest probability difference between the two: {c['max_prob_diff']:.1e}.",
            "The two configurations stepped in alternation on the same slates (same machine load). "
            "CPU seconds are the cost measure; wall seconds follow the load of the shared machine.",
        ]
    path.write_text("\n".join(lines) + "\n")


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from usermirrorer.envs.arena import METRICS

    console = Console()
    for res in report["agents"]:
        table = Table(title=f"simulator: {res['simulator']}")
        table.add_column("agent")
        for m in METRICS:
            table.add_column(m, justify="right")
        for name, row in res["table"].items():
            table.add_row(name, *(f"{row[m]:.3f}" for m in METRICS))
        console.print(table)
    if report.get("cache"):
        c = report["cache"]
        console.print(
            f"prefix reuse: {c['cpu_speedup_after_first']:.2f}x CPU, {c['wall_speedup_after_first']:.2f}x wall, "
            f"{c['token_ratio']:.2f}x fewer tokens; max |dp| {c['max_prob_diff']:.1e}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=Path(os.environ.get("USERMIRRORER_CACHE", Path.home() / ".cache/usermirrorer"))
        / "bench-project",
    )
    parser.add_argument("--sections", default="agents,cache", help="comma list of: agents, cache")
    parser.add_argument(
        "--episodes",
        type=int,
        default=150,
        help="episodes per agent for the choice-model simulators",
    )
    parser.add_argument("--steps", type=int, default=10, help="max steps per episode")
    parser.add_argument("--llm-episodes", type=int, default=3)
    parser.add_argument("--llm-steps", type=int, default=3)
    parser.add_argument("--cache-steps", type=int, default=5)
    parser.add_argument("--cache-threads", type=int, default=1, help="torch threads, cache section")
    parser.add_argument("--llm", default="smollm2-135m", help="LLM simulator ('' to skip)")
    parser.add_argument(
        "--no-debias",
        action="store_true",
        help="LLM simulator without debias_positions (slate also scored reversed)",
    )
    parser.add_argument(
        "--dtype", default="auto", help="transformers dtype (auto: bf16 where supported)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.llm_episodes, args.llm_steps, args.cache_steps = 10, 1, 2, 3

    import torch

    torch.set_num_threads(2)
    args.project.mkdir(parents=True, exist_ok=True)
    ensure_ml100k(args.project)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "command": "python benchmarks/recommenders.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "env": ENV_KWARGS,
        "agents": [],
    }
    if "agents" in sections:
        for simulator in ("popularity", "collaborative"):
            report["agents"].append(
                run_agents(
                    args.project, simulator, args.episodes, args.steps, args.seed, args.dtype
                )
            )
            print(f"{simulator}: {report['agents'][-1]['seconds']:.1f} s", flush=True)
        if args.llm:
            report["agents"].append(
                run_agents(
                    args.project,
                    args.llm,
                    args.llm_episodes,
                    args.llm_steps,
                    args.seed,
                    args.dtype,
                    debias=not args.no_debias,
                )
            )
            print(f"{args.llm}: {report['agents'][-1]['seconds']:.1f} s", flush=True)
    if "cache" in sections and args.llm:
        report["cache"] = run_cache(
            args.project, args.cache_steps, args.seed, args.dtype, args.cache_threads
        )
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "recommenders.json"
    if previous.exists() and sections != {"agents", "cache"}:
        # a partial rerun keeps the other section's last results
        old = json.loads(previous.read_text())
        if "agents" not in sections:
            report["agents"] = old.get("agents", [])
        if "cache" not in sections and old.get("cache"):
            report["cache"] = old["cache"]
    (args.out / "recommenders.json").write_text(json.dumps(report, indent=2))
    if report["agents"]:
        plot_curves(report["agents"], args.out / "recommenders.png", window=10)
    write_markdown(report, args.out / "recommenders.md")
    print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
