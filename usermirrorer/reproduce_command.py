"""``usermirrorer reproduce``: the whole method end to end (:mod:`usermirrorer.reproduce`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rich.console import Console

from usermirrorer.errors import ConfigError
from usermirrorer.reproduce import PROFILES, STAGES, Profile, print_summary, reproduce

__all__ = ["add_parser", "profile_from_args", "run"]

_OVERRIDABLE = {f.name: f for f in dataclasses.fields(Profile) if f.name != "name"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer reproduce``."""
    p = subparsers.add_parser(
        "reproduce",
        help="the whole pipeline end to end: preprocess -> scenes -> decisions -> probs -> filter -> SFT -> DPO -> eval",
        description=(
            "Run every stage of the method for the given datasets and print base vs fine-tuned eval "
            "metrics side by side. Resumable: re-running skips finished stages and resumes the LLM "
            "stages where they stopped. Profiles: cpu-smoke (2 CPU cores, < 30 min, SmolLM2-135M) "
            "and paper (GPU, vLLM, 3B models). Any profile field can be overridden, e.g. "
            "--train-samples 300 --n-thoughts 5."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu-smoke")
    p.add_argument("--project-path", required=True, help="working directory (DESIGN §2 layout)")
    p.add_argument("--datasets", nargs="+", default=["ml-100k"], help="datasets to run (preprocess names)")
    p.add_argument("--source", action="append", default=[], metavar="D=DIR",
                   help="folder of a dataset's original files (not needed for ml-100k); repeatable")
    p.add_argument("--stop-after", choices=STAGES, help="last stage to run")
    for name, f in _OVERRIDABLE.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"profile_{name}", default=None,
                       help=f"override the profile's {name}")
    p.set_defaults(func=run)
    return p


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The chosen profile with every ``--<field>`` override applied, typed like the field."""
    profile = PROFILES[args.profile]
    changes: dict[str, Any] = {}
    for name, f in _OVERRIDABLE.items():
        raw = getattr(args, f"profile_{name}", None)
        if raw is None:
            continue
        default = getattr(profile, name)
        try:
            if isinstance(default, bool):
                value: Any = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, tuple):
                parts = [x for x in raw.replace(",", " ").split() if x]
                value = tuple(int(x) for x in parts) if default and isinstance(default[0], int) else tuple(parts)
            elif isinstance(default, int) or name in ("max_prompt_tokens", "finetune_batch_size", "sft_epochs",
                                                      "dpo_epochs", "max_steps_per_epoch", "threads"):
                value = None if raw.lower() == "none" else int(raw)
            else:
                value = None if raw.lower() == "none" else raw
        except ValueError:
            raise ConfigError(f"--{name.replace('_', '-')} {raw!r}: expected a value like {default!r}") from None
        changes[name] = value
    return dataclasses.replace(profile, **changes)


def run(args: argparse.Namespace) -> int:
    sources = {}
    for item in args.source:
        if "=" not in item:
            raise ConfigError(f"--source {item!r}: expected DATASET=DIR")
        d, folder = item.split("=", 1)
        sources[d] = folder
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file: do not squeeze the tables to 80 columns
    summary = reproduce(args.project_path, profile_from_args(args), args.datasets, sources=sources,
                        stop_after=args.stop_after, console=console)
    print_summary(summary, console)
    return 0
