"""``usermirrorer bench``: benchmarks that ship with the installed package.

``usermirrorer bench fidelity`` runs the fidelity benchmark (:mod:`usermirrorer.fidelity`):
every choice model on held-out ML-100K users, on standard and popularity-matched exposures.
``usermirrorer bench fidelity-finetune`` runs the direct-mode fine-tune recipe whose model the
benchmark then includes. ``usermirrorer bench policy-ranking`` asks whether each simulator orders
recommenders the way the held-out users' real logs do (:mod:`usermirrorer.fidelity.policy_ranking`).
torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from dataclasses import replace

from rich.console import Console

from usermirrorer.data_pipeline.training.direct_finetune import DirectFinetuneConfig
from usermirrorer.fidelity.benchmark import FidelityConfig, command_line, parse_extra_model, run_fidelity
from usermirrorer.fidelity.policy_ranking import AGENTS, SIMULATORS, PolicyRankingConfig, run_policy_ranking
from usermirrorer.fidelity.workspace import finetune_direct_row

__all__ = ["add_parser", "run_fidelity_command", "run_finetune_command", "run_policy_ranking_command"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench`` with its ``fidelity``, ``fidelity-finetune`` and ``policy-ranking`` subcommands."""
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark (fidelity: simulators vs real choices; policy-ranking: recommender orderings)",
        description="Benchmarks that ship with the package. Results go to benchmarks/results/ by default.",
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    _add_fidelity(sub)
    _add_finetune(sub)
    _add_policy_ranking(sub)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return parser


