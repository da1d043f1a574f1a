"""``usermirrorer demo``: recommenders face LLM-simulated MovieLens users, live in the terminal.

On a fresh machine it converts MovieLens-100K (shipped by the ``recbole`` package) into raws,
prepares SmolLM2-135M (a one-time GGUF -> Hugging Face conversion, cached), then lets a few
reference recommenders show slates to the same simulated users and prints what each user saw,
the simulator's choice probabilities and the pick, and a summary table at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from usermirrorer.data_pipeline.embeddings import collaborative_embedding
from usermirrorer.envs import RecEnv
from usermirrorer.envs.agents import make_recommender
from usermirrorer.envs.arena import run_arena, summarize
from usermirrorer.envs.resources import BASELINE_CHOICE_MODELS, load_choice_model, load_dataset
from usermirrorer.errors import ConfigError
from usermirrorer.fidelity.pool_fit import default_pool_path
from usermirrorer.fidelity.workspace import last_trained_checkpoint
from usermirrorer.preprocessing import cache_project, ensure_raws
from usermirrorer.sim.outside_option import QuantileOutsideOption
from usermirrorer.sim.saved_pool import SavedPool, is_pool_file

__all__ = ["DemoConfig", "DEFAULT_AGENTS", "default_project", "run_demo"]

DEFAULT_AGENTS = "random,popularity,collaborative"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs (the ``usermirrorer demo`` flags, same names).

    Attributes:
        project: project folder holding ``raws/`` (None: :func:`default_project`).
        dataset: dataset under ``project/raws``; ML-100K is converted on first use.
        model: simulator: an LLM name/folder or a choice model (popularity, collaborative, random).
        backend: LLM backend (transformers, vllm, openai).
        dtype: transformers dtype (``auto``: bfloat16 where the CPU/GPU supports it).
        mode: ``likelihood`` (default), ``direct`` or ``decision``.
        agents: comma list of random, popularity, collaborative, linucb.
        episodes: simulated users per recommender.
        steps: slates per user.
        exposure_size: items per slate.
        no_skip: no "none of these" option.
        seed: seed of users, agents and choices.
        threads: torch CPU threads.
        no_live: print each step instead of a live view.
        trained_from: project where ``usermirrorer train`` wrote its checkpoints: with the
            default model in likelihood mode, the demo uses the pool ``usermirrorer fit-pool``
            saved there (``<W>/pools/<dataset>/pool.json``), else the last checkpoint found
            there (and says which); None: never.
    """

    project: Path | None = None
    dataset: str = "ml-100k"
    model: str = "smollm2-135m"
    backend: str = "transformers"
    dtype: str = "auto"
    mode: str = "likelihood"
    agents: str = DEFAULT_AGENTS
    episodes: int = 2
    steps: int = 3
    exposure_size: int = 5
    no_skip: bool = False
    seed: int = 0
    threads: int = 2
    no_live: bool = False
    trained_from: Path | None = Path("workspace")


def default_project() -> Path:
    """``$USERMIRRORER_CACHE/demo-project`` (default cache: ``~/.cache/usermirrorer``): the
    project where bundled datasets are converted on first use (:func:`cache_project`)."""
    return cache_project()


def _ensure_raws(project: Path, dataset: str, console) -> None:
    with console.status(f"converting {dataset} into raws (first use only) ..."):
        report = ensure_raws(project, dataset)
    if report is not None:
        console.print(f"[green]{dataset} converted[/] into {project}/raws in {report.seconds:.1f} s")


def _slate_table(name: str, info: dict[str, Any], reward: float, total: float, k: int):

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


