"""``usermirrorer preprocess``: convert a public dataset's original files into raws.

``usermirrorer preprocess DATASET [--source DIR] [--project-path W]`` runs the dataset's
converter, prints what was written, repaired and dropped (by rule), then validates the written
files with :func:`~usermirrorer.data_pipeline.raw.load_raws`. ``--list`` shows every converter.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from rich.console import Console
from rich.table import Table

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.data_pipeline.sampling.strategies import get_strategy
from usermirrorer.errors import ConfigError
from usermirrorer.preprocessing.base import Converter, ConvertReport, converters, get_converter

__all__ = ["add_parser", "run", "print_report"]

DEFAULT_PROJECT_PATH = "./workspace"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``preprocess`` subcommand (with every converter's own options)."""
    table = converters()
    parser = subparsers.add_parser(
        "preprocess",
        help="convert a dataset's original files into the unified raw format",
        description=textwrap.fill(
            "Convert a public dataset's original files into <project-path>/raws/<DATASET>_"
            "{user_feature,item_feature,interaction}.jsonl, print what was written, repaired "
            "and dropped (each by rule, nothing is dropped silently) and validate the result. "
            f"Datasets: {', '.join(table)}. `--list` shows which files each one reads.",
            width=88,
        ),
        epilog=(
            "examples:\n"
            "  usermirrorer preprocess ml-100k                 # data carried by recbole\n"
            "  usermirrorer preprocess ml-1m --source ~/data/ml-1m\n"
            "  usermirrorer preprocess synthetic --users 1000 --items 5000 --interactions 50000"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", nargs="?", metavar="DATASET",
                        help="dataset to convert (see --list)")
    parser.add_argument("--source", metavar="DIR", default=None,
                        help="folder with the original files (required unless the dataset "
                             "ships with a package or is generated)")
    parser.add_argument("--project-path", metavar="W", default=DEFAULT_PROJECT_PATH,
                        help="working directory; raws go to W/raws "
                             f"(default {DEFAULT_PROJECT_PATH})")
    parser.add_argument("--list", action="store_true",
                        help="list the datasets that can be converted and their source formats")
    parser.add_argument("--no-validate", action="store_true",
                        help="skip re-loading the written raws (saves time on huge datasets)")
    # Converter-specific options: one flag per distinct name, shared by the converters using it.
    owners: dict[str, list[str]] = {}
    first: dict[str, Any] = {}
    for conv in table.values():
        for opt in conv.options:
            owners.setdefault(opt.name, []).append(conv.name)
            first.setdefault(opt.name, opt)
    for name, opt in first.items():
        parser.add_argument(
            f"--{name}", dest=opt.dest, type=opt.type, default=None,
            help=f"{opt.help} (default {opt.default}; for {', '.join(owners[name])})",
        )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer preprocess``."""
    console = Console()
    if args.list:
        console.print(listing_table())
        return 0
    if not args.dataset:
        raise ConfigError("name a DATASET to convert (see `usermirrorer preprocess --list`)")
    conv = get_converter(args.dataset)
    options = {opt.dest: getattr(args, opt.dest, None) for opt in conv.options}
    _reject_foreign_options(args, conv)
    with console.status(f"converting {conv.name} ..."):
        report = conv.run(args.source, args.project_path, options)
    print_report(report, console)
    if not args.no_validate:
        with console.status("validating the written raws ..."):
            ds = load_raws(args.project_path, report.dataset)
        console.print(f"validated: {ds!r}")
    return 0


def _reject_foreign_options(args: argparse.Namespace, conv: Converter) -> None:
    mine = {opt.dest for opt in conv.options}
    for other in converters().values():
        for opt in other.options:
            if opt.dest not in mine and getattr(args, opt.dest, None) is not None:
                raise ConfigError(
                    f"--{opt.name} is an option of {other.name!r}, not of {conv.name!r}; "
                    f"{conv.name!r} accepts: "
                    + (", ".join(f"--{o.name}" for o in conv.options) or "no extra options")
                )


def listing_table():
    """A rich table of every converter: name, whether --source is needed, source format."""
    table = Table(title="usermirrorer preprocess: datasets")
    table.add_column("dataset", style="bold", no_wrap=True)
    table.add_column("--source", no_wrap=True)
    table.add_column("strategy", no_wrap=True)
    table.add_column("reads (options)")
    for conv in converters().values():
        reads = conv.source_format
        if conv.options:
            reads += " (" + " ".join(f"--{o.name}" for o in conv.options) + ")"
        table.add_row(
            conv.name,
            "required" if conv.needs_source else "optional",
            type(get_strategy(conv.name)).__name__,
            reads,
        )
    return table


def print_report(report: ConvertReport, console=None) -> None:
    """Print the counts and the repaired / dropped rows by rule."""
    console = console or Console()
    counts = Table(title=f"{report.dataset}: raws written in {report.seconds:.1f} s")
    # A row can need several repairs (no title and no year), so repairs count rule hits.
    for col in ("users", "items", "interactions", "repairs", "dropped rows"):
        counts.add_column(col, justify="right")
    counts.add_row(*(f"{n:,}" for n in (report.users, report.items, report.interactions,
                                         report.n_repaired, report.n_dropped)))
    console.print(counts)
    if report.source:
        console.print(f"source: {report.source}")
    for key, value in report.notes.items():
        console.print(f"{key}: {value}")
    if report.repaired or report.dropped:
        rules = Table(title="rows repaired or dropped, by rule")
        rules.add_column("action")
        rules.add_column("rule", style="bold")
        rules.add_column("count", justify="right")
        rules.add_column("reason")
        rules.add_column("example")
        for action, table in (("repaired", report.repaired), ("dropped", report.dropped)):
            for entry in table.values():
                example = entry.examples[0] if entry.examples else ""
                if report.source:
                    # The source folder is printed above; the file name and line suffice here.
                    example = example.replace(report.source.rstrip("/") + "/", "")
                rules.add_row(action, entry.rule, f"{entry.count:,}", entry.reason, example)
        console.print(rules)
    if report.paths:
        console.print("wrote: " + ", ".join(str(p) for p in report.paths))
