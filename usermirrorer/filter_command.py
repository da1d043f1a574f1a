"""``usermirrorer filter``: scored thoughts -> SFT/DPO preference pairs (DESIGN.md §7.3-7.5).

The stage itself is :mod:`usermirrorer.data_pipeline.training.uncertainty` (the maths) and
:mod:`usermirrorer.data_pipeline.training.preference` (records and files).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from usermirrorer.data_pipeline.training.preference import run_direct_pref, run_filter
from usermirrorer.data_pipeline.training.uncertainty import FilterConfig
from usermirrorer.sim.prompts import load_prompts

__all__ = ["add_parser", "config_from_args", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer filter``: probs -> preference pairs (``<CONFIG>_pref.jsonl``)."""
    defaults = FilterConfig()
    p = subparsers.add_parser(
        "filter",
        help="uncertainty filtering: scored thoughts -> SFT/DPO preference pairs",
        description=(
            "Score every thought (entropy, sampled behaviour, log-loss), compute per-scene "
            "uncertainty for the strong and weak models, keep scenes with a strong hit (chosen) "
            "and a miss (rejected), select --filtered-num scenes stratified by dataset and "
            "choice count (highest weak-minus-strong model uncertainty first) and write "
            "<project>/datasets/<CONFIG>_pref.jsonl."
        ),
    )
    p.add_argument("--project-path", required=True, help="working directory (DESIGN §2 layout)")
    p.add_argument("--config-name", required=True, help="name of the output: datasets/<NAME>_pref.jsonl")
    p.add_argument("--datasets", nargs="+", required=True, help="datasets whose train scenes were scored")
    p.add_argument("--filtered-num", type=int, default=defaults.filtered_num)
    p.add_argument("--strata", nargs="+", default=list(defaults.strata), help="scene columns forming strata")
    p.add_argument("--rank-by", default=defaults.rank_by, help="scene column ranked within each stratum")
    p.add_argument("--ascending", action="store_true", help="rank lowest first instead of highest")
    p.add_argument("--chosen-from", nargs="+", default=list(defaults.chosen_from))
    p.add_argument("--rejected-from", nargs="+", default=list(defaults.rejected_from))
    p.add_argument("--versions", nargs="+", default=list(defaults.versions))
    p.add_argument("--max-chosen-entropy", type=float, default=None)
    p.add_argument("--min-rank-value", type=float, default=None)
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the behaviour sampling")
    p.add_argument("--prompts", help="YAML/JSON prompt overrides to render the messages with (see usermirrorer.sim.prompts)")
    p.add_argument("--direct", action="store_true",
                   help="direct-mode pairs from the train scenes instead (chosen = real item, rejected = a random "
                        "other option, assistant 'Behavior: [X]'); needs no decisions or probs")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> FilterConfig:
    return FilterConfig(
        filtered_num=args.filtered_num, strata=tuple(args.strata), rank_by=args.rank_by,
        descending=not args.ascending, chosen_from=tuple(args.chosen_from),
        rejected_from=tuple(args.rejected_from), versions=tuple(args.versions),
        max_chosen_entropy=args.max_chosen_entropy, min_rank_value=args.min_rank_value, seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    prompts = load_prompts(args.prompts) if args.prompts else None
    console = Console()
    if args.direct:
        path, n = run_direct_pref(args.project_path, args.config_name, args.datasets, args.seed, prompts)
        console.print(f"wrote {n} direct-mode preference pairs to {path}")
        return 0
    path, report = run_filter(args.project_path, args.config_name, args.datasets, config, prompts)
    for line in report.lines():
        console.print(line)
    console.print(f"wrote {report.scenes_selected} preference pairs to {path}")
    return 0
