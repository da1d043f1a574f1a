"""``ServedVectorEnv``: N worker processes of ``RecVectorEnv`` that score through one server (DESIGN.md §9).

An RL run with many simulated users keeps one model loaded, in a scoring service —
``vllm serve`` on a GPU node, ``usermirrorer serve`` (:mod:`usermirrorer.sim.serving`) on CPU —
and runs the environments in worker processes that all call it through the ``openai``
backend. The service batches the requests of every worker into shared forward passes; the
workers do the rest of a step (rendering scenes, rewards, the user's draw) in parallel.

:class:`ServedVectorEnv` is a gymnasium ``VectorEnv`` (like gymnasium's ``AsyncVectorEnv``, one
pipe per worker process): ``workers`` processes, each holding a
:class:`~usermirrorer.envs.vector.RecVectorEnv` of ``envs_per_worker`` sub-envs. Global sub-env
``j`` is seeded with ``seed + j`` on ``reset(seed=seed)``, exactly as in
``RecVectorEnv(num_envs=workers * envs_per_worker)``, so under the same seeds the two give the
same trajectories (actions, choices, rewards; probabilities up to the float rounding between
batched forward passes of different batch compositions).

    >>> envs = ServedVectorEnv(workers=4, envs_per_worker=8, dataset="ml-100k", model="smollm2-135m",
    ...                        backend="openai", backend_kwargs={"base_url": "http://127.0.0.1:8000/v1",
    ...                                                          "vllm_extensions": True})  # doctest: +SKIP

Workers start with the ``spawn`` method (torch and threads do not survive ``fork``), so a
script that builds one needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from usermirrorer.envs.vector import RecVectorEnv, sub_env_seeds
from usermirrorer.errors import BackendError, ConfigError

__all__ = ["ServedVectorEnv"]


class ServedVectorEnv(VectorEnv):
    """``workers`` processes of ``RecVectorEnv(num_envs=envs_per_worker)`` behind one VectorEnv.

    Args:
        workers: worker processes.
        envs_per_worker: sub-envs in each worker's ``RecVectorEnv`` (sent to the server as
            concurrent requests, batched there with the other workers' requests).
        start_timeout_s: how long a worker may take to build its envs.
        **kwargs: every :class:`~usermirrorer.envs.RecEnv` argument; for a shared server
            ``backend="openai"`` and ``backend_kwargs={"base_url": ..., "vllm_extensions": True}``
            (``vllm_extensions`` for ``vllm serve`` and ``usermirrorer serve``: the letters come
            back by token id, never floored). Must be picklable (a dataset name or a
            ``RawDataset``, a model name).

    Raises:
        ConfigError: bad worker counts.
        BackendError: a worker failed to start (its error and traceback are in the message).
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, workers: int = 2, envs_per_worker: int = 1, *, start_timeout_s: float = 300.0, **kwargs: Any):
        for name, value in (("workers", workers), ("envs_per_worker", envs_per_worker)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        kwargs.pop("render_mode", None)
        self.workers, self.envs_per_worker = workers, envs_per_worker
        self.num_envs = workers * envs_per_worker
        ctx = mp.get_context("spawn")
        self._pipes, self._procs = [], []
        self._closed = False
        for w in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, envs_per_worker, kwargs), name=f"usermirrorer-env-{w}",
                               daemon=True)
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)
        try:
            spaces = [self._receive(w, start_timeout_s) for w in range(workers)]
        except BaseException:
            self.close()
            raise
        self.single_observation_space, self.single_action_space = spaces[0]
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def _receive(self, w: int, timeout_s: float | None = None) -> Any:
        pipe = self._pipes[w]
        if timeout_s is not None and not pipe.poll(timeout_s):
            raise BackendError(f"env worker {w} did not answer within {timeout_s:g} s")
        try:
            kind, payload = pipe.recv()
        except EOFError:
            raise BackendError(f"env worker {w} died (exit code {self._procs[w].exitcode}); is the scoring "
                               "server reachable from it?") from None
        if kind == "error":
            exc, trace = payload
            if isinstance(exc, Exception):
                raise exc from BackendError(f"in env worker {w}:\n{trace}")
            raise BackendError(f"env worker {w} failed:\n{trace}")
        return payload

    def _ask_all(self, messages: Sequence[tuple[str, Any]]) -> list[Any]:
        for pipe, message in zip(self._pipes, messages):
            pipe.send(message)
        # every worker answers before an error is raised, so the pipes stay in step
        answers, error = [], None
        for w in range(self.workers):
            try:
                answers.append(self._receive(w))
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return answers

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every sub-env; ``seed`` int -> global sub-env ``j`` gets ``seed + j`` (as RecVectorEnv)."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        seeds = sub_env_seeds(seed, self.num_envs)
        m = self.envs_per_worker
        answers = self._ask_all([("reset", (seeds[w * m:(w + 1) * m], options)) for w in range(self.workers)])
        observations = [o for obs, _ in answers for o in obs]
        infos: dict[str, Any] = {}
        for j, info in enumerate(i for _, singles in answers for i in singles):
            infos = self._add_info(infos, info, j)
        return self._stack(observations), infos

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One slate per sub-env (shape ``(num_envs, K)``), sent to the workers in slices."""
        actions = np.asarray(actions)
        if actions.ndim != 2 or actions.shape[0] != self.num_envs:
            raise ConfigError(f"actions have shape {actions.shape}, expected ({self.num_envs}, K): one slate per sub-env")
        m = self.envs_per_worker
        answers = self._ask_all([("step", actions[w * m:(w + 1) * m]) for w in range(self.workers)])
        observations = [o for a in answers for o in a[0]]
        rewards = np.concatenate([a[1] for a in answers])
        terminated = np.concatenate([a[2] for a in answers])
        truncated = np.concatenate([a[3] for a in answers])
        infos: dict[str, Any] = {}
        for j, info in enumerate(i for a in answers for i in a[4]):
            infos = self._add_info(infos, info, j)
        return self._stack(observations), rewards, terminated, truncated, infos

    def _stack(self, observations: list[Any]) -> dict[str, np.ndarray]:
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, observations, out)

    def close(self, **kwargs: Any) -> None:
        """Stop the workers (each closes its envs)."""
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes:
            try:
                pipe.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self._pipes:
            pipe.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ServedVectorEnv(workers={self.workers}, envs_per_worker={self.envs_per_worker})"


def _singles(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A vector env's ``infos`` back into one info dict per sub-env (gymnasium's ``_key`` masks)."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}", np.ones(n, dtype=bool))
        parts = _singles(value, n) if isinstance(value, dict) else None
        for i in range(n):
            if not mask[i]:
                continue
            item = parts[i] if parts is not None else value[i]
            # typed arrays hand out numpy scalars: back to Python, so the parent's arrays get
            # the dtypes RecVectorEnv's own would have
            out[i][key] = item.item() if isinstance(item, np.generic) else item
    return out


def _worker(pipe: Any, num_envs: int, kwargs: dict[str, Any]) -> None:
    """One worker process: a RecVectorEnv answering reset/step/close over ``pipe``."""
    try:
        env = RecVectorEnv(num_envs=num_envs, **kwargs)
        pipe.send(("ok", (env.single_observation_space, env.single_action_space)))
    except Exception as exc:
        pipe.send(("error", (_picklable(exc), traceback.format_exc())))
        return
    space = env.observation_space  # iterate() splits a batched observation by the batched space
    try:
        while True:
            command, payload = pipe.recv()
            try:
                if command == "close":
                    break
                if command == "reset":
                    seeds, options = payload
                    obs, infos = env.reset(seed=seeds, options=options)
                    pipe.send(("ok", (list(iterate(space, obs)), _singles(infos, num_envs))))
                elif command == "step":
                    obs, rewards, terminated, truncated, infos = env.step(payload)
                    pipe.send(("ok", (list(iterate(space, obs)), rewards, terminated, truncated,
                                      _singles(infos, num_envs))))
            except Exception as exc:
                pipe.send(("error", (_picklable(exc), traceback.format_exc())))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        env.close()
        pipe.close()


def _picklable(exc: Exception) -> Exception | None:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return None
