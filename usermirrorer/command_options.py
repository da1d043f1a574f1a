"""Argument groups shared by several subcommands (the LLM stages ``decisions`` and ``probs``,
the vLLM engine settings, the ``--engine ray`` scale-out of ``decisions``/``probs``/``eval``/``scenes``)."""

from __future__ import annotations

import argparse
from typing import Any

from usermirrorer.data_pipeline.ray_engine import ENGINES, RayEngine
from usermirrorer.data_pipeline.training.stage import VERSIONS
from usermirrorer.errors import ConfigError

__all__ = ["INTERRUPTED_RESUMES", "add_llm_stage_arguments", "add_batch_arguments", "check_batch_arguments",
           "add_vllm_engine_arguments", "vllm_engine_kwargs", "backend_kwargs_from_args",
           "add_engine_arguments", "engine_from_args"]


# What `usermirrorer <command>` prints on Ctrl-C when the command appends and resumes.
INTERRUPTED_RESUMES = "interrupted; finished records are kept and a re-run resumes"


def add_llm_stage_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``decisions`` and ``probs``."""
    p.set_defaults(interrupted=INTERRUPTED_RESUMES)
    p.add_argument("--dataset", required=True, help="dataset name: reads <project>/datasets/<D>_train.jsonl")
    p.add_argument("--project-path", required=True, help="working directory (DESIGN §2 layout)")
    p.add_argument("--model", required=True, help="registry name (smollm2-135m, tiny-random, ...), folder or hub id")
    p.add_argument("--version", required=True, choices=VERSIONS, help="which decisions file: strong or weak")
    p.add_argument("--backend", default="transformers", choices=("transformers", "vllm", "openai"))
    p.add_argument("--chunk-size", type=int, default=4, help="scenes per backend call and per flush to disk")
    p.add_argument("--limit", type=int, help="only the first N train scenes")
    p.add_argument("--dtype", help="transformers backend: torch dtype (e.g. bfloat16, float32)")
    p.add_argument("--base-url", help="openai backend: server URL")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--fresh", action="store_true",
                   help="delete this stage's output and start over (needed after changing the model or options)")
    add_vllm_engine_arguments(p)
    add_engine_arguments(p)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine local|ray``, ``--ray-address``, ``--workers``, ``--gpus-per-worker``."""
    g = p.add_argument_group(
        "scale-out (pip install 'usermirrorer[ray]')",
        "--engine ray runs the chunks as a Ray Data map_batches step on a pool of actors, each loading its "
        "own model (scenes: its own sampler). decisions, probs and eval append records as chunks finish, so "
        "a re-run resumes exactly as with --engine local.")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (default); ray: a pool of Ray actors")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join (auto, host:6379, ray://host:10001); default: $RAY_ADDRESS, a "
                        "`ray start` cluster on this machine, else a new local one")
    g.add_argument("--workers", type=int, metavar="N", help="Ray actors, each with its own model (default 1)")
    g.add_argument("--gpus-per-worker", type=float, metavar="F",
                   help="GPUs each actor reserves (vLLM / CUDA backends on a GPU cluster; default 0)")


def engine_from_args(args: argparse.Namespace) -> RayEngine | None:
    """The :class:`~usermirrorer.data_pipeline.ray_engine.RayEngine` the flags ask for (None: local).

    Raises:
        ConfigError: ``--ray-address``, ``--workers`` or ``--gpus-per-worker`` without ``--engine ray``.
    """
    given = [flag for flag, name in (("--ray-address", "ray_address"), ("--workers", "workers"),
                                     ("--gpus-per-worker", "gpus_per_worker"))
             if getattr(args, name, None) is not None]
    if getattr(args, "engine", "local") != "ray":
        if given:
            raise ConfigError(f"{', '.join(given)} set(s) up the Ray engine, but --engine is "
                              f"{getattr(args, 'engine', 'local')!r}; add --engine ray or drop them")
        return None
    return RayEngine(address=args.ray_address, workers=args.workers if args.workers is not None else 1,
                     gpus_per_worker=args.gpus_per_worker or 0.0,
                     progress=not getattr(args, "no_progress", False))


def add_vllm_engine_arguments(p: argparse.ArgumentParser) -> None:
    """vLLM's parallel and memory settings, passed to ``vllm.LLM`` (``--backend vllm`` only)."""
    g = p.add_argument_group("vLLM engine (--backend vllm; see vLLM's EngineArgs)")
    g.add_argument("--tensor-parallel-size", type=int, metavar="N", help="GPUs per model replica")
    g.add_argument("--data-parallel-size", type=int, metavar="N", help="model replicas (vLLM's data parallelism)")
    g.add_argument("--gpu-memory-utilization", type=float, metavar="F",
                   help="share of GPU memory vLLM may take (CPU build: of RAM)")
    g.add_argument("--no-prefix-caching", action="store_true",
                   help="turn automatic prefix caching off (on by default: every prompt shares the system prompt)")


def vllm_engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The vLLM engine settings given on the command line.

    Raises:
        ConfigError: one was given with a backend other than ``vllm``.
    """
    kwargs: dict[str, Any] = {}
    for name in ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization"):
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    if getattr(args, "no_prefix_caching", False):
        kwargs["enable_prefix_caching"] = False
    if kwargs and getattr(args, "backend", None) != "vllm":
        flags = ", ".join("--" + k.replace("_", "-").replace("enable-prefix-caching", "no-prefix-caching")
                          for k in kwargs)
        raise ConfigError(f"{flags} set(s) the vLLM engine, but --backend is {getattr(args, 'backend', None)!r}; "
                          "add --backend vllm or drop them")
    return kwargs


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """``--batch-out`` / ``--batch-in`` of the OpenAI Batch route (``--backend openai``)."""
    p.add_argument("--batch-out", metavar="FILE",
                   help="openai backend: write OpenAI Batch requests for the unfinished scenes here, call no server")
    p.add_argument("--batch-in", metavar="FILE",
                   help="openai backend: read a finished OpenAI Batch output file and append its results")


def check_batch_arguments(args: argparse.Namespace) -> None:
    if (args.batch_out or args.batch_in) and args.backend != "openai":
        raise ConfigError(f"--batch-out/--batch-in go with --backend openai, got --backend {args.backend}")
    if args.batch_out and args.batch_in:
        raise ConfigError("pass either --batch-out (write requests) or --batch-in (read results), not both")
    if (args.batch_out or args.batch_in) and getattr(args, "engine", "local") == "ray":
        raise ConfigError("--batch-out/--batch-in hand the work to a batch service: drop --engine ray")


def backend_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Backend constructor arguments from the shared flags (dtype, server URL, vLLM engine)."""
    kwargs: dict[str, Any] = vllm_engine_kwargs(args)
    if getattr(args, "dtype", None):
        kwargs["dtype"] = args.dtype
    if getattr(args, "base_url", None):
        kwargs["base_url"] = args.base_url
    return kwargs
