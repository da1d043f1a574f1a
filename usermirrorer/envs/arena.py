"""Run several recommenders against the same simulated users, in lockstep, and score them.

Each episode, every recommender gets its own :class:`~usermirrorer.envs.RecEnv` reset with the
same seed: the same user, the same start time and the same random stream for sampling picks
(common random numbers, so differences between recommenders are not sampling noise). The envs
of all recommenders still running are stepped with one simulator call
(:func:`~usermirrorer.envs.rec_env.simulate_steps`); as they show the same user, an LLM backend
computes the user's prefix once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usermirrorer.envs.agents import Recommender
from usermirrorer.envs.rec_env import RecEnv, simulate_steps

__all__ = ["EpisodeLog", "begin_episode", "run_arena", "summarize", "METRICS"]


@dataclass
class EpisodeLog:
    """What one recommender did in one episode and what the simulated user did back."""

    agent: str
    episode: int
    user_id: str
    rewards: list[float] = field(default_factory=list)
    skipped: list[bool] = field(default_factory=list)
    reciprocal_ranks: list[float] = field(default_factory=list)
    expected_clicks: list[float] = field(default_factory=list)
    slates: list[np.ndarray] = field(default_factory=list)
    terminated: bool = False

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))


def begin_episode(agent: Recommender, episode_seed: int) -> None:
    """Tell an agent with ``begin_episode(seed)`` (its own draws seeded per episode) which one starts."""
    begin = getattr(agent, "begin_episode", None)
    if begin is not None:
        begin(episode_seed)


StepCallback = Callable[[str, RecEnv, np.ndarray, float, dict[str, Any]], None]


def run_arena(
    agents: dict[str, Recommender],
    make_env: Callable[[], RecEnv],
    episodes: int,
    seed: int = 0,
    on_step: StepCallback | None = None,
    on_episode: Callable[[int, dict[str, EpisodeLog]], None] | None = None,
    on_round: Callable[[], None] | None = None,
    episode_options: Callable[[int], dict[str, Any]] | None = None,
    start_episode: int = 0,
) -> dict[str, list[EpisodeLog]]:
    """Play ``episodes`` episodes per agent; episode ``e`` uses env seed ``seed + e`` for all.

    Args:
        agents: name -> recommender (``recommend`` / ``update``; an agent with
            ``begin_episode(seed)`` is told each episode's seed first, so its own draws can be
            the same in every run of that episode).
        make_env: builds one env (all must share the choice model: build it once, pass it in).
        episodes: episodes per agent.
        seed: base seed.
        on_step: called after every step with (agent name, env, slate, reward, info).
        on_episode: called after every episode with (episode, {agent: log}).
        on_round: called after each lockstep round (every running agent stepped once).
        episode_options: episode -> the ``reset`` options (``user_id``, ``start_time``) of
            every agent's env, to play chosen users at chosen times.
        start_episode: the first episode's number (resume a run: episodes
            ``start_episode .. episodes-1`` are played, with the seeds they had).

    Returns:
        agent name -> one :class:`EpisodeLog` per episode played.
    """
    envs = {name: make_env() for name in agents}
    models = {id(env.model) for env in envs.values()}
    model = next(iter(envs.values())).model
    logs: dict[str, list[EpisodeLog]] = {name: [] for name in agents}
    for episode in range(start_episode, episodes):
        state: dict[str, tuple[dict, dict]] = {}
        current: dict[str, EpisodeLog] = {}
        options = episode_options(episode) if episode_options is not None else None
        for name, env in envs.items():
            begin_episode(agents[name], seed + episode)
            obs, info = env.reset(seed=seed + episode, options=options)
            state[name] = (obs, info)
            current[name] = EpisodeLog(name, episode, info["user_id"])
        running = list(agents)
        while running:
            slates = [agents[name].recommend(*state[name]) for name in running]
            if len(models) == 1:
                results = simulate_steps([envs[name] for name in running], slates, model)
            else:
                results = [envs[name].step(slate) for name, slate in zip(running, slates)]
            still = []
            for name, slate, (obs, reward, term, trunc, info) in zip(running, slates, results):
                agents[name].update(state[name][0], slate, reward, info)
                log = current[name]
                log.rewards.append(float(reward))
                log.skipped.append(bool(info["skipped"]))
                log.reciprocal_ranks.append(0.0 if info["skipped"] else 1.0 / (info["choice"] + 1))
                log.expected_clicks.append(float(info["expected_click"]))
                log.slates.append(np.asarray(slate))
                state[name] = (obs, info)
                if on_step is not None:
                    on_step(name, envs[name], np.asarray(slate), float(reward), info)
                if term or trunc:
                    log.terminated = bool(term)
                else:
                    still.append(name)
            running = still
            if on_round is not None:
                on_round()
        for name in agents:
            logs[name].append(current[name])
        if on_episode is not None:
            on_episode(episode, current)
    return logs


METRICS = (
    "return",
    "reward/step",
    "click rate",
    "recip. rank",
    "exp. click",
    "coverage",
    "diversity",
    "steps",
)


def summarize(
    logs: list[EpisodeLog], n_items: int, embedding: np.ndarray | None = None
) -> dict[str, float]:
    """Table row for one recommender.

    - ``return``: mean episode return; ``reward/step``: mean reward per step.
    - ``click rate``: share of steps where the user picked an item (not the outside option).
    - ``recip. rank``: mean reciprocal rank of the pick in the slate (0 on a skip).
    - ``exp. click``: mean probability of picking an item (1 - p(skip)), the expectation of the
      click rate without the sampling noise.
    - ``coverage``: distinct items shown / catalog size.
    - ``diversity``: mean over slates of the mean pairwise cosine distance ``1 - cos`` of the
      shown items' embeddings (NaN without an embedding).
    - ``steps``: mean episode length (users leave after ``patience`` skips).
    """
    n_steps = sum(len(log.rewards) for log in logs)
    rewards = np.array([r for log in logs for r in log.rewards])
    skipped = np.array([s for log in logs for s in log.skipped])
    shown = np.unique(np.concatenate([np.concatenate(log.slates) for log in logs if log.slates]))
    diversity = float("nan")
    if embedding is not None:
        emb = np.asarray(embedding, dtype=np.float64)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        values = []
        for log in logs:
            for slate in log.slates:
                vecs = unit[slate]
                sims = vecs @ vecs.T
                k = len(slate)
                values.append(float(1.0 - (sims.sum() - np.trace(sims)) / (k * (k - 1))))
        diversity = float(np.mean(values)) if values else float("nan")
    return {
        "return": float(np.mean([log.episode_return for log in logs])),
        "reward/step": float(rewards.mean()) if len(rewards) else 0.0,
        "click rate": float(1.0 - skipped.mean()) if len(skipped) else 0.0,
        "recip. rank": float(np.mean([r for log in logs for r in log.reciprocal_ranks])),
        "exp. click": float(np.mean([c for log in logs for c in log.expected_clicks])),
        "coverage": float(len(shown) / n_items),
        "diversity": diversity,
        "steps": float(n_steps / max(len(logs), 1)),
    }
