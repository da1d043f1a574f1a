"""``usermirrorer fit-pool``: save the fidelity table's gated pool as a simulator file.

The fitting is :func:`usermirrorer.fidelity.pool_fit.fit_saved_pool`; the file format is
:mod:`usermirrorer.sim.saved_pool`.
"""

from __future__ import annotations

import argparse
import os
import textwrap

from rich.console import Console

from usermirrorer.fidelity.pool_fit import PoolFitConfig, fit_saved_pool

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer fit-pool``."""
    p = subparsers.add_parser(
        "fit-pool",
        help="fit the trained LLM pooled with four log-only models (the table's best simulator) and save it",
        description=textwrap.dedent("""\
            Fit a log-linear pool p ∝ prod_m p_m^w_m of the trained LLM (likelihood mode, PMI
            scores; `usermirrorer train` writes it) with the collaborative, MNL, content and
            popularity models, every weight moving with the popularity spread of the slate, on
            the fidelity benchmark's train-user scenes (never its eval users), and write it as
            one JSON file. Its held-out fidelity is the benchmark row 'pool: ... × collaborative
            × MNL × content × popularity, gated by popularity spread'. The environment, the
            demo and `usermirrorer eval` take the file's path where they take a model name;
            the demo picks up <W>/pools/<dataset>/pool.json by itself. The LLM answers the
            pool-fit scenes (about 5 min for 600 on 2 cores); the rest takes seconds."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              usermirrorer train --profile cpu --project-path W && usermirrorer fit-pool --project-path W
              usermirrorer fit-pool --project-path W --checkpoint W/fidelity/likelihood-ft/listwise/checkpoints/ex-2000
            then, in Python:
              gym.make("usermirrorer/RecEnv-v0", dataset="ml-100k", model="W/pools/ml-100k/pool.json", ...)"""),
    )
    p.add_argument("--project-path", metavar="W", default="./workspace",
                   help="the benchmark's working directory: raws, user split, trainings (default ./workspace)")
    p.add_argument("--dataset", default="ml-100k", help="raw dataset name (default ml-100k)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="the trained LLM (default: the last checkpoint of the project's listwise training)")
    p.add_argument("--fit-scenes", type=int, default=1000,
                   help="train-user scenes the MNL and content members are fitted on (default 1000, as the benchmark)")
    p.add_argument("--pool-fit-scenes", type=int, default=600,
                   help="the first N of them fit the pool weights; the LLM answers them (default 600, as the table)")
    p.add_argument("--embedder", default="minilm",
                   help="text embedder of the content members and the standard scenes (default minilm, as the "
                        "benchmark; hashing: no model, for quick runs)")
    p.add_argument("--out", metavar="FILE", help="the pool file (default <W>/pools/<dataset>/pool.json)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(max(1, args.threads))
    saved = fit_saved_pool(PoolFitConfig(project_path=args.project_path, dataset=args.dataset,
                                         checkpoint=args.checkpoint, fit_scenes=args.fit_scenes,
                                         pool_fit_scenes=args.pool_fit_scenes, out=args.out, embedder=args.embedder,
                                         progress=not args.no_progress))
    console = Console()
    fit = saved.fit
    console.print(f"fitted on {fit['scenes']} train-user scenes in {fit['seconds'] / 60:.1f} min: log-loss "
                  f"{fit['nll']:.3f} nats on them (a uniform guess: ln K, 1.609 at K=5); weights:")
    for name, weight in fit["weights"].items():
        console.print(f"  {name:<40} {weight:+.4f}")
    console.print(f"wrote {saved.path}; use it as model={str(saved.path)!r} in the environment or "
                  f"`usermirrorer eval --model {saved.path} --project-path {args.project_path}`; "
                  f"`usermirrorer demo --trained-from {args.project_path}` picks it up")
    return 0