def _add_fidelity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity",
        help="accuracy / log-loss / ECE / position bias of every simulator on held-out users",
        description=textwrap.dedent("""\
            Judge user simulators by how often they pick the item a real held-out user chose.

            Builds (once, then reads back) >= 1,000 ML-100K eval scenes per variant from users
            no model here was trained on, K=5 options, the real item at a uniform position, in
            two variants over the same target interactions: the standard construction
            (DESIGN.md §3) and popularity-matched negatives. Evaluates side by side: random,
            popularity (causal counts), most popular, collaborative, content similarity, item
            co-occurrence with the recent history and a learned multinomial logit (the last
            three fitted on --fit-scenes train-user scenes), the base
            LLM in likelihood mode (option texts scored by PMI, temperature fitted on
            --likelihood-fit-scenes train-user scenes), direct mode (all scenes, or
            --llm-limit) and decision mode (--decision-limit scenes), the direct-mode
            fine-tune (if `usermirrorer bench fidelity-finetune` was run), the pipeline's
            fine-tunes (--finetuned) and any --model. Writes fidelity.md/.json and two PNGs.
            Each row's answers are cached per scene: an interrupted run resumes."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              usermirrorer bench fidelity                              # every scene: ~24 min per direct LLM row,
                                                                       # 13-18 min per 100 decision scenes of each variant (2 cores)
              usermirrorer bench fidelity --llm-limit 300 --decision-limit 150  # the committed table's sizes
              usermirrorer bench fidelity --limit 50 --decision-limit 5  # a quick look
              usermirrorer bench fidelity --model ./my-sft-model --model smollm2-135m@decision=SmolLM2-decision
              usermirrorer bench fidelity --finetuned W/checkpoints/cpu-smoke/dpo/model --trained-on W/datasets/ml-100k_train.jsonl"""),
    )
    p.add_argument("--project-path", default="./workspace", metavar="W",
                   help="working directory: raws, split, eval scenes, caches (default ./workspace)")
    p.add_argument("--results-dir", default="benchmarks/results", help="where the md/json/png go")
    p.add_argument("--dataset", default="ml-100k", help="raw dataset name (ML-100K is converted when missing)")
    p.add_argument("--scenes", type=int, default=1000, help="eval scenes per variant (default 1000)")
    p.add_argument("--k", type=int, default=5, help="options per scene (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the scenes and the sampling")
    p.add_argument("--eval-user-fraction", type=float, default=0.2, help="share of users held out (default 0.2)")
    p.add_argument("--embedder", default="minilm",
                   help="content-scorer embedder of the standard construction ('none' leaves it out)")
    p.add_argument("--limit", type=int, default=None, help="evaluate every row on at most N scenes per variant")
    p.add_argument("--llm-limit", type=int, default=None,
                   help="evaluate direct-mode LLM rows on at most N scenes per variant (log-only rows use all)")
    p.add_argument("--likelihood-limit", type=int, default=None,
                   help="evaluate likelihood-mode LLM rows on at most N scenes per variant (default: all)")
    p.add_argument("--fit-scenes", type=int, default=1000,
                   help="train-user scenes the content, co-occurrence and MNL rows are fitted on (default 1000)")
    p.add_argument("--likelihood-fit-scenes", type=int, default=600,
                   help="of those, how many fit a likelihood row's temperature and the pools' weights "
                        "(default 600, as fit-pool)")
    p.add_argument("--debias", default="",
                   help="extra base direct-mode rows with letter positions debiased, comma-separated: reversed "
                        "(2 orders), cyclic (all K: K times the cost), prior (PriDe: the letter prior estimated "
                        "once and divided out; about the cost of one order)")
    p.add_argument("--decision-limit", type=int, default=100,
                   help="scenes per variant for decision-mode rows (default 100; 0 skips decision mode)")
    p.add_argument("--thoughts", type=int, default=1, help="decision mode: thoughts per scene (default 1)")
    p.add_argument("--max-thought-tokens", type=int, default=128, help="decision mode: thought length cap (default 128)")
    p.add_argument("--base-model", default="smollm2-135m", help="base LLM (registry name or folder)")
    p.add_argument("--base-modes", default="likelihood,direct,decision",
                   help="modes the base LLM runs in, comma-separated (default likelihood,direct,decision)")
    p.add_argument("--finetuned", action="append", default=[], metavar="MODEL[=LABEL]",
                   help="a fine-tuned checkpoint of the pipeline (repeatable)")
    p.add_argument("--finetuned-decision", action="store_true", help="also run --finetuned models in decision mode")
    p.add_argument("--trained-on", action="append", default=[], metavar="JSONL",
                   help="training data of the --finetuned models (JSONL with user_id, e.g. the pipeline's "
                        "<W>/datasets/ml-100k_train.jsonl); their rows skip eval scenes of those users")
    p.add_argument("--model", action="append", default=[], metavar="NAME[@MODE][=LABEL]",
                   help="another model to evaluate (repeatable); MODE direct (default) or decision")
    p.add_argument("--no-direct-ft", action="store_true", help="leave out the direct-mode fine-tune row")
    p.add_argument("--no-likelihood-ft", action="store_true",
                   help="leave out the likelihood-mode trainings (`usermirrorer train`) and their learning curve")
    p.add_argument("--no-pool", action="store_true",
                   help="leave out the hybrid rows (each trained likelihood row pooled log-linearly with the "
                        "collaborative row, and with every row that can join: untrained LLM, "
                        "collaborative, MNL, content, popularity; weights fitted on the "
                        "--likelihood-fit-scenes)")
    p.add_argument("--curve-limit", type=int, default=200,
                   help="eval scenes per variant of each learning-curve point (default 200)")
    p.add_argument("--trained-limit", type=int, default=None,
                   help="eval scenes per variant of a training's last checkpoint (default: as --likelihood-limit)")
    p.add_argument("--baselines", default="random,popularity,most-popular,collaborative,content,cooccurrence,mnl,"
                   "mnl-standard,mnl-matched", help="comma-separated log-only rows (default: all nine; mnl-standard / "
                   "mnl-matched are the MNL fitted on one construction's train-user scenes only)")
    p.add_argument("--row-minutes", type=float, default=None,
                   help="stop computing an LLM row after this many minutes; its answers so far are cached "
                        "and reported with their count (a rerun continues it)")
    p.add_argument("--repeats", type=int, default=10, help="behaviours sampled per scene for the accuracy")
    p.add_argument("--batch-size", type=int, default=8, help="scenes per LLM call")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--fresh", action="store_true", help="rebuild the scenes and ignore cached answers")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_fidelity_command)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity-finetune",
        help="fine-tune SmolLM2-135M on ML-100K in direct mode (train users only), on CPU",
        description=textwrap.dedent("""\
            The direct-mode fine-tune recipe of the fidelity benchmark: train scenes from the
            benchmark's train users only (never its eval users), preference pairs chosen =
            `Behavior: [real letter]`, rejected = `Behavior: [a random other letter]` (no decision
            texts), torchtune SFT (and optional LoRA DPO). Writes <W>/fidelity/direct-ft/ with
            training.json; `usermirrorer bench fidelity` then adds a row for the model."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--project-path", default="./workspace", metavar="W", help="working directory (default ./workspace)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--seed", type=int, default=0, help="the benchmark's seed (same split)")
    p.add_argument("--eval-user-fraction", type=float, default=0.2, help="the benchmark's eval user share")
    p.add_argument("--train-scenes", type=int, default=400, help="train scenes (default 400)")
    p.add_argument("--negatives", default="mixed", choices=["standard", "popularity-matched", "mixed"],
                   help="negatives of the train scenes (default mixed: half each)")
    p.add_argument("--base-model", default="smollm2-135m")
    p.add_argument("--sft-steps", type=int, default=200, help="SFT steps (default 200)")
    p.add_argument("--dpo-steps", type=int, default=0, help="LoRA DPO steps after SFT (default 0)")
    p.add_argument("--batch-size", type=int, default=2, help="examples per step (default 2)")
    p.add_argument("--lr", type=float, default=None, help="SFT learning rate (default: the shipped config's)")
    p.add_argument("--embedder", default="minilm", help="content-scorer embedder ('none' leaves it out)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run_finetune_command)


def _add_policy_ranking(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "policy-ranking",
        help="does each simulator rank recommenders the way held-out users' real logs do?",
        description=textwrap.dedent("""\
            Order recommenders twice and compare the orders. Real logs: at real start times of
            held-out ML-100K users (the fidelity split; nothing here is fitted on them) each
            recommender proposes K unseen items, judged by NDCG@K against the user's next N real
            interactions. Simulators: the same recommenders play RecEnv episodes from the same
            users and times (common random numbers: one env seed per episode for all agents,
            stepped together in one simulator call); the score is the expected click rate
            1 - p(skip), "none of these" scoring at the 0.9 quantile of the user's scores over
            the catalog for every simulator. Agreement: Spearman and Kendall tau-b of the two
            orders, and the share of recommender pairs ordered alike, with bootstrap CIs over
            users.

            Recommenders: random, popularity, collaborative (spectral), item-kNN (co-occurrence),
            content (MiniLM similarity to the history), sequential (first-order transitions),
            LinUCB. Simulators: random, popularity, collaborative, the learned MNL (log-only:
            seconds for ~950 episodes) and SmolLM2-135M base and trained in likelihood mode
            (PMI, temperature fitted on train-user scenes): about 3.3 s per episode of 7
            agents x 1 step on 2 cores, so --llm-episodes 300 costs ~17 min per LLM. Every
            episode is cached as it finishes: an interrupted run resumes. Writes
            policy_ranking.md/.json/.png."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              usermirrorer bench policy-ranking --project-path workspace/fidelity-bench   # the committed table
              usermirrorer bench policy-ranking --simulators random,popularity,collaborative,mnl   # log-only, ~1 min
              usermirrorer bench policy-ranking --llm-episodes 20 --simulators popularity,base     # a quick look"""),
    )
    p.add_argument("--project-path", default="./workspace", metavar="W",
                   help="working directory: raws, the fidelity split, trained models, the episode cache")
    p.add_argument("--results-dir", default="benchmarks/results", help="where the md/json/png go")
    p.add_argument("--dataset", default="ml-100k", help="raw dataset name (ML-100K is converted when missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the start times and the episodes")
    p.add_argument("--eval-user-fraction", type=float, default=0.2, help="share of users held out (default 0.2)")
    p.add_argument("--k", type=int, default=5, help="items per slate (default 5)")
    p.add_argument("--next-n", type=int, default=10, help="real next interactions a slate is judged on (default 10)")
    p.add_argument("--min-history", type=int, default=5, help="interactions a start needs before it (default 5)")
    p.add_argument("--starts-per-user", type=int, default=5, help="start times per held-out user (default 5)")
    p.add_argument("--steps", type=int, default=1,
                   help="steps per simulated episode (default 1: the simulator judges the very slates the "
                        "logs judge; more steps add the agents' reactions to simulated picks)")
    p.add_argument("--llm-episodes", type=int, default=300,
                   help="episodes the LLM simulators play (the first N; default 300)")
    p.add_argument("--agents", default=",".join(AGENTS), help=f"recommenders (default {','.join(AGENTS)})")
    p.add_argument("--simulators", default=",".join(SIMULATORS),
                   help=f"simulators (default {','.join(SIMULATORS)}; 'trained' needs `usermirrorer train`)")
    p.add_argument("--base-model", default="smollm2-135m", help="the base LLM (registry name or folder)")
    p.add_argument("--trained-model", default=None, metavar="DIR",
                   help="the trained LLM (default: the last checkpoint of `usermirrorer train` under W)")
    p.add_argument("--fit-scenes", type=int, default=1000, help="train-user scenes the MNL is fitted on")
    p.add_argument("--llm-fit-scenes", type=int, default=64,
                   help="of those, how many fit an LLM's softmax temperature (default 64)")
    p.add_argument("--n-reference", type=int, default=24,
                   help="catalog items an LLM's skip threshold is estimated from (default 24)")
    p.add_argument("--skip-quantile", type=float, default=0.9,
                   help="'none of these' scores at this quantile of the catalog's scores (default 0.9)")
    p.add_argument("--embedder", default="minilm", help="text embedder of the content recommender and the MNL")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of users (default 1000)")
    p.add_argument("--batch-size", type=int, default=16, help="scenes per LLM call (default 16)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--fresh", action="store_true", help="ignore cached episodes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_policy_ranking_command)


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def run_policy_ranking_command(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer bench policy-ranking``."""
    _threads(args.threads)
    config = PolicyRankingConfig(
        project_path=args.project_path, results_dir=args.results_dir, dataset=args.dataset, seed=args.seed,
        eval_user_fraction=args.eval_user_fraction, slate_size=args.k, next_n=args.next_n,
        min_history=args.min_history, starts_per_user=args.starts_per_user, steps=args.steps,
        llm_episodes=args.llm_episodes, agents=_names(args.agents), simulators=_names(args.simulators),
        base_model=args.base_model, trained_model=args.trained_model, fit_scenes=args.fit_scenes,
        llm_fit_scenes=args.llm_fit_scenes, n_reference=args.n_reference, skip_quantile=args.skip_quantile,
        embedder=args.embedder, n_bootstrap=args.bootstrap, batch_size=args.batch_size, fresh=args.fresh,
        progress=not args.no_progress, command=command_line(),
    )
    run_policy_ranking(config)
    return 0


def _embedder(value: str | None) -> str | None:
    return None if value in (None, "", "none") else value


def run_fidelity_command(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer bench fidelity``."""
    _threads(args.threads)
    config = FidelityConfig(
        project_path=args.project_path, results_dir=args.results_dir, dataset=args.dataset, n_scenes=args.scenes,
        k=args.k, seed=args.seed, eval_user_fraction=args.eval_user_fraction, embedder=_embedder(args.embedder),
        limit=args.limit, llm_limit=args.llm_limit, likelihood_limit=args.likelihood_limit,
        fit_scenes=args.fit_scenes, likelihood_fit_scenes=args.likelihood_fit_scenes,
        debias=tuple(m.strip() for m in args.debias.split(",") if m.strip()),
        decision_limit=args.decision_limit, n_thoughts=args.thoughts,
        max_thought_tokens=args.max_thought_tokens, base_model=args.base_model,
        base_modes=tuple(m.strip() for m in args.base_modes.split(",") if m.strip()),
        finetuned=tuple(replace(parse_extra_model(m, role="fine-tuned"), trained_on=tuple(args.trained_on))
                        for m in args.finetuned),
        finetuned_decision=args.finetuned_decision,
        extra_models=tuple(parse_extra_model(m) for m in args.model), direct_ft=not args.no_direct_ft,
        likelihood_ft=not args.no_likelihood_ft, pool=not args.no_pool, curve_limit=args.curve_limit, trained_limit=args.trained_limit,
        baselines=tuple(b.strip() for b in args.baselines.split(",") if b.strip()),
        row_minutes=args.row_minutes, repeats=args.repeats,
        batch_size=args.batch_size, fresh=args.fresh, progress=not args.no_progress, command=command_line(),
    )
    run_fidelity(config)
    return 0


def run_finetune_command(args: argparse.Namespace) -> int:
    """Entry point of ``usermirrorer bench fidelity-finetune``."""
    _threads(args.threads)
    config = DirectFinetuneConfig(
        project_path=args.project_path, dataset=args.dataset, seed=args.seed,
        eval_user_fraction=args.eval_user_fraction, train_scenes=args.train_scenes, negatives=args.negatives,
        base_model=args.base_model, sft_steps=args.sft_steps, dpo_steps=args.dpo_steps, batch_size=args.batch_size,
        sft_lr=args.lr, embedder=_embedder(args.embedder), threads=args.threads,
    )
    console = Console()
    with console.status("direct-mode fine-tune (train users only) ..."):
        manifest = finetune_direct_row(config, progress=False)
    for stage in manifest["stages"]:
        console.print(f"{stage['stage']}: {stage['steps']} steps x batch {stage['batch_size']} = {stage['examples']} "
                      f"examples in {stage['seconds'] / 60:.1f} min (log: {stage['log']})")
    console.print(f"model: {manifest['model_dir']}; {manifest['train_scenes']} train scenes from "
                  f"{manifest['train_users']} train users; manifest: {args.project_path}/fidelity/direct-ft/training.json")
    return 0


def _threads(n: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(max(1, min(n, torch.get_num_threads())))
