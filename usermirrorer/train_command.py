"""``usermirrorer train``: train a simulator for likelihood mode on the benchmark's train users.

The recipe is :mod:`usermirrorer.data_pipeline.training.likelihood_train`; its options come
from a shipped YAML (``--profile``) or one of yours (``--config``), a few flags override them.
"""

from __future__ import annotations

import argparse
import os
import textwrap

import yaml
from rich.console import Console

from usermirrorer.data_pipeline.training.likelihood_train import (
    LOSSES,
    PROFILES,
    load_train_config,
    profile_config,
)
from usermirrorer.errors import ConfigError
from usermirrorer.fidelity.likelihood_training import train_likelihood_row

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer train``."""
    p = subparsers.add_parser(
        "train",
        help="train a simulator for likelihood mode on real choices of train users (CPU recipe)",
        description=textwrap.dedent("""\
            Train a model to score option texts the way likelihood mode reads them, on the
            fidelity benchmark's train users only (never its eval users):
              next-item  language modelling of the real item's text after the user's profile
                         and history (loss on the item's tokens);
              listwise   softmax over the K options' summed log-probs (divided by a learned
                         temperature) against the real option;
              letters    the paper's letter format (direct mode): cross-entropy over the K
                         option letters, real item moved so every letter is the answer
                         equally often (its checkpoints are scored in direct mode).
              residual   listwise with the benchmark's log-only pool (collaborative, MNL,
                         content, popularity) as fixed per-option offsets: the LLM learns
                         what those models miss (fitted on the train users first, ~1 min).
            Top layers only, bf16 autocast where the CPU has it. Writes
            <W>/fidelity/likelihood-ft/<loss>/: checkpoints/ex-<N> at the learning-curve points,
            state.pt (an interrupted run resumes from it) and training.json. Then
            `usermirrorer bench fidelity --project-path W` adds the trained rows and the curve."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              usermirrorer train --profile cpu                        # SmolLM2-135M, listwise, 50-65 min on 2 cores
              usermirrorer train --profile cpu --loss listwise --examples 2000
              usermirrorer train --profile cpu --loss residual --examples 2000
              usermirrorer train --profile tiny --project-path /tmp/w # the tiny random model, seconds"""),
    )
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES),
                   help="shipped config: cpu (SmolLM2-135M on 2 cores) or tiny (tiny random model)")
    p.add_argument("--config", metavar="YAML", help="your own config file instead of --profile")
    p.add_argument("--project-path", metavar="W", help="working directory (default: the config's, ./workspace)")
    p.add_argument("--loss", choices=LOSSES, help="next-item, listwise, letters or residual (default: the config's)")
    p.add_argument("--examples", type=int, help="train examples in total (default: the config's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the config's)")
    p.add_argument("--trainable-layers", type=int, help="top decoder layers that learn (default: the config's)")
    p.add_argument("--curve", help="comma-separated example counts that get a checkpoint (the learning curve)")
    p.add_argument("--threads", type=int, help="torch threads (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config option, e.g. --set batch_size=4 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="discard a resume state written with other options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    overrides = {"project_path": args.project_path, "loss": args.loss, "examples": args.examples, "lr": args.lr,
                 "trainable_layers": args.trainable_layers, "threads": args.threads,
                 "curve": None if args.curve is None else [int(x) for x in args.curve.split(",") if x.strip()]}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set batch_size=4")
        overrides[key.strip()] = yaml.safe_load(value)
    config = load_train_config(args.config, **overrides) if args.config else profile_config(args.profile, **overrides)
    os.environ.setdefault("OMP_NUM_THREADS", str(config.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    manifest = train_likelihood_row(config, fresh=args.fresh, progress=not args.no_progress)
    console = Console()
    console.print(f"trained {manifest['base_model']} ({manifest['loss']}) on {manifest['train_scenes']} scenes of "
                  f"{manifest['train_users']} train users in {manifest['train_seconds'] / 60:.1f} min "
                  f"({manifest['examples_per_second']} examples/s, ~{manifest['achieved_gflops']} GFLOP/s)")
    for point in manifest["checkpoints"]:
        console.print(f"  after {point['examples']:>6} examples: {point['model_dir']}")
    console.print(f"next: usermirrorer bench fidelity --project-path {config.project_path} (adds these rows and the "
                  "learning curve)")
    return 0
