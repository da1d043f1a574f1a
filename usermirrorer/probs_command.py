"""``usermirrorer probs``: the predictor's letter distribution after each thought (DESIGN.md §7.2).

The stage itself is :mod:`usermirrorer.data_pipeline.training.probs`.
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
from usermirrorer.data_pipeline.training.probs import read_probs_batch, run_probs, write_probs_batch

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer probs``."""
    p = subparsers.add_parser(
        "probs",
        help="predictor's letter distribution after each thought",
        description=(
            "For every thought in <project>/decisions/<D>_decisions_<version>.jsonl, score the option "
            "letters after '<thought>\\nBehavior: [' with the predictor --model, and append the "
            "distributions to <project>/probs/<D>_probs_<version>.jsonl. Re-running resumes."
        ),
    )
    add_llm_stage_arguments(p)
    add_batch_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    check_batch_arguments(args)
    engine = engine_from_args(args)
    kwargs = backend_kwargs_from_args(args)
    console = Console()
    if args.batch_out:
        n = write_probs_batch(args.project_path, args.dataset, args.model, args.version, args.batch_out,
                              limit=args.limit, backend_kwargs=kwargs)
        console.print(f"wrote {n} scoring requests to {args.batch_out}; run the batch, then pass its output to --batch-in")
        return 0
    if args.batch_in:
        report = read_probs_batch(args.project_path, args.dataset, args.model, args.version, args.batch_in,
                                  backend_kwargs=kwargs)
        console.print(f"probs: {report.written} scenes appended from {args.batch_in} -> {report.path}")
        return 0
    report = run_probs(args.project_path, args.dataset, args.model, args.version, backend=args.backend,
                       chunk_size=args.chunk_size, limit=args.limit, progress=not args.no_progress,
                       backend_kwargs=kwargs, fresh=args.fresh, engine=engine)
    console.print(f"probs: {report.written} scenes written, {report.skipped} already done "
                    f"({report.seconds:.0f} s) -> {report.path}")
    return 0
