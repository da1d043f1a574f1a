"""Does a simulator rank recommenders the way real users do? (``usermirrorer bench policy-ranking``)

A simulator exists to evaluate recommenders, so this benchmark asks the downstream question:
order a set of recommenders once by how well their slates match what held-out users really
did next, once by how the simulated users respond to the same slates, and compare the orders.

1. **Episodes.** Held-out users of the fidelity split (train users never appear); for each,
   ``starts_per_user`` start times drawn among their real interaction times with at least
   ``min_history`` interactions before and ``next_n`` at or after. Episodes are ordered in
   rounds (every user's first start, then every user's second ...), so the first N episodes
   hold N distinct users; the LLM simulators play the first ``llm_episodes``.
2. **Real-log score.** At each start every recommender proposes a slate of K unseen items
   (fitted on train users only). The slate is judged against the user's next ``next_n`` real
   interactions: NDCG@K (binary relevance, the ranking measure), hit rate and precision. An
   online learner (LinUCB) learns from the log as it goes: the slate items among the real
   next items are its clicks.
3. **Simulator score.** The same recommenders play :class:`~usermirrorer.envs.RecEnv`
   episodes of ``steps`` steps from the same users and start times, all agents of an
   episode in lockstep through one simulator call (:func:`~usermirrorer.envs.arena.run_arena`:
   the same env seed, so common random numbers). K items plus "none of these"; the score is
   the expected click rate ``1 - p(skip)`` averaged over steps (its sampled twin is reported
   too). Every simulator skips by one rule: "none of these" scores at the 90 % quantile of the
   user's scores over the catalog (log-only models: the exact catalog; LLMs in likelihood
   mode: :class:`~usermirrorer.sim.outside_option.QuantileOutsideOption`, 24 fixed catalog
   items scored in the scene's context), so a slate the user likes less than the catalog's
   top tenth is often skipped.
4. **Agreement.** Spearman and Kendall tau-b between each simulator's and the real-log mean
   scores per recommender, and pairwise-order accuracy, with 95 % bootstrap CIs over users
   (:mod:`usermirrorer.fidelity.rank_agreement`); each simulator on all its episodes and on
   the LLM episodes, where simulators are compared pairwise.

Each simulator's episodes are appended to ``<project>/fidelity/policy-ranking/<key>/<sim>.jsonl``
as they finish (with the learning agents' state), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.data_pipeline.embeddings import collaborative_embedding, content_embedding
from usermirrorer.data_pipeline.jsonl import JsonlAppender, read_jsonl, write_jsonl
from usermirrorer.data_pipeline.raw import RawDataset, format_time
from usermirrorer.data_pipeline.training.stage import progress_bar
from usermirrorer.envs import RecEnv
from usermirrorer.envs.agents import Recommender, make_recommender
from usermirrorer.envs.arena import EpisodeLog, begin_episode, run_arena
from usermirrorer.errors import ConfigError, DataError
from usermirrorer.fidelity.pool_fit import default_pool_path
from usermirrorer.fidelity.rank_agreement import (
    bootstrap_agreement,
    paired_spearman_difference,
    wrong_pairs,
)
from usermirrorer.fidelity.runner import model_stamp
from usermirrorer.fidelity.workspace import (
    FidelityPaths,
    ensure_split,
    load_benchmark_raws,
    load_likelihood_ft_manifests,
)
from usermirrorer.sim.choice_models import make_choice_model
from usermirrorer.sim.metrics import fit_temperature
from usermirrorer.sim.mnl import FEATURES, fit_scenes_from_log, interleave_halves
from usermirrorer.sim.outside_option import QuantileOutsideOption
from usermirrorer.sim.simulator import SimOptions, UserSimulator

__all__ = ["AGENTS", "SIMULATORS", "PolicyRankingConfig", "Episode", "plan_episodes", "slate_metrics",
           "real_log_scores", "run_policy_ranking"]

AGENTS: tuple[str, ...] = ("random", "popularity", "collaborative", "item-knn", "content", "sequential", "linucb")
#: simulator names; "base" and "trained" are the LLMs (likelihood mode, PMI, fitted temperature)
#: "pool": the gated pool `usermirrorer fit-pool` saved in the project (trained LLM x log-only members)
SIMULATORS: tuple[str, ...] = ("random", "popularity", "collaborative", "cooccurrence", "mnl", "base", "trained",
                               "pool")
LLM_SIMULATORS = ("base", "trained")
_PLAYS_AN_LLM = (*LLM_SIMULATORS, "pool")  # these play only the first llm_episodes
RESULT_STEM = "policy_ranking"
_LAYOUT = "policy-ranking-v1"  # bump when what a cached episode means changes


@dataclass
class PolicyRankingConfig:
    """Every knob of the benchmark (``usermirrorer bench policy-ranking --help`` explains each)."""

    project_path: str = "./workspace"
    results_dir: str = "benchmarks/results"
    dataset: str = "ml-100k"
    seed: int = 0
    eval_user_fraction: float = 0.2
    slate_size: int = 5
    next_n: int = 10
    min_history: int = 5
    starts_per_user: int = 5
    steps: int = 1
    llm_episodes: int = 150
    agents: tuple[str, ...] = AGENTS
    simulators: tuple[str, ...] = SIMULATORS
    base_model: str = "smollm2-135m"
    trained_model: str | None = None  # None: the last checkpoint of `usermirrorer train` in the project
    fit_scenes: int = 1000
    llm_fit_scenes: int = 64
    n_reference: int = 24
    skip_quantile: float = 0.9
    embedder: str = "minilm"
    n_bootstrap: int = 1000
    batch_size: int = 16
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    fresh: bool = False
    progress: bool = True
    command: str = ""

    def validate(self) -> PolicyRankingConfig:
        for name in ("slate_size", "next_n", "starts_per_user", "steps", "llm_episodes", "fit_scenes",
                     "llm_fit_scenes", "n_bootstrap", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_history < 1:
            raise ConfigError(f"min_history must be >= 1, got {self.min_history}")
        unknown = [a for a in self.agents if a not in AGENTS]
        if unknown or len(self.agents) < 3:
            raise ConfigError(f"agents must be >= 3 of {list(AGENTS)}, got {list(self.agents)}")
        unknown = [s for s in self.simulators if s not in SIMULATORS]
        if unknown or not self.simulators:
            raise ConfigError(f"unknown simulator(s) {unknown}; expected some of {list(SIMULATORS)}")
        if not 0.0 <= self.skip_quantile <= 1.0:
            raise ConfigError(f"skip_quantile must be in [0, 1], got {self.skip_quantile}")
        return self


@dataclass(frozen=True)
class Episode:
    """One held-out user at one real start time, and what they really did next."""

    user_id: str
    start: int  #: unix seconds; the history is every interaction strictly before it
    next_items: tuple[int, ...]  #: item indices of the next ``next_n`` real interactions

    @property
    def reset_options(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "start_time": format_time(self.start)}


def plan_episodes(ds: RawDataset, users: Sequence[str], next_n: int, min_history: int, starts_per_user: int,
                  seed: int) -> list[Episode]:
    """Start times per user (distinct real interaction times), in rounds over shuffled users.

    A start ``t`` qualifies when the user has at least ``min_history`` interactions strictly
    before ``t`` and at least ``next_n`` at or after it.
    """
    rng = np.random.default_rng([seed, 14])
    per_user: list[list[Episode]] = []
    for user_id in users:
        u = ds.user_index[user_id]
        rows = ds.user_rows(u)
        times = ds.inter_time[rows]
        candidates = []
        for t in np.unique(times):
            before = int(np.searchsorted(times, t, "left"))
            if before >= min_history and len(times) - before >= next_n:
                candidates.append((int(t), before))
        if not candidates:
            continue
        picked = rng.choice(len(candidates), min(starts_per_user, len(candidates)), replace=False)
        per_user.append([
            Episode(user_id, candidates[i][0],
                    tuple(int(x) for x in ds.inter_item[rows.start + candidates[i][1]: rows.start + candidates[i][1]
                                                        + next_n]))
            for i in picked
        ])
    order = rng.permutation(len(per_user))
    return [per_user[i][r] for r in range(starts_per_user) for i in order if r < len(per_user[i])]


def slate_metrics(slate: Sequence[int], next_items: Sequence[int]) -> dict[str, float]:
    """NDCG@K, hit and precision of a slate against the real next items (binary relevance).

    ``NDCG = sum_j rel_j / log2(j + 2) / IDCG`` with ``IDCG = sum_{j < min(K, N)} 1 / log2(j + 2)``.
    """
    slate = np.asarray(slate)
    relevant = np.isin(slate, np.asarray(next_items)).astype(np.float64)
    gains = 1.0 / np.log2(np.arange(len(slate)) + 2.0)
    ideal = gains[: min(len(slate), len(set(next_items)))].sum()
    return {"ndcg": float(relevant @ gains / ideal) if ideal > 0 else 0.0,
            "hit": float(relevant.any()), "precision": float(relevant.mean())}


def _history_size(ds: RawDataset, steps: int) -> int:
    # the observation holds the whole history, so "unseen" means never consumed
    return int(np.diff(ds.user_ptr).max()) + steps + 1


def real_log_scores(ds: RawDataset, agents: dict[str, Recommender], episodes: Sequence[Episode], k: int,
                    seed: int, steps: int = 1) -> dict[str, np.ndarray]:
    """Each agent's slate at each start, judged against the user's real next items.

    Returns:
        metric name (``ndcg``, ``hit``, ``precision``) -> ``(n_episodes, n_agents)`` array, agents
        in the order of ``agents``. A learning agent is updated with the slate's real hits (the
        first as its pick, reward 1), a slate without one as a skip.
    """
    env = RecEnv(ds, "random", k, allow_skip=True, max_steps=steps, history_size=_history_size(ds, steps))
    out = {m: np.zeros((len(episodes), len(agents))) for m in ("ndcg", "hit", "precision")}
    for e, episode in enumerate(episodes):
        obs, info = env.reset(seed=seed + e, options=episode.reset_options)
        for a, agent in enumerate(agents.values()):
            begin_episode(agent, seed + e)
            slate = agent.recommend(copy.deepcopy(obs), dict(info))
            scores = slate_metrics(slate, episode.next_items)
            for m, v in scores.items():
                out[m][e, a] = v
            hits = np.flatnonzero(np.isin(slate, episode.next_items))
            feedback = {**info, "choice": int(hits[0]) if len(hits) else k, "skipped": not len(hits)}
            agent.update(obs, slate, 1.0 if len(hits) else 0.0, feedback)
    return out


# ---------------------------------------------------------------------------------------------
# simulators


def _llm(model: str, config: PolicyRankingConfig) -> UserSimulator:
    options = SimOptions(mode="likelihood", batch_size=config.batch_size, truncate_history=True, seed=config.seed)
    return make_choice_model(model, options=options, backend_kwargs=config.backend_kwargs)


def _trained_model(config: PolicyRankingConfig, split: Any) -> tuple[str, str]:
    """(model folder, label) of the trained simulator; refuses one trained on eval users."""
    if config.trained_model:
        return config.trained_model, f"trained ({config.trained_model})"
    manifests = {m["loss"]: m for m in load_likelihood_ft_manifests(config.project_path)}
    manifest = manifests.get("listwise") or manifests.get("next-item")
    if manifest is None:
        raise DataError(f"no trained simulator in {FidelityPaths(config.project_path).root / 'likelihood-ft'}: "
                        f"run `usermirrorer train --profile cpu --project-path {config.project_path}` first "
                        "(50-65 min on 2 cores), pass --trained-model DIR, or leave 'trained' out of --simulators")
    split.check_disjoint(manifest.get("trained_user_ids", []), f"the likelihood-mode training {manifest['loss']}")
    last = manifest["checkpoints"][-1]
    return last["model_dir"], f"{config.base_model} trained ({manifest['loss']}, {last['examples']:,} examples)"


def _fit_llm_temperature(sim: UserSimulator, fit_scenes: Sequence[dict], path: Path) -> float:
    """The likelihood-mode softmax temperature by log-loss on train-user scenes (saved, reused)."""
    if path.exists():
        return float(json.loads(path.read_text(encoding="utf-8"))["temperature"])
    answers = sim.choice_probs(list(fit_scenes), mode="likelihood")
    temperature = fit_temperature([a.scores for a in answers], [int(s["item_pos"]) for s in fit_scenes])
    path.write_text(json.dumps({"temperature": temperature, "n_fit": len(fit_scenes)}) + "\n", encoding="utf-8")
    return temperature


def _episode_record(episode: int, logs: dict[str, EpisodeLog], agents: dict[str, Recommender]) -> dict[str, Any]:
    return {"episode": episode, "user_id": next(iter(logs.values())).user_id,
            "agents": {name: {"expected_clicks": log.expected_clicks, "clicks": [1.0 - s for s in log.skipped],
                              "slates": [s.tolist() for s in log.slates]} for name, log in logs.items()},
            "state": {name: {k: np.asarray(v).tolist() for k, v in agent.state_dict().items()}
                      for name, agent in agents.items() if hasattr(agent, "state_dict")}}


def _resume(path: Path, agents: dict[str, Recommender]) -> list[dict[str, Any]]:
    """Cached episodes (in order), the learning agents restored to their state after the last."""
    if not path.exists():
        return []
    records = read_jsonl(path)
    good = [r for i, r in enumerate(records) if r.get("episode") == i]
    if len(good) != len(records):  # a gap or a foreign record: keep the clean prefix only
        write_jsonl(path, good)
    if good:
        for name, state in good[-1].get("state", {}).items():
            agents[name].load_state_dict({k: np.asarray(v) for k, v in state.items()})
    return good


def simulate_agents(make_model: Callable[[], Any], ds: RawDataset, agents: dict[str, Recommender],
                    episodes: Sequence[Episode], config: PolicyRankingConfig, cache: Path | None,
                    label: str = "") -> dict[str, Any]:
    """Play every agent against the simulator ``make_model()`` on ``episodes``.

    Episodes found in ``cache`` are read back (the learning agents restored to their state
    after the last of them); the model is built only if some episode is left to play.

    Returns:
        ``expected_click`` and ``click``: ``(n_episodes, n_agents)`` per-episode means over steps;
        ``seconds`` spent simulating in this call and ``played`` (episodes simulated in it).
    """
    done = _resume(cache, agents) if cache is not None else []
    cached = len(done)
    started = time.perf_counter()
    if cached < len(episodes):
        model = make_model()
        writer = JsonlAppender(cache) if cache is not None else None
        kwargs = {"allow_skip": True, "patience": config.steps + 1, "max_steps": config.steps, "reward": "click",
                      "history_size": _history_size(ds, config.steps), "min_history": config.min_history}
        with progress_bar(config.progress) as bar:
            task = bar.add_task(f"simulator {label}", total=len(episodes), completed=cached)

            clock = [time.perf_counter()]

            def on_episode(e: int, logs: dict[str, EpisodeLog]) -> None:
                record = _episode_record(e, logs, agents)
                now = time.perf_counter()
                # the episode's own cost (the first one carries the model load), kept with it
                record["seconds"], clock[0] = now - clock[0], now
                done.append(record)
                if writer is not None:
                    writer.write([record])
                bar.advance(task)

            try:
                run_arena(agents, lambda: RecEnv(ds, model, config.slate_size, **kwargs), len(episodes),
                          seed=config.seed, on_episode=on_episode,
                          episode_options=lambda e: episodes[e].reset_options, start_episode=cached)
            finally:
                if writer is not None:
                    writer.close()
    names = list(agents)
    timed = [r["seconds"] for r in done if "seconds" in r]
    return {
        "expected_click": np.array([[np.mean(r["agents"][n]["expected_clicks"]) for n in names] for r in done]),
        "click": np.array([[np.mean(r["agents"][n]["clicks"]) for n in names] for r in done]),
        # every episode timed where it was played (this run or an interrupted one before it)
        # (episodes cached without their time, read back by a run that played none: unknown)
        "seconds": (float(sum(timed)) if len(timed) == len(done)
                    else time.perf_counter() - started if len(done) > cached else float("nan")),
        "played": len(done) - cached,
    }


def _simulator(name: str, config: PolicyRankingConfig, ds: RawDataset, split: Any, fit_rows: np.ndarray,
               fit_scenes: Sequence[dict], cache_dir: Path) -> tuple[Callable[[], Any], dict[str, Any], str]:
    """``(make_model, info, cache stem)`` of a simulator (:func:`cache_stem`); an LLM's label and
    temperature come from its cache when it has one, so a fully cached simulator is never loaded."""
    if name in LLM_SIMULATORS:
        model_name, label = ((config.base_model, f"{config.base_model} base") if name == "base"
                             else _trained_model(config, split))
        stem = cache_stem(name, model_name)
        fit_path = cache_dir / f"{stem}.fit.json"
        info: dict[str, Any] = {"label": label, "model": model_name, "kind": "llm"}

        def make_llm() -> Any:
            llm = _llm(model_name, config)
            temperature = _fit_llm_temperature(llm, fit_scenes[: config.llm_fit_scenes], fit_path)
            llm.options = replace(llm.options, score_temperature=temperature)
            return QuantileOutsideOption(llm, ds, config.n_reference, config.skip_quantile, seed=config.seed)

        return make_llm, info, stem
    if name == "pool":
        path = default_pool_path(config.project_path, config.dataset)
        if not path.exists():
            raise ConfigError(f"no saved pool at {path}: run `usermirrorer fit-pool --project-path "
                              f"{config.project_path}` first (~6-8 min on 2 cores)")
        # the stem carries the file's digest: a refitted pool plays afresh
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        return ((lambda: make_choice_model(str(path), ds, backend_kwargs=config.backend_kwargs,
                                           project_path=config.project_path)),
                {"label": "gated pool (trained LLM × collaborative × MNL × content × popularity; usermirrorer "
                          "fit-pool)", "kind": "pool", "model": str(path)}, f"pool-{digest}")
    if name in ("mnl", "cooccurrence"):
        def make_mnl() -> Any:
            return make_choice_model(name, ds, options={"fit_scenes": list(fit_scenes), "embedder": config.embedder,
                                                        "skip_quantile": config.skip_quantile},
                                     fit_rows=fit_rows, seed=config.seed, project_path=config.project_path)

        if name == "cooccurrence":
            return make_mnl, {"label": "item co-occurrence", "kind": "log-only"}, cache_stem(name, None)
        # the stem names the features: episodes played by an MNL of other features are not read back
        features = hashlib.sha256(",".join(FEATURES).encode()).hexdigest()[:8]
        return (make_mnl, {"label": f"learned MNL ({len(FEATURES)} features)", "kind": "log-only"},
                cache_stem(f"{name}-{features}", None))
    options = {} if name == "random" else {"skip_quantile": config.skip_quantile}
    return ((lambda: make_choice_model(name, ds, options=options, fit_rows=fit_rows, seed=config.seed,
                                       project_path=config.project_path)),
            {"label": name, "kind": "log-only"}, cache_stem(name, None))


# ---------------------------------------------------------------------------------------------
# the run


def cache_stem(name: str, model: str | None) -> str:
    """File stem of a simulator's cached episodes: an LLM's carries its weights' stamp, so a
    retrained checkpoint (or another ``--trained-model``) is played afresh, never read back from
    the answers of the model it replaced."""
    if not model:
        return name
    return f"{name}-{hashlib.sha256(model_stamp(model).encode()).hexdigest()[:10]}"


def _fingerprint(config: PolicyRankingConfig, episodes: Sequence[Episode], ds: RawDataset) -> str:
    key = {"layout": _LAYOUT, "dataset": ds.name, "n_interactions": len(ds.inter_item), "agents": list(config.agents),
           "k": config.slate_size, "steps": config.steps, "seed": config.seed, "skip_quantile": config.skip_quantile,
           "n_reference": config.n_reference, "fit_scenes": config.fit_scenes, "llm_fit_scenes": config.llm_fit_scenes,
           "embedder": config.embedder, "episodes": [(e.user_id, e.start) for e in episodes]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _machine() -> str:
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), Python {sys.version.split()[0]}"


def run_policy_ranking(config: PolicyRankingConfig, console: Any = None) -> dict[str, Any]:
    """Run the benchmark and write ``policy_ranking.{md,json,png}``; returns the result dict."""
    from usermirrorer.fidelity import policy_report

    config.validate()
    if console is None:
        from rich.console import Console

        console = Console() if sys.stdout.isatty() else Console(width=170)
    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    ds = load_benchmark_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    episodes = plan_episodes(ds, split.eval_users, config.next_n, config.min_history, config.starts_per_user,
                             config.seed)
    if not episodes:
        raise DataError(f"no eval user of {config.dataset} has {config.min_history} interactions before and "
                        f"{config.next_n} after some time; lower --min-history or --next-n")
    n_llm = min(config.llm_episodes, len(episodes))
    fit_rows = ds.rows_of_users(split.train_users)

    t = time.perf_counter()
    embedding = collaborative_embedding(ds, config.project_path, rows=fit_rows)
    content = content_embedding(ds, config.project_path, config.embedder)
    prototypes = {name: make_recommender(name, ds, config.slate_size, seed=config.seed, embedding=embedding,
                                         content=content, fit_rows=fit_rows) for name in config.agents}
    setup_seconds = time.perf_counter() - t
    real = real_log_scores(ds, copy.deepcopy(prototypes), episodes, config.slate_size, config.seed, config.steps)

    key = _fingerprint(config, episodes, ds)
    cache_dir = FidelityPaths(config.project_path).root / "policy-ranking" / key
    if config.fresh and cache_dir.exists():
        import shutil

        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fit_scenes: list[dict] = []
    if {"mnl", "cooccurrence", *LLM_SIMULATORS} & set(config.simulators):
        scenes = fit_scenes_from_log(ds, config.fit_scenes, k=config.slate_size, seed=config.seed,
                                     users=list(split.train_users), exclude_users=list(split.eval_users),
                                     embedder=config.embedder, project_path=config.project_path)
        fit_scenes = interleave_halves(scenes)  # an LLM's temperature is fitted on a prefix

    simulators: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in config.simulators:
        t = time.perf_counter()
        n = n_llm if name in _PLAYS_AN_LLM else len(episodes)
        try:
            make_model, info, stem = _simulator(name, config, ds, split, fit_rows, fit_scenes, cache_dir)
            run = simulate_agents(make_model, ds, copy.deepcopy(prototypes), episodes[:n], config,
                                  cache_dir / f"{stem}.jsonl", label=name)
        except (DataError, ConfigError, OSError) as exc:
            skipped[name] = str(exc).splitlines()[0]
            console.print(f"[yellow]simulator {name!r} left out:[/yellow] {exc}")
            continue
        fit_path = cache_dir / f"{stem}.fit.json"
        if fit_path.exists():
            info["temperature"] = json.loads(fit_path.read_text(encoding="utf-8"))["temperature"]
            info["label"] += f", likelihood (PMI, T={info['temperature']:.3g})"
        simulators[name] = {**info, **run, "episodes": n, "wall_seconds": time.perf_counter() - t}

    agents = list(config.agents)
    groups = np.array([e.user_id for e in episodes])
    result_sims = {}
    for name, info in simulators.items():
        n = info["episodes"]
        own = bootstrap_agreement(info["expected_click"], real["ndcg"][:n], groups[:n], config.n_bootstrap,
                                  config.seed)
        common = bootstrap_agreement(info["expected_click"][:n_llm], real["ndcg"][:n_llm], groups[:n_llm],
                                     config.n_bootstrap, config.seed)
        sim_mean = info["expected_click"].mean(axis=0)
        result_sims[name] = {
            "label": info["label"], "kind": info["kind"], "episodes": n, "users": len(set(groups[:n])),
            "temperature": info.get("temperature"), "model": info.get("model"),
            "expected_click": dict(zip(agents, sim_mean.tolist())),
            "click": dict(zip(agents, info["click"].mean(axis=0).tolist())),
            "real_ndcg_same_episodes": dict(zip(agents, real["ndcg"][:n].mean(axis=0).tolist())),
            "agreement": own.as_dict(), "agreement_llm_episodes": common.as_dict(),
            "wrong_pairs": wrong_pairs(sim_mean, real["ndcg"][:n].mean(axis=0), agents),
            "seconds": info["seconds"], "wall_seconds": info["wall_seconds"], "played": info["played"],
            "episodes_per_second": n / info["seconds"] if info["seconds"] > 0 else None,
        }
    comparisons = []
    for lead in ("trained", "pool"):  # the trained LLM, and the pool it is a member of, against the rest
        if lead not in simulators:
            continue
        for other in simulators:
            if other == lead or (lead == "pool" and other == "trained"):  # trained vs pool is there already
                continue
            diff = paired_spearman_difference(simulators[lead]["expected_click"][:n_llm],
                                              simulators[other]["expected_click"][:n_llm], real["ndcg"][:n_llm],
                                              groups[:n_llm], config.n_bootstrap, config.seed)
            comparisons.append({"a": lead, "b": other, **diff})
    result = {
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "setup": {"command": config.command or "usermirrorer bench policy-ranking", "machine": _machine(),
                  "config": {k: v for k, v in asdict(config).items() if k != "backend_kwargs"},
                  "episodes": len(episodes), "users": len(set(groups)), "llm_episodes": n_llm,
                  "llm_users": len(set(groups[:n_llm])), "eval_users": len(split.eval_users),
                  "cache": str(cache_dir), "load_start": load_start, "load_end": os.getloadavg()[0],
                  "recommender_setup_seconds": setup_seconds},
        "agents": agents,
        "real_log": {m: dict(zip(agents, v.mean(axis=0).tolist())) for m, v in real.items()},
        "real_log_llm_episodes": {m: dict(zip(agents, v[:n_llm].mean(axis=0).tolist())) for m, v in real.items()},
        "simulators": result_sims,
        "comparisons": comparisons,
        "skipped": skipped,
        "total_seconds": time.perf_counter() - began,
    }
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{RESULT_STEM}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (results_dir / f"{RESULT_STEM}.md").write_text(policy_report.markdown_report(result), encoding="utf-8")
    policy_report.plot_scores(result, results_dir / f"{RESULT_STEM}.png")
    console.print(policy_report.markdown_summary(result))
    return result
