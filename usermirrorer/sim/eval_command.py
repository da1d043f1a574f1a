"""``usermirrorer eval``: how well a simulator reproduces real choices (DESIGN.md §8).

Reads scenes (``datasets/<D>_eval.jsonl``), asks the choice model for each scene's
distribution, samples ``--repeat`` behaviours per scene with a per-scene seeded generator and
writes one record per scene to ``--output`` (appended as it goes; a re-run skips scenes
already there, so an interrupted run resumes). Then prints a table per dataset — accuracy
with 95% CI, top-1 accuracy, log-loss (nats), ECE, the random 1/K accuracy, per-letter choice share — and
writes it as JSON next to the output (``<output>.summary.json``).

Output record: ``scene_id, dataset, user_id, item_id, item_pos, n_options, probs, hits,
repeat, model, mode`` (+ ``rationales`` and ``thought_probs`` in decision mode).

This module must stay cheap to import (the CLI lists it): torch is imported in ``run``.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from usermirrorer.errors import ConfigError, DataError, data_problem

__all__ = ["add_parser", "run", "scene_target"]

_BASELINES = ("random", "popularity", "collaborative")


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
                        + ", ".join(_BASELINES) + " (default: smollm2-135m)")
    parser.add_argument("--input", required=True, help="scenes JSONL (e.g. <project>/datasets/<D>_eval.jsonl)")
    parser.add_argument("--output", required=True, help="per-scene results JSONL (appended; resumable)")
    parser.add_argument("--mode", choices=["direct", "decision"], default="direct",
                        help="direct: letter right away; decision: thoughts, then letter (default: direct)")
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
    parser.set_defaults(func=run)
    return parser


def scene_target(scene: dict[str, Any], where: str) -> int:
    """Index of the real item in the scene's exposure list (``item_pos``, else found by id)."""
    n = len(scene.get("text", {}).get("action_list", []) or [])
    pos = scene.get("item_pos")
    if pos is None and "impression_list" in scene and "item_id" in scene:
        try:
            pos = list(scene["impression_list"]).index(scene["item_id"])
        except ValueError:
            pos = None
    if not isinstance(pos, int) or not 0 <= pos < n:
        raise DataError("scene without a valid real-item position",
                        [data_problem(where, None, "item_pos", f"expected an index into the {n} options, got {pos!r}")])
    return pos


def _scene_rng(seed: int, sid: str) -> np.random.Generator:
    # Per-scene stream: a scene's sampled behaviours do not depend on batching or resuming.
    return np.random.default_rng([int(seed), zlib.crc32(sid.encode("utf-8"))])


def _load_scenes(path: Path, limit: int | None) -> list[tuple[int, dict]]:
    from usermirrorer.data_pipeline.jsonl import iter_jsonl

    if not path.exists():
        raise ConfigError(f"--input {str(path)!r} does not exist; build scenes with `usermirrorer scenes` first")
    scenes = []
    for lineno, record in iter_jsonl(path):
        scenes.append((lineno, record))
        if limit is not None and len(scenes) >= limit:
            break
    if not scenes:
        raise DataError("no scenes to evaluate", [data_problem(path, None, None, "the file has no records")])
    return scenes


