"""``usermirrorer eval``: how well a simulator reproduces real choices (DESIGN.md §8).

Reads scenes (``datasets/<D>_eval.jsonl``), asks the choice model for each scene's
distribution, samples ``--repeat`` behaviours per scene with a per-scene seeded generator and
writes one record per scene to ``--output`` (appended as it goes; a re-run skips scenes
already there, so an interrupted run resumes). Then prints a table per dataset — accuracy
with 95% CI, top-1 accuracy, log-loss (nats), ECE, the random 1/K accuracy, per-letter choice share — and
writes it as JSON next to the output (``<output>.summary.json``).

Output record: ``scene_id, dataset, user_id, item_id, item_pos, n_options, probs, hits,
repeat, model, mode`` (+ ``rationales`` and ``thought_probs`` in decision mode).

The work is :func:`usermirrorer.sim.evaluation.evaluate_file`; this module parses the arguments.
It must stay cheap to import (the CLI lists it): torch is imported when a model is built.
"""

from __future__ import annotations

import argparse

from usermirrorer.command_options import (
    INTERRUPTED_RESUMES,
    add_engine_arguments,
    add_vllm_engine_arguments,
    engine_from_args,
    vllm_engine_kwargs,
)
from usermirrorer.sim.choice_models import BASELINE_CHOICE_MODELS
from usermirrorer.sim.evaluation import evaluate_file
from usermirrorer.sim.prompts import MODES
from usermirrorer.sim.simulator import LIKELIHOOD_SCORES

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="measure a simulator's choice accuracy, log-loss and calibration on eval scenes",
        description=(
            "Score eval scenes with a user simulator (or a non-LLM choice model) and report, per "
            "dataset: sampled accuracy with a 95% CI over scenes, top-1 accuracy, log-loss of the real item in nats, "
            "expected calibration error (10 bins), the random 1/K accuracy and the choice share per "
            "letter (position bias). Per-scene results are appended to --output; re-running skips "
            "finished scenes."
        ),
        epilog=(
            "examples:\n"
            "  usermirrorer eval --model smollm2-135m --input W/datasets/ml-100k_eval.jsonl --output runs/smol.jsonl\n"
            "  usermirrorer eval --model popularity --project-path W --input W/datasets/ml-100k_eval.jsonl "
            "--output runs/pop.jsonl"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="smollm2-135m",
                        help="simulator model (registry name, folder or hub id), or a choice model: "
                        + ", ".join(BASELINE_CHOICE_MODELS) + " (default: smollm2-135m)")
    parser.add_argument("--input", required=True, help="scenes JSONL (e.g. <project>/datasets/<D>_eval.jsonl)")
    parser.add_argument("--output", required=True, help="per-scene results JSONL (appended; resumable)")
    parser.add_argument("--mode", choices=list(MODES), default="direct",
                        help="direct: letter right away; decision: thoughts, then letter; likelihood: each option's "
                        "text scored as the answer, no letters (default: direct)")
    parser.add_argument("--likelihood-score", choices=list(LIKELIHOOD_SCORES), default="pmi",
                        help="likelihood mode: pmi (minus the text's likelihood in a neutral context), sum or mean "
                        "(per token) of the option's log-likelihood (default: pmi)")
    parser.add_argument("--score-temperature", type=float, default=1.0,
                        help="likelihood mode: probabilities are softmax(score / T) (default: 1.0)")
    parser.add_argument("--repeat", type=int, default=10, help="behaviours sampled per scene for accuracy (default: 10)")
    parser.add_argument("--n-thoughts", type=int, default=1, help="decision mode: thoughts per scene (default: 1)")
    parser.add_argument("--max-thought-tokens", type=int, default=256, help="decision mode: longest thought (default: 256)")
    parser.add_argument("--temperature", type=float, default=1.0, help="decision mode: thought temperature (default: 1.0)")
    parser.add_argument("--top-p", type=float, default=0.9, help="decision mode: nucleus mass (default: 0.9)")
    parser.add_argument("--backend", default="transformers", help="transformers | vllm | openai (default: transformers)")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per model call (default: 8)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N scenes of --input")
    parser.add_argument("--seed", type=int, default=0, help="seed of behaviour sampling and thoughts (default: 0)")
    parser.add_argument("--dtype", default="auto", help="transformers backend: auto | float32 | bfloat16 (default: auto)")
    parser.add_argument("--no-share-prefix", action="store_true", help="transformers backend: disable KV prefix reuse")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--prompts", default=None, help="YAML/JSON file overriding prompt texts (see usermirrorer.sim.prompts)")
    parser.add_argument("--truncate-history", action="store_true",
                        help="drop the oldest history lines of prompts longer than the model context (else: error)")
    parser.add_argument("--project-path", default=None, help="project folder with raws/ (needed by popularity/collaborative)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete --output and start over (needed after changing the model or options)")
    add_vllm_engine_arguments(parser)
    add_engine_arguments(parser)
    parser.set_defaults(func=run, interrupted=INTERRUPTED_RESUMES)
    return parser


def run(args: argparse.Namespace) -> int:
    engine = engine_from_args(args)
    evaluate_file(
        args.input, args.output, args.model, mode=args.mode, repeat=args.repeat, n_thoughts=args.n_thoughts,
        max_thought_tokens=args.max_thought_tokens, temperature=args.temperature, top_p=args.top_p,
        backend=args.backend, batch_size=args.batch_size, limit=args.limit, seed=args.seed, dtype=args.dtype,
        share_prefix=not args.no_share_prefix, threads=args.threads, prompts=args.prompts,
        truncate_history=args.truncate_history, project_path=args.project_path,
        likelihood_score=args.likelihood_score, score_temperature=args.score_temperature, fresh=args.fresh,
        engine_kwargs=vllm_engine_kwargs(args), engine=engine,
    )
    return 0
