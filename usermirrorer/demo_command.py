"""``usermirrorer demo``: recommenders face LLM-simulated MovieLens users (:mod:`usermirrorer.demo`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from usermirrorer.demo import DEFAULT_AGENTS, DemoConfig, run_demo

__all__ = ["add_parser", "run"]


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
        choices=("likelihood", "direct", "decision"),
        default="likelihood",
        help="likelihood (default): the LLM scores each option's text for this user (PMI, no letters, so no "
        "letter-position bias; the best untrained LLM mode in benchmarks/results/fidelity.md); direct: read "
        "the option letter right away; decision: the LLM first writes a rationale (slower)",
    )
    parser.add_argument(
        "--trained-from",
        type=lambda v: None if v == "none" else Path(v),
        default=Path("workspace"),
        metavar="W",
        help="project of `usermirrorer train` (default ./workspace): with the default model in likelihood mode "
        "the demo uses the pool `usermirrorer fit-pool` saved there (W/pools/<dataset>/pool.json), else the "
        "training's last checkpoint; 'none': never",
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


def run(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer demo``."""
    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    return run_demo(DemoConfig(**{k: v for k, v in vars(args).items() if k in fields}))
