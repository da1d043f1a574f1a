"""``RecEnv``: a recommender faces one simulated user, one slate per step (DESIGN.md §6)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from usermirrorer.data_pipeline.raw import RawDataset, format_time, parse_time
from usermirrorer.data_pipeline.sampling.strategies import DomainStrategy, get_strategy
from usermirrorer.data_pipeline.scene import Scene, render_scene, reversed_scene
from usermirrorer.envs.resources import ChoiceModel, load_choice_model, load_dataset
from usermirrorer.envs.rewards import (
    RewardFn,
    StepOutcome,
    expected_rating,
    rating_distribution,
    rating_scenes,
    resolve_reward,
)
from usermirrorer.envs.spaces import SlateSpace, fill_repeats
from usermirrorer.errors import BackendError, ConfigError, InvalidAction
from usermirrorer.preprocessing import locate_raws
from usermirrorer.sim.prompts import MAX_OPTIONS, MODES  # MAX_OPTIONS: option letters A..Z (DESIGN.md §4)

__all__ = ["RecEnv", "MAX_OPTIONS", "simulate_steps"]

_START_MODES = ("random", "end")
# start_time in unix seconds: years 0001..9999, the range 'YYYY-MM-DD HH:MM:SS' can name.
_EARLIEST = parse_time("0001-01-01 00:00:00")
_LATEST = parse_time("9999-12-31 23:59:59")

#: What a repeated item in a slate means (the ``repeats`` argument).
REPEATS = ("raise", "fill")


class RecEnv(gym.Env[dict[str, Any], np.ndarray]):
    """
    ## Description

    A recommender shows a simulated user a slate of K items; the user picks one of them (or,
    with `allow_skip`, "none of these"); the pick joins the user's history and the next slate
    comes. The user is a real user of a recommendation log (profile and interaction history up
    to a real point in time) and their choices come from a user simulator: an LLM read as a
    choice model (the option-letter distribution after `Behavior: [`) or a non-LLM baseline
    (popularity, collaborative). It follows "Mirroring Users" (arXiv 2508.18142), whose
    fine-tuned simulators this environment serves.

    ## Action Space

    A `SlateSpace`, i.e. `MultiDiscrete([n_items] * K)` with all K entries distinct: the item
    indices (rows of the dataset's item file, `0..n_items-1`) shown as options A, B, C, ... in
    that order. A slate with a repeated item, an index out of range or the wrong length raises
    `usermirrorer.errors.InvalidAction`. `action_space.sample()` draws distinct items.

    With `repeats="fill"` the action space is a plain `MultiDiscrete([n_items] * K)` and a
    repeated entry is replaced, in order, by the most popular item (interaction count over the
    whole log) not yet in the slate; a slate of distinct items is shown unchanged. This is the
    setting for RL libraries whose `MultiDiscrete` policy samples each slot on its own
    (Stable-Baselines3, TorchRL): they repeat items by chance. `info["slate"]` is the slate
    actually shown.

    ## Observation Space

    A `Dict` of numeric arrays (text is in `info`):

    | Key | Space | Meaning |
    |-----|-------|---------|
    | `user` | `Discrete(n_users)` | user index |
    | `history` | `Box(-1, n_items-1, (history_size,), int64)` | last items of the history (real log before the start time, then this session's picks), oldest first, right-aligned, `-1` = padding |
    | `history_length` | `Discrete(history_size+1)` | number of non-padding entries of `history` |
    | `last_slate` | `Box(-1, n_items-1, (K,), int64)` | the previous slate (`-1` before the first step) |
    | `last_choice` | `Discrete(K+2)` | previous pick: option `0..K-1`, `K` = skipped, `K+1` = no step yet |
    | `last_probs` | `Box(0, 1, (n_options,), float32)` | the simulator's choice distribution at the previous step (zeros before the first) |
    | `step` | `Discrete(max_steps+1)` | steps taken in this episode |
    | `skips` | `Discrete(patience+1)` | consecutive skips so far (always 0 without `allow_skip`) |

    `n_options` is K, or K+1 with the outside option (last).

    ## Rewards

    The simulator returns a probability for each option; the env samples the user's pick from
    it with `self.np_random` (never with the LLM's sampler, so a seeded rollout replays
    exactly). The reward is then computed from the pick:

    - `"click"` (default): 1 for an item, 0 for "none of these" (needs `allow_skip` to mean
      anything). `info["expected_click"] = 1 - p(skip)` is its expectation.
    - `"rank"`: reciprocal rank of the picked item in the slate (1, 1/2, ... 1/K); 0 on a skip.
      `info["expected_rank"]` is its expectation under the choice distribution.
    - `"rating"`: the expected 1-5 rating of the picked item from a follow-up query: the same
      user is shown "<item> -- I rate it r/5 (...)" for r = 1..5, once in ascending and once in
      descending order (cancels letter-position bias), and `sum_r r * p(r)` of the averaged
      distribution is the reward (0 on a skip). Costs a second simulator call per step.
    - a callable `f(outcome: StepOutcome) -> float` (see `usermirrorer.envs.rewards`).

    ## Simulator

    `model` picks the choice model: an LLM for `usermirrorer.sim.UserSimulator` (default
    `"smollm2-135m"`; `"usermirrorer-llama-3b"` / `"usermirrorer-qwen-3b"` are the paper's
    checkpoints; any local folder or hub id) on `backend` (`transformers`, `vllm`, `openai`),
    or a baseline (`"popularity"`, `"collaborative"`, `"random"`), or any object with
    `choice_probs(scenes) -> list[ChoiceResult]`. `mode="direct"` reads the letter
    distribution right away (one forward pass); `mode="decision"` first lets the LLM write
    `n_thoughts` first-person decision rationales (stimulus, knowledge, evaluation) and
    averages the letter distributions after each; the rationale is in `info["rationale"]`.

    Small LLMs prefer early option letters whatever the options say. With
    `debias_positions=True` each slate is also scored in reversed order (the outside option
    stays last) and the two distributions, mapped back to the slate order, are averaged: letter
    preferences cancel to first order, at the cost of a second scene per step (same user
    prefix, so mostly cached).

    The prompt is system + user profile + history + exposure list. Within an episode only the
    slate changes and the history only grows at its end: the history text is rendered once at
    reset and each pick is appended as a new line, so the transformers backend's KV-cache
    reuse (longest common token prefix) recomputes only the new line and the slate.

    ## Starting State

    A user is drawn uniformly among users with at least `min_history` interactions (or
    `options["user_id"]`, an external id string or an index). The start time is, with
    `start="random"`, drawn uniformly among the user's real interaction times after their
    first `min_history` ones and the end of their log (last interaction + `step_seconds`);
    with `start="end"`, always the end of their log; `options["start_time"]`
    (`"YYYY-MM-DD HH:MM:SS"` or unix seconds) overrides both. The history is the user's real
    interactions strictly before the start time; the prompt shows the last `history_window`
    of them (default: the domain strategy's maximum). Each step advances time by `step_seconds`.

    ## Episode End

    1. Termination: with `allow_skip`, the user leaves after `patience` consecutive skips.
    2. Truncation: `max_steps` steps were taken.

    A `step()` after either raises `gymnasium.error.ResetNeeded`: call `reset()` first
    (`RecVectorEnv` resets such sub-envs itself).

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> import usermirrorer  # registers usermirrorer/RecEnv-v0
    >>> env = gym.make("usermirrorer/RecEnv-v0", dataset="ml-100k", project_path="work",
    ...                model="popularity", exposure_size=5, allow_skip=True, reward="click")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> info["probs"], info["item_id"]
    ```

    | Parameter | Type | Default | Description |
    |-----------|------|---------|-------------|
    | `dataset` | str or RawDataset | `"ml-100k"` | dataset name under `project_path/raws` (see `usermirrorer preprocess`); a bundled one (`ml-100k`) missing there is converted into the user cache on first use |
    | `model` | str or choice model | `"smollm2-135m"` | simulator, see Simulator |
    | `exposure_size` | int | 5 | K, items per slate (K, plus 1 with `allow_skip`, at most 26) |
    | `project_path` | path | `"."` | folder holding `raws/` |
    | `backend` | str | `"transformers"` | LLM backend |
    | `mode` | str | `None` (= `sim_options.mode`, default `"direct"`) | `"direct"`, `"decision"` or `"likelihood"` (option texts scored by PMI; the outside option's text is scored the same way, and so is almost never picked: pass `model=QuantileOutsideOption(simulator, ds)` from `usermirrorer.sim.outside_option` to score it at the 0.9 quantile of catalog items instead, as the baselines do) |
    | `n_thoughts` | int | `None` (= 1) | decision-mode rationales per step |
    | `allow_skip` | bool | False | add the outside option "none of these" |
    | `patience` | int | 3 | consecutive skips before the user leaves |
    | `reward` | str or callable | `"click"` | `"click"`, `"rank"`, `"rating"` or `f(StepOutcome)` |
    | `max_steps` | int | 20 | truncation length |
    | `history_size` | int | 20 | length of the `history` observation |
    | `history_window` | int >= 1 | None | real history items shown in the prompt |
    | `min_history` | int | 3 | real interactions a user needs to be drawn |
    | `start` | str | `"random"` | `"random"` or `"end"`, see Starting State |
    | `step_seconds` | int | 3600 | time between steps |
    | `debias_positions` | bool | False | also score the reversed slate and average (see Simulator) |
    | `repeats` | str | `"raise"` | a repeated item in a slate: `"raise"` (`InvalidAction`) or `"fill"` (replaced by popular items, see Action Space) |
    | `users` | list of ids | None | restrict the drawn users |
    | `strategy` | DomainStrategy or name | None | text templates (default: the dataset's) |
    | `sim_options` | SimOptions or dict | None | simulator options (temperature, batch size ...) |
    | `backend_kwargs` | dict | None | passed to the backend (device, dtype, ...) |
    | `render_mode` | str | None | `"ansi"`: `render()` returns the scene, slate, probabilities and pick |

    `info` after a step: `probs`, `choice` (option index, K = skip), `skipped`, `item` (index,
    -1 on skip), `item_id`, `slate` (the item indices shown), `rationale` / `rationales` / `thought_probs` (decision mode),
    `scene` (the rendered scene: profile, history and option texts), `user_id`, `timestamp`,
    `expected_click`, `expected_rank`, `expected_rating` (rating mode).

    ## Vectorized environment

    ```python
    >>> envs = gym.make_vec("usermirrorer/RecEnv-v0", num_envs=8,
    ...                     vectorization_mode="vector_entry_point", model="smollm2-135m")
    ```
    gives `usermirrorer.envs.RecVectorEnv`: one simulator call per vector step for all
    sub-envs, next-step autoreset, and under the same seeds exactly the trajectories of the
    single envs (sub-env i seeded with `seed + i`).

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        dataset: str | RawDataset = "ml-100k",
        model: str | ChoiceModel = "smollm2-135m",
        exposure_size: int = 5,
        *,
        project_path: str | os.PathLike = ".",
        backend: str = "transformers",
        mode: str | None = None,
        n_thoughts: int | None = None,
        allow_skip: bool = False,
        patience: int = 3,
        reward: str | RewardFn = "click",
        max_steps: int = 20,
        history_size: int = 20,
        history_window: int | None = None,
        min_history: int = 3,
        start: str = "random",
        step_seconds: int = 3600,
        debias_positions: bool = False,
        repeats: str = "raise",
        users: Sequence[str] | None = None,
        strategy: DomainStrategy | str | None = None,
        sim_options: Any = None,
        backend_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ):
        _check_int("exposure_size", exposure_size, 1)
        _check_int("patience", patience, 1)
        _check_int("max_steps", max_steps, 1)
        _check_int("history_size", history_size, 1)
        _check_int("min_history", min_history, 0)
        _check_int("step_seconds", step_seconds, 0)
        if history_window is not None:
            _check_int("history_window", history_window, 1)
        if isinstance(users, (str, bytes)) or users is not None and not hasattr(users, "__iter__"):
            raise ConfigError(
                f"users must be a list of user ids, got {type(users).__name__} {users!r}; "
                f"for one user pass users=[{users!r}]"
            )
        n_options = exposure_size + int(bool(allow_skip))
        if n_options > MAX_OPTIONS:
            raise ConfigError(
                f"exposure_size={exposure_size}{' + 1 outside option' if allow_skip else ''} gives "
                f"{n_options} options, but options are lettered A..Z (at most {MAX_OPTIONS}); "
                f"use exposure_size <= {MAX_OPTIONS - int(bool(allow_skip))}"
            )
        if mode is not None and mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if start not in _START_MODES:
            raise ConfigError(f"start must be one of {list(_START_MODES)}, got {start!r}")
        if repeats not in REPEATS:
            raise ConfigError(f"repeats must be one of {list(REPEATS)}, got {repeats!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode={render_mode!r} is not supported; use one of {self.metadata['render_modes']} or None"
            )

        if isinstance(dataset, str):  # a bundled dataset missing here is read from the user cache
            project_path = locate_raws(project_path, dataset)
        self.ds = load_dataset(dataset, project_path)
        if self.ds.n_items < exposure_size:
            raise ConfigError(
                f"exposure_size={exposure_size} but dataset {self.ds.name!r} has only "
                f"{self.ds.n_items} items; use a smaller exposure_size"
            )
        self.strategy = (
            strategy
            if isinstance(strategy, DomainStrategy)
            else get_strategy(strategy or self.ds.name)
        )
        self.reward_name, self.reward_fn = resolve_reward(reward)
        self.model = load_choice_model(
            model,
            self.ds,
            backend=backend,
            mode=mode,
            n_thoughts=n_thoughts,
            sim_options=sim_options,
            backend_kwargs=backend_kwargs,
            project_path=None if isinstance(dataset, RawDataset) else project_path,
        )
        self.mode = mode or getattr(getattr(self.model, "options", None), "mode", None) or "direct"
        self.n_thoughts = n_thoughts

        self.exposure_size = int(exposure_size)
        self.allow_skip = bool(allow_skip)
        self.n_options = n_options
        self.patience = int(patience)
        self.max_steps = int(max_steps)
        self.history_size = int(history_size)
        self.history_window = int(history_window if history_window is not None else self.strategy.history_range[1])
        self.min_history = int(min_history)
        self.start = start
        self.step_seconds = int(step_seconds)
        self.debias_positions = bool(debias_positions)
        self.repeats = repeats
        self._fill_order: np.ndarray | None = None
        self.render_mode = render_mode
        self._candidate_users = self._eligible_users(users)

        n_items, k = self.ds.n_items, self.exposure_size
        self.action_space = (
            SlateSpace(n_items, k)
            if repeats == "raise"
            else spaces.MultiDiscrete(np.full(k, n_items, dtype=np.int64))
        )
        self.observation_space = spaces.Dict(
            {
                "user": spaces.Discrete(self.ds.n_users),
                "history": spaces.Box(-1, n_items - 1, (self.history_size,), np.int64),
                "history_length": spaces.Discrete(self.history_size + 1),
                "last_slate": spaces.Box(-1, n_items - 1, (k,), np.int64),
                "last_choice": spaces.Discrete(k + 2),
                "last_probs": spaces.Box(0.0, 1.0, (n_options,), np.float32),
                "step": spaces.Discrete(self.max_steps + 1),
                "skips": spaces.Discrete(self.patience + 1),
            }
        )
        self._user: int | None = None

    # ------------------------------------------------------------------------------------
    # gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode with a real user at a real point of their log (see Starting State).

        Args:
            seed: seeds ``self.np_random`` (user, start time and every later pick).
            options: ``user_id`` (external id string or index) and/or ``start_time``
                (``"YYYY-MM-DD HH:MM:SS"`` or unix seconds).

        Returns:
            ``(observation, info)``; info has ``user_id``, ``timestamp``, ``profile``,
            ``history_text`` and ``n_real_history``.
        """
        super().reset(seed=seed)
        if options is not None and not isinstance(options, dict):
            raise ConfigError(
                f"reset options must be a dict such as {{'user_id': ..., 'start_time': ...}}, "
                f"got {type(options).__name__} {options!r}"
            )
        options = dict(options or {})
        unknown = set(options) - {"user_id", "start_time"}
        if unknown:
            raise ConfigError(
                f"unknown reset option(s) {sorted(unknown)}; expected 'user_id' and/or 'start_time'"
            )
        user = self._pick_user(options.get("user_id"))
        now = self._pick_start(user, options.get("start_time"))
        rows = self.ds.rows_before(user, now)

        self._user = user
        self._start_time = now
        self._now = now
        self._history_items: list[int] = self.ds.inter_item[rows].tolist()
        shown = range(max(rows.start, rows.stop - self.history_window), rows.stop)
        self._real_history_text = (
            self.strategy.history(
                self.ds,
                self.ds.inter_item[shown.start : shown.stop],
                self.ds.inter_time[shown.start : shown.stop],
                [self.ds.behavior_of(r) for r in shown],
                now,
            )
            if len(shown)
            else ""
        )
        self._session_lines: list[str] = []
        self._steps = 0
        self._skips = 0
        self._done = False
        self._last_slate = np.full(self.exposure_size, -1, dtype=np.int64)
        self._last_choice = self.exposure_size + 1
        self._last_probs = np.zeros(self.n_options, dtype=np.float32)
        self._last_scene: Scene | None = None
        self._last_info: dict[str, Any] = {}
        info = {
            "user_id": str(self.ds.user_ids[user]),
            "timestamp": format_time(now),
            "profile": self.strategy.profile(self.ds, user),
            "history_text": self.history_text,
            "n_real_history": len(self._history_items),
        }
        return self._observation(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Show the slate ``action`` (K distinct item indices); the simulated user picks.

        Raises:
            InvalidAction: a repeated or out-of-range item, the wrong length, or no reset yet.
        """
        return simulate_steps([self], [action], self.model)[0]

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; create the env with render_mode='ansi'"
            )
            return None
        return self._render_ansi()

    # ------------------------------------------------------------------------------------
    # the pieces one step is made of (shared with RecVectorEnv, which batches the middle)

    @property
    def history_text(self) -> str:
        """The history block as the simulator reads it: real log, then this session's picks."""
        parts = ([self._real_history_text] if self._real_history_text else []) + self._session_lines
        if not parts:
            return self.strategy.history(self.ds, [], [], [], self._now)
        return "\n".join(parts)

    def validate_slate(self, action: Any) -> np.ndarray:
        """The action as an int64 slate, or :class:`InvalidAction` saying what is wrong."""
        if self._user is None:
            raise InvalidAction("step() called before reset(); call env.reset() first")
        if self._done:
            raise gym.error.ResetNeeded(
                "the episode has ended (terminated or truncated); call env.reset() before step()"
            )
        try:
            slate = np.asarray(action)
        except (TypeError, ValueError, OverflowError) as exc:  # ragged lists and the like
            raise InvalidAction(f"slate {action!r} is not an array of item indices: {exc}") from None
        k = self.exposure_size
        if slate.ndim != 1 or slate.shape[0] != k:
            raise InvalidAction(
                f"slate has shape {slate.shape}, expected ({k},): exactly {k} item indices (exposure_size)"
            )
        values = slate.tolist()  # exact Python numbers: checked before any int64 cast can wrap them
        integral = all(
            isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()
            for v in values
        )
        if not integral:
            raise InvalidAction(
                f"slate {values} must hold integer item indices, got dtype {slate.dtype}"
            )
        bad = [v for v in values if not 0 <= v < self.ds.n_items]
        if bad:
            raise InvalidAction(
                f"slate {values} has item indices {bad} outside 0..{self.ds.n_items - 1} "
                f"(dataset {self.ds.name!r} has {self.ds.n_items} items)"
            )
        slate = np.array([int(v) for v in values], dtype=np.int64)
        values, counts = np.unique(slate, return_counts=True)
        if (counts > 1).any():
            if self.repeats == "fill":
                return fill_repeats(slate, self.fill_order)
            raise InvalidAction(
                f"slate {slate.tolist()} repeats item(s) {values[counts > 1].tolist()}; "
                f"a slate must hold {k} distinct items. A policy that samples each slot on its own "
                "(Stable-Baselines3, TorchRL MultiDiscrete heads) repeats items by chance: create "
                "the env with repeats='fill' to replace repeats by popular items"
            )
        return slate

    @property
    def fill_order(self) -> np.ndarray:
        """Item indices in the order repeated slots are filled: most interactions first."""
        if self._fill_order is None:
            self._fill_order = np.argsort(-self.ds.item_popularity(), kind="stable")
        return self._fill_order

    def build_scene(self, slate: np.ndarray) -> Scene:
        """The scene the simulator reads for ``slate`` at the current time (DESIGN.md §2 record,
        without a real item, plus ``scene_id``, ``history_item_ids`` and ``outside_option``)."""
        ds, user, now = self.ds, self._user, self._now
        options = [self.strategy.exposure_item(ds, int(i), now) for i in slate]
        if self.allow_skip:
            options.append(f"None of these {self.strategy.item_noun}s: I skip this list")
        return render_scene(
            dataset=ds.name,
            scene_id=f"{ds.user_ids[user]}@{format_time(self._start_time)}#{self._steps}",
            user_id=str(ds.user_ids[user]),
            timestamp=format_time(now),
            impression_list=[str(ds.item_ids[i]) for i in slate],
            history_item_ids=[str(ds.item_ids[i]) for i in self._history_items],
            outside_option=self.allow_skip,
            profile=self.strategy.profile(ds, user),
            history=self.history_text,
            action_list=options,
        )

    def sample_choice(self, probs: np.ndarray) -> int:
        """Draw the user's pick from ``probs`` with this env's generator."""
        return int(self.np_random.choice(len(probs), p=probs))

    def reward_of(
        self, slate: np.ndarray, scene: Scene, probs: np.ndarray, choice: int, rating_probs: np.ndarray | None
    ) -> float:
        """The reward of a pick, changing nothing (a step computes every reward before it commits).

        Raises:
            ConfigError: the reward function returned something that is not a finite number.
        """
        skipped = choice == self.exposure_size
        outcome = StepOutcome(
            slate=slate.copy(),
            probs=probs.copy(),
            choice=choice,
            skipped=skipped,
            item=None if skipped else int(slate[choice]),
            user=self._user,
            timestamp=self._now,
            scene=scene,
            rating_probs=rating_probs,
        )
        value = self.reward_fn(outcome)
        try:
            reward = float(value)
        except (TypeError, ValueError):
            reward = float("nan")
        if isinstance(value, (str, bytes, bool)) or not np.isfinite(reward):
            raise ConfigError(
                f"reward function {self.reward_name!r} returned {value!r} ({type(value).__name__}); "
                "expected a finite number f(outcome: StepOutcome) -> float"
            )
        return reward

    def commit(
        self,
        slate: np.ndarray,
        scene: Scene,
        result: Any,
        probs: np.ndarray,
        choice: int,
        rating_probs: np.ndarray | None,
        reward: float,
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply a pick whose ``reward`` is known: history, time, counters; return the step tuple."""
        k = self.exposure_size
        skipped = choice == k
        item = None if skipped else int(slate[choice])

        if skipped:
            self._skips += 1
        else:
            self._skips = 0
            self._history_items.append(item)
            self._session_lines.append(
                self.strategy.history_entry(self.ds, item, self._now, {}, self._now)
            )
        self._steps += 1
        self._now += self.step_seconds
        self._last_slate = slate.copy()
        self._last_choice = choice
        self._last_probs = probs.astype(np.float32)
        terminated = bool(self.allow_skip and self._skips >= self.patience)
        truncated = bool(self._steps >= self.max_steps and not terminated)
        self._done = terminated or truncated

        rationales = [str(r) for r in (getattr(result, "rationales", None) or [])]
        ranks = 1.0 / np.arange(1, k + 1)
        info: dict[str, Any] = {
            "probs": probs.copy(),
            "choice": choice,
            "skipped": skipped,
            "item": -1 if item is None else item,
            "item_id": None if item is None else str(self.ds.item_ids[item]),
            "slate": slate.copy(),
            "rationale": rationales[0] if rationales else "",
            "rationales": rationales,
            "scene": scene,
            "user_id": scene["user_id"],
            "timestamp": scene["timestamp"],
            "expected_click": float(probs[:k].sum()),
            "expected_rank": float(np.dot(probs[:k], ranks)),
        }
        thought_probs = getattr(result, "thought_probs", None)
        if thought_probs is not None:
            info["thought_probs"] = np.asarray(thought_probs, dtype=np.float64)
        if rating_probs is not None:
            info["rating_probs"] = rating_probs.copy()
            info["expected_rating"] = expected_rating(rating_probs)
        self._last_scene = scene
        self._last_info = info
        return self._observation(), reward, terminated, truncated, info

    # ------------------------------------------------------------------------------------
    # helpers

    def _eligible_users(self, users: Sequence[str] | None) -> np.ndarray:
        counts = np.diff(self.ds.user_ptr)
        if users is not None:
            index = self.ds.user_index
            missing = [u for u in users if str(u) not in index]
            if missing:
                raise ConfigError(
                    f"users {missing[:5]} are not in dataset {self.ds.name!r}; pass external user ids "
                    f"(e.g. {self.ds.user_ids[:3].tolist()})"
                )
            chosen = np.array(sorted({index[str(u)] for u in users}), dtype=np.int64)
        else:
            chosen = np.arange(self.ds.n_users, dtype=np.int64)
        eligible = chosen[counts[chosen] >= max(self.min_history, 1)]
        if eligible.size == 0:
            raise ConfigError(
                f"no user of dataset {self.ds.name!r} has at least min_history={self.min_history} "
                "interactions; lower min_history or pass other users"
            )
        return eligible

    def _pick_user(self, requested: Any) -> int:
        if requested is None:
            return int(self._candidate_users[self.np_random.integers(len(self._candidate_users))])
        if isinstance(requested, (int, np.integer)) and not isinstance(requested, bool):
            if not 0 <= requested < self.ds.n_users:
                raise ConfigError(
                    f"options['user_id']={requested} is not a user index 0..{self.ds.n_users - 1}"
                )
            return int(requested)
        key = str(requested)
        if key not in self.ds.user_index:
            raise ConfigError(
                f"options['user_id']={requested!r} is not a user of dataset {self.ds.name!r} "
                f"(ids look like {self.ds.user_ids[:3].tolist()})"
            )
        return self.ds.user_index[key]

    def _pick_start(self, user: int, requested: Any) -> int:
        rows = self.ds.user_rows(user)
        n = rows.stop - rows.start
        end_of_log = int(self.ds.inter_time[rows.stop - 1]) + self.step_seconds if n else 0
        if requested is not None:
            if isinstance(requested, str):
                try:
                    return parse_time(requested)
                except ValueError as exc:
                    raise ConfigError(f"options['start_time']: {exc}") from None
            number = isinstance(requested, (int, float, np.integer, np.floating)) and not isinstance(requested, bool)
            if not number or not _EARLIEST <= requested <= _LATEST:
                raise ConfigError(
                    f"options['start_time'] must be 'YYYY-MM-DD HH:MM:SS' or unix seconds from "
                    f"{format_time(_EARLIEST)} to {format_time(_LATEST)}, got {requested!r}"
                )
            return int(requested)
        if self.start == "end" or n == 0:
            return end_of_log
        position = int(self.np_random.integers(min(self.min_history, n), n + 1))
        return end_of_log if position == n else int(self.ds.inter_time[rows.start + position])

    def _observation(self) -> dict[str, Any]:
        history = np.full(self.history_size, -1, dtype=np.int64)
        recent = self._history_items[-self.history_size :]
        if recent:
            history[-len(recent) :] = recent
        return {
            "user": np.int64(self._user),
            "history": history,
            "history_length": np.int64(len(recent)),
            "last_slate": self._last_slate.copy(),
            "last_choice": np.int64(self._last_choice),
            "last_probs": self._last_probs.copy(),
            "step": np.int64(self._steps),
            "skips": np.int64(min(self._skips, self.patience)),
        }

    def _render_ansi(self) -> str:
        if self._user is None:
            return "(call reset() first)"
        ds = self.ds
        lines = [
            f"user {ds.user_ids[self._user]} | step {self._steps}/{self.max_steps} | "
            f"{format_time(self._now)} | skips {self._skips}/{self.patience if self.allow_skip else '-'}",
            "profile: " + self.strategy.profile(ds, self._user).replace("\n", "; "),
            "history (latest last):",
        ]
        lines += ["  " + line for line in self.history_text.split("\n")[-5:]]
        if self._last_scene is None:
            lines.append("(no slate shown yet)")
            return "\n".join(lines)
        info = self._last_info
        lines.append("last slate:")
        for position, (text, p) in enumerate(
            zip(self._last_scene["text"]["action_list"], info["probs"])
        ):
            mark = "<- picked" if position == info["choice"] else ""
            bar = "#" * int(round(float(p) * 30))
            lines.append(f"  [{chr(65 + position)}] {p:6.1%} {bar:<30} {text[:70]} {mark}")
        if info.get("rationale"):
            lines.append("rationale: " + info["rationale"].strip().replace("\n", " ")[:300])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"RecEnv(dataset={self.ds.name!r}, model={_model_name(self.model)}, K={self.exposure_size}, "
            f"allow_skip={self.allow_skip}, reward={self.reward_name!r}, mode={self.mode!r})"
        )


# ---------------------------------------------------------------------------------------------
# one step for a batch of envs sharing a choice model


def simulate_steps(
    envs: Sequence[RecEnv], actions: Sequence[Any], model: ChoiceModel
) -> list[tuple[dict[str, Any], float, bool, bool, dict[str, Any]]]:
    """Step several envs that share ``model`` with one simulator call (two in rating mode).

    Each env renders its scene and samples its pick with its own generator, in env order, so
    the result equals stepping each env alone with the same seeds.
    """
    slates = [env.validate_slate(a) for env, a in zip(envs, actions, strict=True)]
    # Nothing is committed until every outcome is known: if the model or a reward raises, no
    # env has moved and every generator is rewound, so a retry gives the same step.
    states = [env.np_random.bit_generator.state for env in envs]
    try:
        pending = _outcomes(envs, slates, model)
    except BaseException:
        for env, state in zip(envs, states):
            env.np_random.bit_generator.state = state
        raise
    return [env.commit(*args) for env, args in zip(envs, pending)]


def _outcomes(envs: Sequence[RecEnv], slates: list[np.ndarray], model: ChoiceModel) -> list[tuple]:
    """Per env the arguments of :meth:`RecEnv.commit` (scene, choice, reward ...), changing no env."""
    scenes = [env.build_scene(s) for env, s in zip(envs, slates)]
    kwargs: dict[str, Any] = {}
    if any(env.mode == "decision" for env in envs):
        # The thought sampler needs a seed; each env draws one so replays are exact. A batch
        # is generated under one seed derived from all of them.
        seeds = [int(env.np_random.integers(2**31)) for env in envs]
        kwargs["seed"] = seeds[0] if len(seeds) == 1 else zlib.crc32(np.asarray(seeds).tobytes())
        kwargs["mode"] = "decision"
        if envs[0].n_thoughts is not None:
            kwargs["n_thoughts"] = envs[0].n_thoughts
    queries: list[Scene] = []
    for env, scene in zip(envs, scenes):
        queries.append(scene)
        if env.debias_positions:
            queries.append(reversed_scene(scene, env.exposure_size))
    answers = iter(_choice_probs(model, queries, **kwargs))
    results, probs_list = [], []
    for env, scene in zip(envs, scenes):
        result = next(answers)
        probs = _checked_probs(result, env.n_options, scene)
        if env.debias_positions:
            reverse = _checked_probs(next(answers), env.n_options, scene)
            k = env.exposure_size
            probs = probs.copy()
            probs[:k] = 0.5 * (probs[:k] + reverse[:k][::-1])
            probs[k:] = 0.5 * (probs[k:] + reverse[k:])
        results.append(result)
        probs_list.append(probs)
    choices = [env.sample_choice(p) for env, p in zip(envs, probs_list)]

    rating = [None] * len(envs)
    queries: list[tuple[int, list[Scene]]] = []
    for i, (env, slate, choice) in enumerate(zip(envs, slates, choices)):
        if env.reward_name == "rating" and choice < env.exposure_size:
            item = int(slate[choice])
            text = scenes[i]["text"]["action_list"][choice]
            queries.append((i, rating_scenes(scenes[i], str(env.ds.item_ids[item]), text)))
    if queries:
        flat = [scene for _, group in queries for scene in group]
        answers = _choice_probs(model, flat)
        offset = 0
        for i, group in queries:
            rating[i] = rating_distribution(answers[offset : offset + len(group)], group)
            offset += len(group)
    return [
        (slate, scene, result, probs, choice, r, env.reward_of(slate, scene, probs, choice, r))
        for env, slate, scene, result, probs, choice, r in zip(
            envs, slates, scenes, results, probs_list, choices, rating
        )
    ]


def _choice_probs(model: ChoiceModel, scenes: list[Scene], **kwargs: Any) -> list[Any]:
    results = model.choice_probs(scenes, **kwargs)
    if not isinstance(results, list) or len(results) != len(scenes):
        raise BackendError(
            f"choice model {_model_name(model)} returned {type(results).__name__} of length "
            f"{len(results) if hasattr(results, '__len__') else '?'} for {len(scenes)} scenes; "
            "choice_probs(list_of_scenes) must return one ChoiceResult per scene, in order"
        )
    return results


def _checked_probs(result: Any, n_options: int, scene: Scene) -> np.ndarray:
    probs = np.asarray(getattr(result, "probs", None), dtype=np.float64)
    if (
        probs.shape != (n_options,)
        or not np.all(np.isfinite(probs))
        or (probs < 0).any()
        or probs.sum() <= 0
    ):
        raise BackendError(
            f"the choice model returned probs {probs!r} for scene {scene.get('scene_id')}; "
            f"expected {n_options} non-negative finite numbers (one per option)"
        )
    return probs / probs.sum()


def _model_name(model: Any) -> str:
    return getattr(model, "name", None) or type(model).__name__


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