class _ChoiceModels:
    """The choice model per dataset: one simulator for all, or one baseline per raw dataset."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.baseline = args.model in _BASELINES
        self._models: dict[str, Any] = {}
        if not self.baseline:
            from usermirrorer.sim import SimOptions, UserSimulator, load_prompts

            options = SimOptions(
                mode=args.mode, n_thoughts=args.n_thoughts, temperature=args.temperature, top_p=args.top_p,
                max_thought_tokens=args.max_thought_tokens, batch_size=args.batch_size, seed=args.seed,
                truncate_history=args.truncate_history,
            )
            kwargs: dict[str, Any] = {}
            if args.backend in ("transformers", "hf"):
                kwargs = {"dtype": args.dtype, "share_prefix": not args.no_share_prefix, "num_threads": args.threads,
                          "remember_rows": False}  # eval scenes do not repeat: keep only shared prefixes
            prompts = load_prompts(args.prompts) if args.prompts else None
            self.simulator = UserSimulator(args.model, backend=args.backend, options=options, prompts=prompts, **kwargs)

    def for_dataset(self, dataset: str):
        if not self.baseline:
            return self.simulator
        if dataset not in self._models:
            try:
                from usermirrorer.sim.baselines import make_choice_model
            except ImportError:
                raise ConfigError(
                    f"--model {self.args.model!r} needs the non-LLM choice models (usermirrorer.sim.baselines), "
                    "which this installation lacks"
                ) from None
            if not self.args.project_path:
                raise ConfigError(f"--model {self.args.model!r} reads the interaction log: pass --project-path")
            from usermirrorer.data_pipeline.raw import load_raws

            self._models[dataset] = make_choice_model(self.args.model, load_raws(self.args.project_path, dataset))
        return self._models[dataset]

    @property
    def description(self) -> str:
        return self.args.model if self.baseline else repr(self.simulator.backend)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from usermirrorer.data_pipeline.jsonl import JsonlAppender, done_keys, iter_jsonl
    from usermirrorer.sim.metrics import sampled_hits
    from usermirrorer.sim.prompts import scene_id

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file or pipe: do not squeeze the table to 80 columns
    in_path, out_path = Path(args.input), Path(args.output)
    scenes = _load_scenes(in_path, args.limit)
    ids: list[str] = []
    for lineno, scene in scenes:
        scene_target(scene, f"{in_path}:{lineno}")
        ids.append(scene_id(scene))
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError("scene ids are not unique; resuming needs them", [data_problem(in_path, None, "scene_id", f"{dup!r} repeats")])
    done = done_keys(out_path, lambda r: r.get("scene_id"))
    todo = [(sid, lineno, s) for sid, (lineno, s) in zip(ids, scenes) if sid not in done]
    # One dataset per batch, so per-dataset speed is measurable and baselines are per dataset.
    by_dataset: dict[str, list[tuple[str, int, dict]]] = {}
    for item in todo:
        by_dataset.setdefault(str(item[2].get("dataset", "")), []).append(item)
    console.print(f"[bold]usermirrorer eval[/]: {len(scenes)} scenes, {len(scenes) - len(todo)} already in {out_path}, "
                  f"{len(todo)} to score")

    seconds: dict[str, float] = {}
    counted: dict[str, int] = {}
    if todo:
        models = _ChoiceModels(args)
        console.print(f"model: {models.description}, mode: {args.mode}")
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        with progress, JsonlAppender(out_path) as out:
            task = progress.add_task("scoring", total=len(todo))
            for dataset, items in by_dataset.items():
                model = models.for_dataset(dataset)
                for start in range(0, len(items), args.batch_size):
                    chunk = items[start : start + args.batch_size]
                    t0 = time.perf_counter()
                    results = model.choice_probs([s for _, _, s in chunk], mode=args.mode,
                                                 n_thoughts=args.n_thoughts, seed=args.seed + start)
                    seconds[dataset] = seconds.get(dataset, 0.0) + time.perf_counter() - t0
                    counted[dataset] = counted.get(dataset, 0) + len(chunk)
                    records = []
                    for (sid, lineno, scene), res in zip(chunk, results):
                        target = scene_target(scene, f"{in_path}:{lineno}")
                        hits = int(sampled_hits([res.probs], [target], args.repeat, _scene_rng(args.seed, sid))[0])
                        rec = {
                            "scene_id": sid, "dataset": dataset, "user_id": scene.get("user_id"),
                            "item_id": scene.get("item_id"), "item_pos": target, "n_options": len(res.probs),
                            "probs": [round(float(p), 6) for p in res.probs], "hits": hits, "repeat": args.repeat,
                            "model": args.model, "mode": args.mode,
                        }
                        if res.rationales:
                            rec["rationales"] = res.rationales
                        if res.thought_probs is not None:
                            rec["thought_probs"] = np.round(res.thought_probs, 6).tolist()
                        records.append(rec)
                    out.write(records)
                    progress.advance(task, len(chunk))

    # Metrics over every finished record of the input scenes (this run and earlier ones).
    wanted = set(ids)
    finished = {}
    for _, rec in iter_jsonl(out_path):
        if rec.get("scene_id") in wanted:
            finished[rec["scene_id"]] = rec
    records = [finished[i] for i in ids if i in finished]
    summary = _summarize(records)
    speed = {d: counted[d] / seconds[d] for d in counted if seconds.get(d, 0) > 0}
    _print_table(console, summary, speed, args)
    summary_path = out_path.with_name(out_path.name + ".summary.json")
    payload = {
        "model": args.model, "mode": args.mode, "input": str(in_path), "repeat": records[0]["repeat"] if records else args.repeat,
        "log_loss_unit": "nats", "accuracy_ci": "95% normal approximation over scenes",
        "datasets": {k: {**v.to_dict(), "scenes_per_s": speed.get(k)} for k, v in summary.items()},
    }
    summary_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    console.print(f"per-scene results: {out_path}\nsummary: {summary_path}")
    return 0


def _summarize(records: list[dict]) -> dict:
    from usermirrorer.sim.metrics import summarize_by_group

    if not records:
        return {}
    repeats = {r["repeat"] for r in records}
    if len(repeats) > 1:
        raise ConfigError(f"the output file mixes --repeat values {sorted(repeats)}; use a fresh --output")
    return summarize_by_group(
        [r["dataset"] for r in records],
        [np.asarray(r["probs"], dtype=np.float64) for r in records],
        [r["item_pos"] for r in records],
        [r["hits"] for r in records],
        repeats.pop(),
    )


def _print_table(console, summary: dict, speed: dict[str, float], args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(title=f"eval: {args.model} ({args.mode}), accuracy over {args.repeat} sampled behaviours per scene")
    for col, justify in (("dataset", "left"), ("n", "right"), ("acc % [95% CI]", "right"), ("top-1 %", "right"), ("random %", "right"),
                         ("log-loss nats", "right"), ("ECE", "right"), ("choice share A.. %", "left"),
                         ("real item at A.. %", "left"), ("scenes/s", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for name, s in summary.items():
        ci = f"{100 * s.accuracy:.1f} [{100 * s.ci_low:.1f}, {100 * s.ci_high:.1f}]" if np.isfinite(s.ci_low) else f"{100 * s.accuracy:.1f}"
        share = " ".join(f"{100 * x:.0f}" for x in s.letter_share)
        tshare = " ".join(f"{100 * x:.0f}" for x in s.target_share)
        sp = speed.get(name)
        table.add_row(name, str(s.n), ci, f"{100 * s.top1_accuracy:.1f}", f"{100 * s.random_accuracy:.1f}", f"{s.log_loss:.3f}", f"{s.ece:.3f}",
                      share, tshare, f"{sp:.2f}" if sp else "—")
    console.print(table)
