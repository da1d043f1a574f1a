"""``usermirrorer demo``: recommenders face LLM-simulated MovieLens users, live in the terminal.

On a fresh machine it converts MovieLens-100K (shipped by the ``recbole`` package) into raws,
prepares SmolLM2-135M (a one-time GGUF -> Hugging Face conversion, cached), then lets a few
reference recommenders show slates to the same simulated users and prints what each user saw,
the simulator's choice probabilities and the pick, and a summary table at the end.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

DEFAULT_AGENTS = "random,popularity,collaborative"


def _default_project() -> Path:
    root = os.environ.get("USERMIRRORER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "usermirrorer") / "demo-project"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="watch recommenders face LLM-simulated users (MovieLens-100K + SmolLM2-135M, CPU)",
        description=(
            "Run a few recommenders (random, popularity, collaborative, LinUCB) against users of "
            "MovieLens-100K simulated by an LLM (default SmolLM2-135M on CPU) in the gymnasium "
            "env usermirrorer/RecEnv-v0. Shows each step live (user, history, slate, choice "
            "probabilities, pick) and a summary table. Converts ML-100K and prepares the model on "
            "first use (once; both are cached)."
        ),
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=None,
        help="project folder holding raws/ (default: the usermirrorer cache dir /demo-project)",
    )
    parser.add_argument(
        "--dataset", default="ml-100k", help="dataset under PROJECT/raws (default ml-100k)"
    )
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="simulator: an LLM name/folder or a choice model (popularity, collaborative, random)",
    )
    parser.add_argument(
        "--backend", default="transformers", help="LLM backend (transformers, vllm, openai)"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        help="transformers dtype (default auto: bfloat16 where the CPU/GPU supports it, else float32)",
    )
    parser.add_argument(
        "--mode",
        choices=("direct", "decision"),
        default="direct",
        help="direct: read the choice right away; decision: the LLM first writes a rationale (slower)",
    )
    parser.add_argument(
        "--agents",
        default=DEFAULT_AGENTS,
        help=f"comma list of random, popularity, collaborative, linucb (default {DEFAULT_AGENTS})",
    )
    parser.add_argument(
        "--episodes", type=int, default=2, help="simulated users per recommender (default 2)"
    )
    parser.add_argument("--steps", type=int, default=3, help="slates per user (default 3)")
    parser.add_argument(
        "-k", "--exposure-size", type=int, default=5, help="items per slate (default 5)"
    )
    parser.add_argument("--no-skip", action="store_true", help="no 'none of these' option")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--no-live", action="store_true", help="print each step instead of a live view"
    )
    parser.set_defaults(func=run)
    return parser


def _ensure_raws(project: Path, dataset: str, console) -> None:
    from usermirrorer.data_pipeline.raw import raw_paths
    from usermirrorer.errors import ConfigError

    if all(p.exists() for p in raw_paths(project, dataset)):
        return
    if dataset != "ml-100k":
        raise ConfigError(
            f"no raws for dataset {dataset!r} under {project}/raws; run `usermirrorer preprocess "
            f"{dataset} --project {project}` first (the demo converts only ml-100k by itself)"
        )
    from usermirrorer.preprocessing import get_converter

    with console.status("converting MovieLens-100K (recbole copy) into raws ..."):
        report = get_converter("ml-100k").run(None, project)
    console.print(f"[green]ML-100K converted[/] into {project}/raws in {report.seconds:.1f} s")


def _slate_table(name: str, info: dict[str, Any], reward: float, total: float, k: int):
    from rich.table import Table
    from rich.text import Text

    title = f"{name}  (reward {reward:g}, episode total {total:g})"
    table = Table(title=title, title_justify="left", expand=True, show_edge=False, pad_edge=False)
    table.add_column("", width=3)
    table.add_column("option", ratio=3, no_wrap=True)
    table.add_column("p", justify="right", width=6)
    table.add_column("", ratio=1, no_wrap=True)
    options = info["scene"]["text"]["action_list"]
    for position, (text, p) in enumerate(zip(options, info["probs"])):
        picked = position == info["choice"]
        style = "bold green" if picked else ("dim" if position >= k else "")
        bar = Text("█" * max(1, int(round(float(p) * 20))) if p >= 0.025 else "", style="cyan")
        if picked:
            bar.append("  ← picked", style="bold green")
        table.add_row(f"[{chr(65 + position)}]", Text(text, style=style), f"{float(p):.0%}", bar)
    return table


class _LiveView:
    """What the terminal shows: the user, their recent history, and each recommender's slate."""

    def __init__(self, agent_names: list[str], k: int, model_name: str):
        self.agent_names = agent_names
        self.k = k
        self.model_name = model_name
        self.user = ""
        self.profile = ""
        self.history = ""
        self.step = 0
        self.episode = 0
        self.last: dict[str, tuple[dict, float]] = {}
        self.totals: dict[str, float] = {}

    def new_episode(self, episode: int, user: str, profile: str, history: str) -> None:
        self.episode, self.user, self.profile, self.history = episode, user, profile, history
        self.last, self.totals, self.step = {}, {n: 0.0 for n in self.agent_names}, 0

    def record(self, name: str, reward: float, info: dict[str, Any]) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + reward
        self.last[name] = (info, reward)
        self.step = max(self.step, int(info["scene"]["scene_id"].rsplit("#", 1)[-1]) + 1)

    def __rich__(self):
        from rich.console import Group
        from rich.panel import Panel

        recent = "\n".join(self.history.split("\n")[-5:])
        head = Panel(
            f"[bold]{self.profile}[/]\n[dim]recent history:[/]\n{recent}",
            title=f"simulated user {self.user} · episode {self.episode + 1} · step {self.step} · simulator {self.model_name}",
            title_align="left",
        )
        tables = [
            _slate_table(name, info, reward, self.totals[name], self.k)
            for name, (info, reward) in self.last.items()
        ]
        return Group(head, *tables)


