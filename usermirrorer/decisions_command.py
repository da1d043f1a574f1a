"""``usermirrorer decisions``: N decision-mode thoughts per train scene (DESIGN.md §7.1).

The stage itself is :mod:`usermirrorer.data_pipeline.training.decisions`.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from usermirrorer.command_options import (
    add_batch_arguments,
    add_llm_stage_arguments,
    backend_kwargs_from_args,
    check_batch_arguments,
    engine_from_args,
)
from usermirrorer.data_pipeline.training.decisions import read_decisions_batch, run_decisions, write_decisions_batch

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer decisions``."""
    p = subparsers.add_parser(
        "decisions",
        help="N decision-mode thoughts per train scene (strong or weak model)",
        description=(
            "Sample --n decision-mode thoughts (Stimulus, Knowledge, Evaluation; temperature 1.0, "
            "top-p 0.9) for every scene of <project>/datasets/<D>_train.jsonl and append them to "
            "<project>/decisions/<D>_decisions_<version>.jsonl. Re-running resumes: finished scenes "
            "are skipped."
        ),
    )
    add_llm_stage_arguments(p)
    p.add_argument("--n", type=int, default=10, help="thoughts per scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-thought-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.9)
    add_batch_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    console = Console()
    check_batch_arguments(args)
    engine = engine_from_args(args)
    kwargs = backend_kwargs_from_args(args)
    if args.batch_out:
        n = write_decisions_batch(args.project_path, args.dataset, args.model, args.version, args.batch_out, n=args.n,
                                  seed=args.seed, max_thought_tokens=args.max_thought_tokens,
                                  temperature=args.temperature, top_p=args.top_p, limit=args.limit,
                                  backend_kwargs=kwargs)
        console.print(f"wrote {n} batch requests to {args.batch_out}; run the batch, then pass its output to --batch-in")
        return 0
    if args.batch_in:
        report = read_decisions_batch(args.project_path, args.dataset, args.model, args.version, args.batch_in,
                                      seed=args.seed, backend_kwargs=kwargs)
        console.print(f"decisions: {report.written} scenes appended from {args.batch_in} -> {report.path}")
        return 0
    report = run_decisions(
        args.project_path, args.dataset, args.model, args.version, n=args.n, backend=args.backend,
        seed=args.seed, chunk_size=args.chunk_size, max_thought_tokens=args.max_thought_tokens,
        temperature=args.temperature, top_p=args.top_p, limit=args.limit, progress=not args.no_progress,
        backend_kwargs=kwargs, fresh=args.fresh, engine=engine,
    )
    console.print(f"decisions: {report.written} scenes written, {report.skipped} already done "
                  f"({report.seconds:.0f} s) -> {report.path}")
    return 0
