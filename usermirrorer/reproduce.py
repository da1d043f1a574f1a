"""The whole method end to end (``usermirrorer reproduce``), from public logs to an evaluated simulator.

Stages (DESIGN.md §1, §3, §7, §8), each skipped or resumed when its output already exists:

1. ``preprocess``  original files -> ``raws/`` (ML-100K ships with the ``recbole`` package);
2. ``scenes``      eval scenes (standard and popularity-matched negatives) first, then train
                   scenes that leave out the eval users and interactions;
3. ``decisions``   strong and weak models write N thoughts per train scene (resumable);
4. ``probs``       the predictor scores every thought (resumable);
5. ``filter``      uncertainty filtering -> ``datasets/<profile>_pref.jsonl``;
6. ``sft``/``dpo`` torchtune fine-tuning -> ``checkpoints/<profile>/{sft,dpo}/model``;
7. ``eval``        base vs fine-tuned (and a popularity chooser) on both eval variants.

Profiles fix the sizes and models: ``cpu-smoke`` runs on 2 CPU cores in well under 30 minutes
with SmolLM2-135M; ``paper`` uses the paper's sizes (10 thoughts, 10,000 selected scenes) and
3B-class models on GPUs. Every field of a profile can be overridden from the command line.

The final summary (``reproduce/<profile>/summary.{json,md}``) lists each stage's time and the
eval metrics of every model side by side.
"""

from __future__ import annotations

import dataclasses
import resource
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from usermirrorer.data_pipeline.raw import load_raws, raw_paths
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, build_scene_file, scenes_path
from usermirrorer.data_pipeline.training.decisions import decisions_path, run_decisions
from usermirrorer.data_pipeline.training.finetune import finetune
from usermirrorer.data_pipeline.training.preference import run_filter
from usermirrorer.data_pipeline.training.probs import probs_path, run_probs
from usermirrorer.data_pipeline.training.uncertainty import FilterConfig
from usermirrorer.errors import ConfigError
from usermirrorer.preprocessing import ensure_raws
from usermirrorer.sim.evaluation import evaluate_file
from usermirrorer.sim.prompt_length import PromptLengthFilter

__all__ = ["Profile", "PROFILES", "STAGES", "StageTiming", "ReproduceSummary", "reproduce", "print_summary"]


@dataclass(frozen=True)
class Profile:
    """Sizes and models of one end-to-end run.

    Attributes:
        name: also names the preference file (``datasets/<name>_pref.jsonl``) and output folders.
        train_samples, eval_samples: scenes per dataset.
        train_exposure, eval_exposure: inclusive ``(min, max)`` exposure sizes K.
        embedder: content-scorer embedder of scene sampling (``minilm``, ``hashing``, ...).
        max_prompt_tokens: drop scenes whose decision prompt is longer (SmolLM2 tokenizer).
        n_thoughts, max_thought_tokens: decisions stage.
        strong_model, weak_model: write the thoughts.
        predictor_model: scores the thoughts (probs stage).
        base_model: the model fine-tuned and evaluated as "base".
        backend: LLM backend of decisions, probs and eval.
        dtype: transformers backend dtype ("auto": bf16 where the CPU/GPU supports it).
        threads: torch threads of every CPU stage.
        chunk_size: scenes per flush in decisions/probs.
        filtered_num: scenes kept by the filter.
        finetune_batch_size, sft_epochs, dpo_epochs, max_steps_per_epoch: fine-tuning overrides
            (None: the shipped config's value).
        eval_modes: simulator modes evaluated ("direct", "decision").
        eval_thoughts: decision-mode thoughts per eval scene.
        eval_repeat: behaviours sampled per eval scene.
        eval_sft: also evaluate the SFT-only checkpoint.
        baselines: non-LLM choice models evaluated alongside ("popularity", "collaborative").
        seed: seed of every stage.
    """

    name: str
    train_samples: int
    eval_samples: int
    train_exposure: tuple[int, int] = (2, 12)
    eval_exposure: tuple[int, int] = (5, 5)
    embedder: str | None = "minilm"
    max_prompt_tokens: int | None = None
    n_thoughts: int = 10
    max_thought_tokens: int = 256
    strong_model: str = "smollm2-135m"
    weak_model: str = "tiny-random"
    predictor_model: str = "smollm2-135m"
    base_model: str = "smollm2-135m"
    backend: str = "transformers"
    dtype: str = "auto"
    threads: int | None = 2
    chunk_size: int = 4
    filtered_num: int = 10_000
    finetune_batch_size: int | None = None
    sft_epochs: int | None = None
    dpo_epochs: int | None = None
    max_steps_per_epoch: int | None = None
    eval_modes: tuple[str, ...] = ("direct", "decision")
    eval_thoughts: int = 1
    eval_repeat: int = 10
    eval_sft: bool = False
    baselines: tuple[str, ...] = ("popularity",)
    seed: int = 0


