"""The ``usermirrorer`` command.

Each subcommand is one module ``usermirrorer/<verb>_command.py`` holding its argument parsing
and one call into the library; it exposes ``add_parser(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returning an exit code). This file only lists
them. ``usermirrorer --help`` imports every command module, so none of them (nor the library
modules they import) may import torch or another heavy library at import time.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from usermirrorer.errors import UserMirrorerError

# (subcommand, command module) in the order of the data flow (DESIGN.md §1).
COMMANDS: list[tuple[str, str]] = [
    ("preprocess", "usermirrorer.preprocess_command"),
    ("scenes", "usermirrorer.scenes_command"),
    ("eval", "usermirrorer.eval_command"),
    ("demo", "usermirrorer.demo_command"),
    ("decisions", "usermirrorer.decisions_command"),
    ("probs", "usermirrorer.probs_command"),
    ("filter", "usermirrorer.filter_command"),
    ("finetune", "usermirrorer.finetune_command"),
    ("train", "usermirrorer.train_command"),
    ("fit-pool", "usermirrorer.fit_pool_command"),
    ("reproduce", "usermirrorer.reproduce_command"),
    ("bench", "usermirrorer.bench_command"),
    ("serve", "usermirrorer.serve_command"),
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
    for _, module_name in COMMANDS:
        importlib.import_module(module_name).add_parser(sub)
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
    except OSError as exc:  # a directory where a file belongs, permissions, a full disk ...
        print(f"usermirrorer {args.command}: error: {_os_problem(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"usermirrorer {args.command}: {getattr(args, 'interrupted', INTERRUPTED)}", file=sys.stderr)
        return 130


# What an interrupt leaves, by default; a command that resumes or writes nothing sets its own
# ``interrupted`` default on its parser (command_options.INTERRUPTED_RESUMES).
INTERRUPTED = "interrupted; check its outputs before using them"


def _os_problem(exc: OSError) -> str:
    """One line: the path, what the system said, and what to check."""
    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or str(exc)
    hint = {
        "IsADirectoryError": "expected a file, found a directory",
        "NotADirectoryError": "a part of the path is a file, not a directory",
        "FileExistsError": "the path exists and is not a directory",
        "PermissionError": "check the permissions",
        "FileNotFoundError": "check the path",
    }.get(type(exc).__name__, "no space left; free some disk space" if exc.errno == 28 else "")
    return f"{where}{what}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":
    sys.exit(main())