def _cells(row: dict[str, float], metrics: tuple[str, ...]) -> list[str]:
    out = []
    for m in metrics:
        value = row[m]
        if value != value:  # NaN: diversity without an embedding
            out.append("-")
        else:
            out.append(f"{value:.1%}" if m == "coverage" else f"{value:.2f}")
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from usermirrorer.errors import ConfigError

    console = Console()
    started = time.perf_counter()
    agent_names = [a.strip() for a in args.agents.split(",") if a.strip()]
    if not agent_names:
        raise ConfigError(
            "--agents is empty; name at least one of random, popularity, collaborative, linucb"
        )
    if args.episodes < 1 or args.steps < 1:
        raise ConfigError(
            f"--episodes and --steps must be >= 1, got {args.episodes} and {args.steps}"
        )

    import torch

    torch.set_num_threads(max(1, args.threads))
    try:  # weight-loading progress bars would scroll the live view away
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    project = args.project or _default_project()
    project.mkdir(parents=True, exist_ok=True)
    _ensure_raws(project, args.dataset, console)

    from usermirrorer.data_pipeline.embeddings import collaborative_embedding
    from usermirrorer.envs import RecEnv
    from usermirrorer.envs.agents import make_recommender
    from usermirrorer.envs.arena import run_arena, summarize
    from usermirrorer.envs.resources import BASELINE_CHOICE_MODELS, load_choice_model, load_dataset

    ds = load_dataset(args.dataset, project)
    is_llm = args.model not in BASELINE_CHOICE_MODELS
    t0 = time.perf_counter()
    note = (
        " (the first run converts SmolLM2's GGUF file, once)"
        if args.model == "smollm2-135m"
        else ""
    )
    with console.status(f"preparing simulator {args.model}{note} ..."):
        model = load_choice_model(
            args.model,
            ds,
            backend=args.backend,
            mode=args.mode,
            # "auto" is the backend's default: leaving it out shares a cached model with other
            # envs built from the same name in this process
            backend_kwargs={"dtype": args.dtype}
            if is_llm and args.backend == "transformers" and args.dtype != "auto"
            else None,
            project_path=project,
        )
    console.print(
        f"[green]simulator ready[/] ({model!r}) in {time.perf_counter() - t0:.1f} s; dataset {ds!r}"
    )
    # The spectral embedding feeds the collaborative/LinUCB agents and the diversity column.
    embedding = None
    if {"collaborative", "linucb"} & set(agent_names):
        with console.status(
            "fitting the collaborative item embedding (cached under the project) ..."
        ):
            embedding = collaborative_embedding(ds, project)

    agents = {
        name: make_recommender(name, ds, args.exposure_size, seed=args.seed, embedding=embedding)
        for name in agent_names
    }

    def make_env() -> RecEnv:
        return RecEnv(
            ds,
            model,
            args.exposure_size,
            allow_skip=not args.no_skip,
            patience=3,
            reward="click",
            max_steps=args.steps,
            mode=args.mode,
        )

    view = _LiveView(agent_names, args.exposure_size, args.model)
    probe = make_env()

    def on_episode_start(episode: int) -> None:
        _, info = probe.reset(seed=args.seed + episode)  # same seed as the arena's envs: same user
        view.new_episode(
            episode, info["user_id"], info["profile"].replace("\n", " "), info["history_text"]
        )

    live = None

    def on_step(name, env, slate, reward, info) -> None:
        view.record(name, reward, info)

    def on_round() -> None:
        if live is not None:
            live.refresh()
        else:
            console.print(view)

    def on_episode(episode, logs) -> None:
        if episode + 1 < args.episodes:
            on_episode_start(episode + 1)

    on_episode_start(0)
    t_run = time.perf_counter()
    if args.no_live:
        logs = run_arena(
            agents,
            make_env,
            args.episodes,
            seed=args.seed,
            on_step=on_step,
            on_episode=on_episode,
            on_round=on_round,
        )
    else:
        with Live(
            view, console=console, auto_refresh=False, vertical_overflow="visible"
        ) as live_view:
            live = live_view
            logs = run_arena(
                agents,
                make_env,
                args.episodes,
                seed=args.seed,
                on_step=on_step,
                on_episode=on_episode,
                on_round=on_round,
            )
    run_seconds = time.perf_counter() - t_run
    n_steps = sum(len(log.rewards) for agent_logs in logs.values() for log in agent_logs)

    table = Table(
        title=f"{len(agents)} recommenders x {args.episodes} simulated users · simulator {args.model}"
    )
    table.add_column("recommender", no_wrap=True)
    shown = ("return", "click rate", "recip. rank", "exp. click", "coverage", "diversity")
    for metric in shown:
        table.add_column(metric, justify="right")
    for name, agent_logs in logs.items():
        row = summarize(agent_logs, ds.n_items, embedding)
        table.add_row(name, *_cells(row, shown))
    console.print(table)
    console.print(
        f"{n_steps} simulated steps in {run_seconds:.1f} s; total {time.perf_counter() - started:.1f} s. "
        "Reward = click (1 if the user picked an item, 0 for 'none of these'). "
        "Next: `gymnasium.make('usermirrorer/RecEnv-v0', ...)` to train your own agent."
    )
    return 0
