"""Ray Data as the engine of the offline stages (DESIGN.md §9): chunks in, records out, on actors.

Every offline stage (``decisions``, ``probs``, ``eval``, ``scenes``) already has a per-chunk
function: scenes (or interaction rows) in, records out, no file IO inside. :class:`RayEngine`
runs such a function as a Ray Data ``map_batches`` step over a pool of ``workers`` actors.
Each actor receives the function once, calls its ``load()`` (the model or sampler is built
there, once per actor, never per batch) and then answers chunks one at a time; the driver
iterates the results **in order of completion** and hands each chunk's records to the stage's
own writer as it arrives. So the stage's resume logic stays the only one there is: the writer
keys records by scene id, a re-run skips finished ids, and a job killed midway keeps every
chunk that reached the driver.

Why not ``ray.data.llm``: its processors generate text with a vLLM engine (GPU) and return the
text; the stages need option-letter log-probabilities restricted to the K letters, decision
thoughts cut before ``Behavior: [``, per-chunk seeds and the transformers backend on CPU. So the
actors hold our own backends (transformers, or vLLM on a GPU node via ``gpus_per_worker``).

Chunks travel as JSON text, not as Arrow columns: scene records are nested and ragged (option
lists of different lengths, thoughts), which Arrow would have to infer a schema for, and JSON
round-trips Python floats exactly, so a record computed on an actor is byte-identical to the
same record computed in process with the same torch thread count. (Each actor gets its share
of the CPUs as threads; fp32 sums split over a different number of threads round differently,
~1e-9 in a probability with torch 2.13, so a 2-thread driver and 1-thread actors agree to that.)

``ray`` is imported inside the functions that need it (``pip install 'usermirrorer[ray]'``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from usermirrorer.errors import ConfigError, MissingDependency, UserMirrorerError

__all__ = ["ENGINES", "ChunkFunction", "RayEngine", "check_shippable", "in_process", "import_ray"]

ENGINES = ("local", "ray")


class ChunkFunction(Protocol):
    """A stage's per-chunk function: picklable, ``load()`` builds its model, then chunks in, records out."""

    def load(self) -> None: ...

    def __call__(self, chunk: list[dict[str, Any]], chunk_index: int) -> list[dict[str, Any]]: ...


def import_ray() -> Any:
    """The ``ray`` module, or :class:`~usermirrorer.errors.MissingDependency` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra has no Dataset)
    except ImportError as exc:
        raise MissingDependency("ray[data]", "ray") from exc
    return ray


def check_shippable(ready: Any, engine: RayEngine | None, what: str = "simulator",
                    instead: str = "pass model= and backend= instead of simulator=") -> None:
    """Refuse a ready model object (``ready``) with a Ray engine: each actor builds its own model.

    Raises:
        ConfigError: both were given; says to pass ``instead`` or drop the engine.
    """
    if ready is not None and engine is not None:
        raise ConfigError(f"a ready {what} object cannot be shipped to Ray actors (each actor loads its own "
                          f"model); {instead}, or drop engine=")


def in_process(process: ChunkFunction, chunks: Sequence[tuple[int, list[dict[str, Any]]]]
               ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """The single-process engine: each chunk in turn, in the caller's process."""
    for ci, chunk in chunks:
        yield ci, process(chunk, ci)


@dataclass(frozen=True)
class RayEngine:
    """Run a stage's chunks on a pool of Ray actors (Ray Data ``map_batches``).

    Args:
        address: the Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``);
            None: the one this process already joined, else Ray's default (``$RAY_ADDRESS``
            or a cluster started with ``ray start`` on this machine, else a new local one).
        workers: actors in the pool, each holding one model.
        gpus_per_worker: GPUs each actor reserves (vLLM or transformers on CUDA); 0 on CPU.
        progress: show Ray Data's progress bars.
    """

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    progress: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"--workers must be an integer >= 1, got {self.workers!r}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")

    def map_chunks(self, process: ChunkFunction, chunks: Sequence[tuple[int, list[dict[str, Any]]]]
                   ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(chunk index, records)`` for every chunk, in order of completion.

        Raises:
            the stage's own error (:class:`~usermirrorer.errors.UserMirrorerError`) when an
            actor raised one; Ray's error otherwise.
        """
        if not chunks:
            return
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            _init(ray, self.address)
        ctx = ray.data.DataContext.get_current()
        # the context is the process's: set for this run, restored after it
        saved = (ctx.enable_progress_bars, ctx.execution_options.preserve_order,
                 getattr(ctx, "raise_original_map_exception", None))
        data_log = logging.getLogger("ray.data")
        saved_level = data_log.level
        try:
            ctx.enable_progress_bars = self.progress
            if not self.progress:
                data_log.setLevel(logging.WARNING)  # no "Dataset ... execution finished" lines either
            # completion order: a slow chunk never holds back the ones that finished after it
            ctx.execution_options.preserve_order = False
            if saved[2] is not None:
                ctx.raise_original_map_exception = True  # our error, not Ray's UserCodeException
            items = [{"ci": int(ci), "chunk": json.dumps(chunk)} for ci, chunk in chunks]
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            # The actors share the cluster's CPUs: never ask for more than it has (a fixed pool
            # would wait forever), and give each actor's torch as many threads as its share.
            per_actor = cpus / self.workers
            threads = max(1, int(per_actor))
            data = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _ChunkActor, fn_constructor_kwargs={"process": process, "threads": threads}, batch_size=1,
                batch_format="numpy",
                concurrency=self.workers, num_cpus=per_actor, num_gpus=self.gpus_per_worker or None,
            )
            for row in _unwrapped(data.iter_rows()):
                yield int(row["ci"]), json.loads(str(row["records"]))
        finally:
            ctx.enable_progress_bars, ctx.execution_options.preserve_order = saved[:2]
            if saved[2] is not None:
                ctx.raise_original_map_exception = saved[2]
            data_log.setLevel(saved_level)
            if started_here:
                ray.shutdown()


def _init(ray: Any, address: str | None) -> None:
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "WARNING", "configure_logging": True}
    if address is not None:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"could not join the Ray cluster at --ray-address {address!r} ({exc}); check the "
                          "address (`ray status` on the head node prints it) or leave it out for a local run") from None


def _unwrapped(rows: Iterator[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Re-raise a stage error raised inside an actor as itself, not as Ray's wrapper."""
    try:
        yield from rows
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:
            # Ray's RayTaskError(ConfigError) is both; its .cause is the actor's own exception
            inner = getattr(cause, "cause", None)
            if isinstance(inner, BaseException):
                cause = inner
                continue
            if isinstance(cause, UserMirrorerError):
                raise cause from None
            cause = cause.__cause__
        raise


class _ChunkActor:
    """One Ray actor: builds the stage's model once, then answers one chunk per call."""

    def __init__(self, process: ChunkFunction, threads: int = 1):
        # set before the model's first torch import in load(): torch sizes its pool from it
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:  # already imported by something the worker loaded
            sys.modules["torch"].set_num_threads(threads)
        self.process = process
        self.failed: UserMirrorerError | None = None
        try:
            self.process.load()
        except UserMirrorerError as exc:
            # Raised from the first call instead: Ray hands the driver a failed task's exception
            # itself, but of a failed actor creation only its text.
            self.failed = exc

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        if self.failed is not None:
            raise self.failed
        cis, records = [], []
        for ci, payload in zip(batch["ci"], batch["chunk"]):
            cis.append(int(ci))
            records.append(json.dumps(self.process(json.loads(str(payload)), int(ci))))
        return {"ci": cis, "records": records}