PROFILES: dict[str, Profile] = {
    # 2 CPU cores, < 30 min. On CPU the cost is tokens: a ~650-token prompt read once per scene
    # (~1.8 s), ~0.3 s per decoding step of a batch, full fine-tuning ~25 s per step of
    # 4 x 750 tokens, LoRA DPO ~17 s per pair (fp32; bf16 is slower on this CPU). So: 48 train
    # scenes x 3 thoughts of <= 48 tokens from SmolLM2-135M (strong) and the tiny random model
    # (weak: a stand-in, SmolLM2 is the only real model on the machine), SmolLM2 as predictor
    # and base, 12 preference pairs (SFT 1 epoch, DPO 1 epoch instead of the paper's 2; the
    # shipped configs' batch of 4), 32 eval scenes per negative variant, prompts <= 768 tokens.
    "cpu-smoke": Profile(
        name="cpu-smoke", train_samples=48, eval_samples=32, train_exposure=(3, 5), eval_exposure=(5, 5),
        max_prompt_tokens=768, n_thoughts=3, max_thought_tokens=48, chunk_size=4, filtered_num=12,
        dpo_epochs=1, eval_modes=("decision", "direct"), eval_thoughts=1, eval_repeat=10,
    ),
    # The paper's recipe on GPUs (vLLM backend): 10 thoughts of <= 512 tokens, 10,000 pairs,
    # Qwen2.5-32B as strong writer and predictor, Llama-3.2-3B as weak writer and as the model
    # fine-tuned. Pass --base-model Qwen/Qwen2.5-3B-Instruct for the Qwen variant.
    "paper": Profile(
        name="paper", train_samples=5_000, eval_samples=1_000, train_exposure=(2, 12), eval_exposure=(5, 5),
        max_prompt_tokens=None, n_thoughts=10, max_thought_tokens=512,
        strong_model="Qwen/Qwen2.5-32B-Instruct", weak_model="meta-llama/Llama-3.2-3B-Instruct",
        predictor_model="Qwen/Qwen2.5-32B-Instruct", base_model="meta-llama/Llama-3.2-3B-Instruct",
        backend="vllm", threads=None, chunk_size=64, filtered_num=10_000, eval_modes=("decision",),
        eval_thoughts=1, eval_sft=True, baselines=("popularity", "collaborative"),
    ),
}


@dataclass
class StageTiming:
    """One stage of the run: name, what happened, wall seconds and CPU seconds.

    ``cpu_seconds`` counts this process and its finished children (the torchtune recipes);
    on a shared machine ``cpu_seconds / threads`` estimates the wall time the stage would
    take with the cores to itself.
    """

    stage: str
    status: str
    seconds: float
    detail: str = ""
    cpu_seconds: float = 0.0


