"""The ``usermirrorer`` command.

Each subcommand lives next to the code it drives and exposes ``add_parser(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace, returning an exit
code). This file only lists them, so ``usermirrorer --help`` stays cheap: the modules named
here must not import torch or other heavy libraries at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from usermirrorer.errors import UserMirrorerError

# (subcommand, "module:function") in the order of the data flow (DESIGN.md §1).
COMMANDS: list[tuple[str, str]] = [
    ("preprocess", "usermirrorer.preprocessing.command:add_parser"),
    ("scenes", "usermirrorer.data_pipeline.scenes_command:add_parser"),
    ("eval", "usermirrorer.sim.eval_command:add_parser"),
    ("demo", "usermirrorer.envs.demo:add_parser"),
    ("decisions", "usermirrorer.data_pipeline.decisions:add_parser"),
    ("probs", "usermirrorer.data_pipeline.probs:add_parser"),
    ("filter", "usermirrorer.data_pipeline.filtering:add_parser"),
    ("finetune", "usermirrorer.data_pipeline.finetune:add_parser"),
    ("reproduce", "usermirrorer.data_pipeline.reproduce:add_parser"),
    ("bench", "usermirrorer.bench_command:add_parser"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usermirrorer",
        description=(
            "Turn recommendation logs into a preference-aligned LLM user simulator and serve it "
            "as a gymnasium environment. Typical flow: preprocess -> scenes -> eval / demo; "
            "training data: decisions -> probs -> filter -> finetune (or all of it: reproduce)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in COMMANDS:
        module_name, func_name = target.split(":")
        getattr(importlib.import_module(module_name), func_name)(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("usermirrorer")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserMirrorerError as exc:
        print(f"usermirrorer {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished records are kept and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
