"""``usermirrorer scenes``: sample simulation scenes from a dataset's raws (DESIGN.md §3).

Writes ``<project>/datasets/<D>_train.jsonl`` (or ``<D>_eval.jsonl`` with ``--eval-set``;
``_popmatched`` is appended for popularity-matched negatives) and prints a summary. Build the
eval set first: the train set then leaves out the eval interactions and users.
"""

from __future__ import annotations

import argparse
import textwrap

from rich.console import Console
from rich.table import Table

from usermirrorer.command_options import add_engine_arguments, engine_from_args
from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, SceneReport, build_scene_file
from usermirrorer.errors import ConfigError
from usermirrorer.sim.prompt_length import PromptLengthFilter

__all__ = ["add_parser", "run", "summary_table"]

DEFAULT_PROJECT_PATH = "./workspace"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``scenes`` subcommand."""
    parser = subparsers.add_parser(
        "scenes",
        help="sample simulation scenes (profile + history + exposure list) from raws",
        description=textwrap.fill(
            "Turn a dataset's interaction log into simulation scenes: for sampled interactions, "
            "the user's profile, their history before that time and an exposure list of K items "
            "holding the item they really chose (at a uniformly random position). Exposures are "
            "synthesised from random, popularity, collaborative and content rankings (plus domain "
            "scorers), or replayed from logged impressions (MIND). Writes W/datasets/D_train.jsonl "
            "or, with --eval-set, W/datasets/D_eval.jsonl. Build the eval set first: train then "
            "leaves out its interactions and users.",
            width=88,
        ),
        epilog=(
            "examples:\n"
            "  usermirrorer scenes --dataset ml-100k --eval-set --samples 256 "
            "--min-exposure 5 --max-exposure 5\n"
            "  usermirrorer scenes --dataset ml-100k --samples 2000 --min-exposure 2 --max-exposure 12\n"
            "  usermirrorer scenes --dataset ml-100k --eval-set --negatives popularity-matched "
            "--samples 256\n"
            "  usermirrorer scenes --dataset ml-100k --samples 2000 --max-tokens 1024 "
            "--tokenizer smollm2-135m"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, metavar="D", help="dataset name (raws must exist)")
    parser.add_argument("--project-path", metavar="W", default=DEFAULT_PROJECT_PATH,
                        help=f"working directory with W/raws (default {DEFAULT_PROJECT_PATH})")
    parser.add_argument("--samples", type=int, default=1000, metavar="N",
                        help="number of scenes (default 1000)")
    parser.add_argument("--min-exposure", type=int, default=5, metavar="A",
                        help="smallest exposure list size K (default 5)")
    parser.add_argument("--max-exposure", type=int, default=5, metavar="B",
                        help="largest exposure list size K, at most 26 (default 5)")
    parser.add_argument("--eval-set", action="store_true",
                        help="build the eval split (fixed history length) instead of train")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    parser.add_argument("--min-history", type=int, default=3, metavar="H",
                        help="interactions a user needs before a scene (default 3)")
    parser.add_argument("--negatives", choices=["standard", "popularity-matched"], default="standard",
                        help="standard synthetic exposures, or other options drawn from the real "
                             "item's causal popularity decile (writes D_<split>_popmatched.jsonl)")
    parser.add_argument("--embedder", default="minilm", metavar="NAME",
                        help="text embedder of the content scorer: minilm (default, all-MiniLM-L6-v2), "
                             "hashing (no model), st:<model>, vllm:<model>, or none (no content scorer)")
    parser.add_argument("--scorers", default=None, metavar="A,B",
                        help="comma-separated scorer names (default: random,popularity,collaborative,"
                             "content + the domain's extra scorers)")
    parser.add_argument("--list-mode", choices=["topk", "multinomial"], default=None,
                        help="how every ranked list is taken (default: per scorer — multinomial for "
                             "random/popularity, top-k for collaborative/content)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="multinomial temperature (default 1.0)")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="drop scenes whose chat prompt is longer than N tokens (needs --tokenizer)")
    parser.add_argument("--tokenizer", default=None, metavar="T",
                        help="tokenizer for --max-tokens: a model registry name (smollm2-135m), a "
                             "folder or a hub id")
    parser.add_argument("--share-users", action="store_true",
                        help="let train scenes use eval users (never their eval interactions)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="write here instead of W/datasets/D_<split>.jsonl")
    parser.add_argument("--chunk-mb", type=int, default=256, metavar="MB",
                        help="memory bound of the per-chunk score arrays (default 256)")
    parser.add_argument("--neighbours", choices=["exact", "faiss"], default="exact",
                        help="content top-k lists: exact (default; the same lists as scoring the whole "
                             "catalog) or faiss, an approximate index for catalogs of millions "
                             "(pip install 'usermirrorer[ann]')")
    parser.add_argument("--faiss-nprobe", type=int, default=16, metavar="N",
                        help="inverted lists the FAISS index visits per query (default 16)")
    parser.add_argument("--shard-size", type=int, default=None, metavar="N",
                        help="sample the candidates in shards of N, each under a seed of its own (needed by "
                             "--engine ray; the same N gives the same scenes with or without Ray, other scenes "
                             "than leaving it out)")
    add_engine_arguments(parser)
    parser.set_defaults(func=run, interrupted=(
        "interrupted; nothing was written (scenes are written all at once, at the end); run the command again"))
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer scenes``."""
    console = Console(stderr=True)
    engine = engine_from_args(args)
    embedder = None if args.embedder in (None, "", "none") else args.embedder
    scorers = None
    if args.scorers:
        scorers = tuple(name.strip() for name in args.scorers.split(",") if name.strip())
        if "content" in scorers and embedder is None:
            raise ConfigError("--scorers names 'content' but --embedder is none; pick an embedder "
                              "(minilm, hashing, ...) or drop 'content'")
    config = SceneConfig(
        n_samples=args.samples, min_exposure=args.min_exposure, max_exposure=args.max_exposure,
        split="eval" if args.eval_set else "train", seed=args.seed, min_history=args.min_history,
        scorers=scorers, list_mode=args.list_mode, temperature=args.temperature,
        negatives=args.negatives, embedder=embedder, max_tokens=args.max_tokens,
        tokenizer=args.tokenizer, chunk_bytes=args.chunk_mb * 2**20,
        neighbours=args.neighbours, faiss_nprobe=args.faiss_nprobe, shard_size=args.shard_size,
    ).validate()
    with console.status(f"loading raws of {args.dataset}"):
        ds = load_raws(args.project_path, args.dataset)
    console.print(f"loaded {ds!r}")
    length_filter = PromptLengthFilter.for_config(config) if config.max_tokens is not None else None
    report = build_scene_file(args.project_path, args.dataset, config, ds=ds, output=args.output,
                              share_users=args.share_users, progress=console.is_terminal,
                              length_filter=length_filter, engine=engine)
    Console().print(summary_table(report))
    return 0


def summary_table(report: SceneReport) -> Table:
    """A rich table of a :class:`~usermirrorer.data_pipeline.sampling.sampler.SceneReport`."""
    table = Table(title=f"scenes: {report.dataset} {report.split} ({report.negatives})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("written", f"{report.written:,} of {report.requested:,} requested -> {report.path}")
    table.add_row("candidates", f"{report.candidates:,} interactions eligible")
    if report.excluded_users or report.excluded_interactions:
        table.add_row("held out", f"{report.excluded_users:,} users, {report.excluded_interactions:,} "
                                  "interactions of the other split")
    table.add_row("scorers", ", ".join(report.scorers) or "(logged exposures / matched negatives)")
    sizes = ", ".join(f"K={k}: {n}" for k, n in sorted(report.exposure_sizes.items()))
    table.add_row("exposure sizes", sizes or "-")
    table.add_row("real item position", " ".join(str(n) for n in report.position_counts))
    for reason, n in sorted(report.dropped.items()):
        table.add_row("dropped", f"{n:,}: {reason}")
    table.add_row("time", f"{report.seconds:.2f} s sampling ({report.scenes_per_second:,.0f} scenes/s), "
                          f"{report.setup_seconds:.2f} s setup (embeddings, scorers)")
    return table
