"""``usermirrorer finetune sft|dpo``: torchtune SFT / DPO from the shipped configs (DESIGN.md §7.6).

The stage itself is :mod:`usermirrorer.data_pipeline.training.finetune`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from usermirrorer.data_pipeline.training.finetune import RECIPES, finetune, shipped_configs
from usermirrorer.data_pipeline.training.preference import pref_path
from usermirrorer.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``usermirrorer finetune sft|dpo``."""
    p = subparsers.add_parser(
        "finetune",
        help="SFT / DPO with torchtune from the shipped configs",
        description=(
            "Run a torchtune recipe from a shipped config (smollm2_135m_* on CPU, llama3_2_3b_* and "
            "qwen2_5_3b_* on GPU) on <project>/datasets/<CONFIG>_pref.jsonl. sft: full fine-tune on "
            "messages_chosen (1 epoch, lr 2e-4). dpo: LoRA DPO on messages_chosen/messages_rejected "
            "(beta 0.1, lr 1e-5, 2 epochs), merged. The result is a Hugging Face folder "
            "<output-dir>/model usable as UserSimulator(model=...)."
        ),
    )
    p.add_argument("stage", choices=sorted(RECIPES), help="sft or dpo")
    p.add_argument("--model", required=True, help="registry name or HF folder to start from (dpo: the SFT model)")
    p.add_argument("--pref", help="preference file (default: <project-path>/datasets/<config-name>_pref.jsonl)")
    p.add_argument("--project-path", help="working directory (with --config-name instead of --pref)")
    p.add_argument("--config-name", help="name used by `usermirrorer filter`")
    p.add_argument("--output-dir", required=True, help="torchtune output folder; the model goes to <dir>/model")
    p.add_argument("--config", help=f"config name or YAML path; shipped: {', '.join(sorted(shipped_configs()))}")
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="examples per optimizer step (sets gradient_accumulation_steps=1); "
                   "SmolLM2 DPO on CPU needs ~7 GB per pair, so its config accumulates 4 single pairs")
    p.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS) of the recipe")
    p.add_argument("overrides", nargs="*", help="extra torchtune key=value overrides")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.pref:
        pref = Path(args.pref)
    elif args.project_path and args.config_name:
        pref = pref_path(args.project_path, args.config_name)
    else:
        raise ConfigError("say which preference file to train on: --pref FILE, or --project-path W --config-name NAME")
    console = Console()
    with console.status(f"torchtune {RECIPES[args.stage]} ..."):
        result = finetune(args.stage, args.model, pref, args.output_dir, config=args.config,
                          overrides=args.overrides, max_steps_per_epoch=args.max_steps_per_epoch,
                          epochs=args.epochs, batch_size=args.batch_size, threads=args.threads)
    console.print(f"{args.stage} done in {result.seconds:.0f} s; model: {result.model_dir} (log: {result.log_file})")
    return 0