@dataclass
class ReproduceSummary:
    """Everything the run produced: stage timings, artifacts and eval metrics."""

    profile: Profile
    project_path: Path
    datasets: tuple[str, ...]
    stages: list[StageTiming] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": dataclasses.asdict(self.profile), "project_path": str(self.project_path),
            "datasets": list(self.datasets), "seconds": round(self.seconds, 1),
            "stages": [dataclasses.asdict(s) for s in self.stages], "artifacts": self.artifacts,
            "evals": self.evals,
        }

    def markdown(self) -> str:
        cpu = sum(s.cpu_seconds for s in self.stages)
        lines = [f"# usermirrorer reproduce --profile {self.profile.name}", "",
                 f"project: `{self.project_path}`, datasets: {', '.join(self.datasets)}, "
                 f"total {self.seconds / 60:.1f} min wall, {cpu / 60:.1f} CPU-min", "", "## Stages", "",
                 "| stage | status | wall s | CPU s | detail |", "|---|---|---:|---:|---|"]
        lines += [f"| {s.stage} | {s.status} | {s.seconds:.1f} | {s.cpu_seconds:.0f} | {s.detail} |" for s in self.stages]
        lines += ["", "## Eval (accuracy = mean over scenes of sampled hits; 95% CI)", "",
                  "| dataset | negatives | model | mode | n | accuracy | 95% CI | log-loss (nats) | ECE | random 1/K |",
                  "|---|---|---|---|---:|---:|---|---:|---:|---:|"]
        for e in self.evals:
            lines.append(f"| {e['dataset']} | {e['negatives']} | {e['model']} | {e['mode']} | {e['n']} | "
                         f"{e['accuracy']:.3f} | [{e['ci_low']:.3f}, {e['ci_high']:.3f}] | {e['log_loss']:.3f} | "
                         f"{e['ece']:.3f} | {e['random_accuracy']:.3f} |")
        lines += ["", "## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in self.artifacts.items()]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------

def _stage_preprocess(w: Path, dataset: str, sources: dict[str, str]) -> str:
    report = ensure_raws(w, dataset, sources.get(dataset))
    return "skipped: raws exist" if report is None else f"{report!r}"


def _scene_config(profile: Profile, split: str, negatives: str):
    lo, hi = profile.train_exposure if split == "train" else profile.eval_exposure
    n = profile.train_samples if split == "train" else profile.eval_samples
    tokens = profile.max_prompt_tokens
    return SceneConfig(n_samples=n, min_exposure=lo, max_exposure=hi, split=split, seed=profile.seed,
                       negatives=negatives, embedder=profile.embedder, max_tokens=tokens,
                       tokenizer=profile.base_model if tokens is not None else None).validate()


def _stage_scenes(w: Path, dataset: str, profile: Profile) -> str:
    # eval first: the train split then leaves out the eval users and interactions
    plan = [("eval", "standard"), ("eval", "popularity-matched"), ("train", "standard")]
    done, ds = [], None
    for split, negatives in plan:
        if scenes_path(w, dataset, split, negatives).exists():
            continue
        ds = ds or load_raws(w, dataset)
        config = _scene_config(profile, split, negatives)
        length_filter = PromptLengthFilter.for_config(config) if config.max_tokens is not None else None
        report = build_scene_file(w, dataset, config, ds=ds, length_filter=length_filter)
        done.append(f"{split}/{negatives}: {report.written}")
    return ", ".join(done) if done else "skipped: scene files exist"


def _backend_kwargs(profile: Profile) -> dict[str, Any]:
    if profile.backend != "transformers":
        return {}
    kwargs: dict[str, Any] = {"dtype": profile.dtype}
    if profile.threads:
        kwargs["num_threads"] = profile.threads
    return kwargs


def _stage_decisions(w: Path, dataset: str, profile: Profile, version: str) -> str:
    model = profile.strong_model if version == "strong" else profile.weak_model
    report = run_decisions(w, dataset, model, version, n=profile.n_thoughts, backend=profile.backend,
                           seed=profile.seed, chunk_size=profile.chunk_size,
                           max_thought_tokens=profile.max_thought_tokens, backend_kwargs=_backend_kwargs(profile))
    return f"{model}: {report.written} written, {report.skipped} resumed"


def _stage_probs(w: Path, dataset: str, profile: Profile, version: str) -> str:
    report = run_probs(w, dataset, profile.predictor_model, version, backend=profile.backend,
                       chunk_size=profile.chunk_size, backend_kwargs=_backend_kwargs(profile))
    return f"{profile.predictor_model}: {report.written} written, {report.skipped} resumed"


def _stage_filter(w: Path, datasets: Sequence[str], profile: Profile) -> tuple[str, Path]:
    path, report = run_filter(w, profile.name, datasets, FilterConfig(filtered_num=profile.filtered_num, seed=profile.seed))
    return "; ".join(report.lines()), path


def _stage_finetune(w: Path, profile: Profile, stage: str, model: str, pref: Path) -> tuple[str, Path]:
    out = w / "checkpoints" / profile.name / stage
    if (out / "model" / "config.json").exists():
        return "skipped: checkpoint exists", out / "model"
    epochs = profile.sft_epochs if stage == "sft" else profile.dpo_epochs
    result = finetune(stage, model, pref, out, max_steps_per_epoch=profile.max_steps_per_epoch, epochs=epochs,
                      batch_size=profile.finetune_batch_size, threads=profile.threads)
    return f"{result.seconds:.0f} s in torchtune, log {result.log_file}", result.model_dir


def _stage_eval(w: Path, dataset: str, profile: Profile, models: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    rows, out_dir = [], w / "eval" / profile.name
    for negatives in ("standard", "popularity-matched"):
        scenes = scenes_path(w, dataset, "eval", negatives)
        runs = [(label, model, mode) for mode in profile.eval_modes for label, model in models.items()]
        runs += [(b, b, "direct") for b in profile.baselines]
        for label, model, mode in runs:
            out = out_dir / f"{dataset}_{negatives}_{label}_{mode}.jsonl"
            transformers = {"dtype": profile.dtype, "threads": profile.threads or None} if profile.backend == "transformers" else {}
            summary = evaluate_file(scenes, out, model, mode=mode, repeat=profile.eval_repeat, seed=profile.seed,
                                    project_path=w, backend=profile.backend, n_thoughts=profile.eval_thoughts,
                                    max_thought_tokens=profile.max_thought_tokens, **transformers)
            metrics = summary["datasets"].get(dataset) or next(iter(summary["datasets"].values()))
            rows.append({"dataset": dataset, "negatives": negatives, "model": label, "mode": mode,
                         **{k: metrics[k] for k in ("n", "accuracy", "ci_low", "ci_high", "log_loss", "ece",
                                                    "random_accuracy")}})
    return f"{len(rows)} evaluations", rows


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

STAGES = ("preprocess", "scenes", "decisions", "probs", "filter", "sft", "dpo", "eval")


def reproduce(project_path: str | os.PathLike, profile: Profile, datasets: Sequence[str], *,
              sources: dict[str, str] | None = None, stop_after: str | None = None,
              console: Any = None) -> ReproduceSummary:
    """Run every stage for ``datasets`` under ``profile``; resumable (re-run to continue).

    Args:
        project_path: working directory (DESIGN.md §2 layout).
        sources: dataset -> folder of its original files (not needed for ml-100k).
        stop_after: last stage to run (one of :data:`STAGES`).

    Returns:
        The summary, also written to ``<project>/reproduce/<profile>/summary.{json,md}``.
    """
    if not datasets:
        raise ConfigError("no datasets given; pass --datasets D [D ...] (e.g. ml-100k)")
    if stop_after is not None and stop_after not in STAGES:
        raise ConfigError(f"stop_after must be one of {list(STAGES)}, got {stop_after!r}")
    console = console or Console()
    w = Path(project_path)
    w.mkdir(parents=True, exist_ok=True)
    summary = ReproduceSummary(profile=profile, project_path=w, datasets=tuple(datasets))
    start = time.perf_counter()
    total = len(STAGES)

    def step(name: str, label: str, fn: Callable[[], Any]) -> Any:
        index = STAGES.index(name) + 1
        console.print(Rule(f"[{index}/{total}] {label}"))
        t0, c0 = time.perf_counter(), _cpu_seconds()
        out = fn()
        detail = out[0] if isinstance(out, tuple) else out
        status = "skipped" if str(detail).startswith("skipped") else "done"
        summary.stages.append(StageTiming(label, status, time.perf_counter() - t0, str(detail), _cpu_seconds() - c0))
        console.print(f"{label}: {status} in {summary.stages[-1].seconds:.1f} s "
                      f"({summary.stages[-1].cpu_seconds:.0f} CPU s) — {detail}")
        _write_summary(summary, time.perf_counter() - start)
        return out

    def finished(name: str) -> bool:
        return stop_after is not None and STAGES.index(name) >= STAGES.index(stop_after)

    for d in datasets:
        step("preprocess", f"preprocess {d}", lambda d=d: _stage_preprocess(w, d, sources or {}))
    if not finished("preprocess"):
        for d in datasets:
            step("scenes", f"scenes {d}", lambda d=d: _stage_scenes(w, d, profile))
    if not finished("scenes"):
        for d in datasets:
            for version in ("strong", "weak"):
                step("decisions", f"decisions {d}/{version}", lambda d=d, v=version: _stage_decisions(w, d, profile, v))
    if not finished("decisions"):
        for d in datasets:
            for version in ("strong", "weak"):
                step("probs", f"probs {d}/{version}", lambda d=d, v=version: _stage_probs(w, d, profile, v))
    if not finished("probs"):
        _, pref = step("filter", "filter", lambda: _stage_filter(w, datasets, profile))
        summary.artifacts["preferences"] = str(pref)
    if not finished("filter"):
        _, sft_model = step("sft", "sft", lambda: _stage_finetune(w, profile, "sft", profile.base_model, pref))
        summary.artifacts["sft_checkpoint"] = str(sft_model)
    if not finished("sft"):
        _, dpo_model = step("dpo", "dpo", lambda: _stage_finetune(w, profile, "dpo", str(sft_model), pref))
        summary.artifacts["checkpoint"] = str(dpo_model)
    if not finished("dpo"):
        models = {"base": profile.base_model}
        if profile.eval_sft:
            models["sft"] = str(sft_model)
        models["sft+dpo"] = str(dpo_model)
        for d in datasets:
            _, rows = step("eval", f"eval {d}", lambda d=d: _stage_eval(w, d, profile, models))
            summary.evals.extend(rows)
    _collect_artifacts(summary)
    summary.seconds = time.perf_counter() - start
    _write_summary(summary, summary.seconds)
    return summary


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _collect_artifacts(summary: ReproduceSummary) -> None:
    w = summary.project_path
    for d in summary.datasets:
        for kind, path in zip(("users", "items", "interactions"), raw_paths(w, d)):
            summary.artifacts[f"{d} raws {kind}"] = str(path)
        for kind in ("collaborative", "content"):
            path = w / "embeddings" / f"{d}.{kind}.safetensors"
            if path.exists():
                summary.artifacts[f"{d} embeddings {kind}"] = str(path)
        for split, neg in (("train", "standard"), ("eval", "standard"), ("eval", "popularity-matched")):
            summary.artifacts[f"{d} scenes {split} {neg}"] = str(scenes_path(w, d, split, neg))
        for v in ("strong", "weak"):
            summary.artifacts[f"{d} decisions {v}"] = str(decisions_path(w, d, v))
            summary.artifacts[f"{d} probs {v}"] = str(probs_path(w, d, v))
    missing = [k for k, v in summary.artifacts.items() if not Path(v).exists()]
    if missing:
        summary.artifacts["missing"] = ", ".join(missing)


def _write_summary(summary: ReproduceSummary, seconds: float) -> None:
    summary.seconds = seconds
    out = summary.project_path / "reproduce" / summary.profile.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary.markdown(), encoding="utf-8")


def print_summary(summary: ReproduceSummary, console: Any) -> None:
    stages = Table(title=f"reproduce --profile {summary.profile.name}: stages ({summary.seconds / 60:.1f} min)")
    for col in ("stage", "status", "wall s", "CPU s"):
        stages.add_column(col, justify="right" if col.endswith(" s") else "left")
    for s in summary.stages:
        stages.add_row(s.stage, s.status, f"{s.seconds:.1f}", f"{s.cpu_seconds:.0f}")
    console.print(stages)
    if summary.evals:
        table = Table(title="eval: base vs fine-tuned (accuracy over scenes, 95% CI)")
        for col in ("dataset", "negatives", "model", "mode", "n", "accuracy", "95% CI", "log-loss", "ECE", "1/K"):
            table.add_column(col)
        for e in summary.evals:
            table.add_row(e["dataset"], e["negatives"], e["model"], e["mode"], str(e["n"]), f"{e['accuracy']:.3f}",
                          f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]", f"{e['log_loss']:.3f}", f"{e['ece']:.3f}",
                          f"{e['random_accuracy']:.3f}")
        console.print(table)
    console.print(f"checkpoint: {summary.artifacts.get('checkpoint')}\nsummary: "
                  f"{summary.project_path / 'reproduce' / summary.profile.name / 'summary.md'}")