def _with_trained_model(config: DemoConfig, console: Console) -> tuple[DemoConfig, float | None]:
    """The default model in likelihood mode becomes the trained checkpoint, when there is one.

    Returns the config and the softmax temperature the listwise training learned (None when it
    did not learn one): PMI scores of a trained model spread far wider than 1 nat.
    """
    if config.model != "smollm2-135m" or config.mode != "likelihood" or config.trained_from is None:
        return config, None
    pool = default_pool_path(config.trained_from, config.dataset)
    if pool.exists():
        saved = SavedPool.read(pool)
        members = " × ".join(m.name for m in saved.members)
        console.print(f"simulator: the pool {pool} (usermirrorer fit-pool: {members}, gated by the slate's "
                      f"{saved.gate} spread, fitted on {saved.fit.get('scenes', '?')} train-user scenes); "
                      "--trained-from none for the untrained LLM")
        return replace(config, model=str(pool)), None
    trained = last_trained_checkpoint(config.trained_from, base_model="smollm2-135m")
    if trained is not None:
        manifest, last = trained
        learned = [h["temperature"] for h in manifest.get("history", []) if h.get("temperature")]
        temperature = float(learned[-1]) if learned else None
        console.print(f"simulator: the trained checkpoint {last['model_dir']} (usermirrorer train, "
                      f"{manifest['loss']} loss, {last['examples']} train-user scenes"
                      + (f", softmax temperature {temperature:.3g} as trained" if temperature else "")
                      + "); --model smollm2-135m --trained-from none for the untrained one")
        return replace(config, model=last["model_dir"]), temperature
    console.print("simulator: SmolLM2-135M untrained, likelihood mode; `usermirrorer train --profile cpu` trains one "
                  "on ML-100K's train users (50 min on 2 cores with bf16 units, 65 min without; resumable) and the demo then uses it")
    return config, None


def run_demo(config: DemoConfig) -> int:
    """Run the demo; returns the exit code (0)."""


    console = Console()
    started = time.perf_counter()
    agent_names = [a.strip() for a in config.agents.split(",") if a.strip()]
    if not agent_names:
        raise ConfigError(
            "--agents is empty; name at least one of random, popularity, collaborative, linucb"
        )
    if config.episodes < 1 or config.steps < 1:
        raise ConfigError(
            f"--episodes and --steps must be >= 1, got {config.episodes} and {config.steps}"
        )

    import torch

    torch.set_num_threads(max(1, config.threads))
    try:  # weight-loading progress bars would scroll the live view away
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    project = config.project or default_project()
    project.mkdir(parents=True, exist_ok=True)
    _ensure_raws(project, config.dataset, console)


    ds = load_dataset(config.dataset, project)
    config, temperature = _with_trained_model(config, console)
    is_llm = config.model not in BASELINE_CHOICE_MODELS
    t0 = time.perf_counter()
    note = (
        " (the first run converts SmolLM2's GGUF file, once)"
        if config.model == "smollm2-135m"
        else ""
    )
    with console.status(f"preparing simulator {config.model}{note} ..."):
        model = load_choice_model(
            config.model,
            ds,
            backend=config.backend,
            mode=config.mode,
            # "auto" is the backend's default: leaving it out shares a cached model with other
            # envs built from the same name in this process
            backend_kwargs={"dtype": config.dtype}
            if is_llm and config.backend == "transformers" and config.dtype != "auto"
            else None,
            sim_options={"score_temperature": temperature} if temperature else None,
            project_path=project,
        )
    if is_llm and config.mode == "likelihood" and not config.no_skip and not is_pool_file(config.model):
        # scored as a text, "none of these" is almost never likely: it would never be picked
        # and every agent would look alike; it scores like the catalog's 90th-percentile item
        model = QuantileOutsideOption(model, ds)
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
        name: make_recommender(name, ds, config.exposure_size, seed=config.seed, embedding=embedding)
        for name in agent_names
    }

    def make_env() -> RecEnv:
        return RecEnv(
            ds,
            model,
            config.exposure_size,
            allow_skip=not config.no_skip,
            patience=3,
            reward="click",
            max_steps=config.steps,
            mode=config.mode,
        )

    view = _LiveView(agent_names, config.exposure_size, config.model)
    probe = make_env()

    def on_episode_start(episode: int) -> None:
        _, info = probe.reset(seed=config.seed + episode)  # same seed as the arena's envs: same user
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
        if episode + 1 < config.episodes:
            on_episode_start(episode + 1)

    on_episode_start(0)
    t_run = time.perf_counter()
    if config.no_live:
        logs = run_arena(
            agents,
            make_env,
            config.episodes,
            seed=config.seed,
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
                config.episodes,
                seed=config.seed,
                on_step=on_step,
                on_episode=on_episode,
                on_round=on_round,
            )
    run_seconds = time.perf_counter() - t_run
    n_steps = sum(len(log.rewards) for agent_logs in logs.values() for log in agent_logs)

    table = Table(
        title=f"{len(agents)} recommenders x {config.episodes} simulated users · simulator {config.model}"
        + (f" ({config.mode} mode)" if is_llm else "")
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
