"""Scale-out costs on one machine: the Ray engine of the offline stages and the env scoring service.

Three measurements, all with the tiny random model in fp32 (the cost of the machinery, not of
a model; pass ``--model smollm2-135m`` for a real one) on MovieLens-100K scenes:

(a) **Per-batch overhead of the Ray path**: the ``probs`` stage's per-chunk function
    (:class:`~usermirrorer.data_pipeline.training.probs.ProbsChunks`, letter scoring) over the
    same chunks in process and on one Ray actor. Steady time per chunk = (last chunk's records
    on the driver - the model ready in its actor) / chunks: start-up (Dataset planning, actor
    start, model load) is left out and reported apart; shipping chunks and records is in. The
    Ray path's overhead is the difference of the two.
(b) **Throughput with 1 vs 2 Ray workers**: the ``decisions`` stage's per-chunk function
    (thought generation, the heaviest stage; chunks of 2 scenes) in process and on 1 and 2
    actors, steady rate as in (a). 2 cores cap the ratio at 2.
(c) **Env steps/s through one scoring service**: ``ServedVectorEnv`` with 1, 2 and 4 worker
    processes (``--envs-per-worker`` sub-envs each) against ``usermirrorer serve``'s service
    (in a thread of this process), vs the in-process ``RecVectorEnv`` with the same number
    of sub-envs. Random slates; sub-env steps per second after a warm-up step.

The local Ray cluster (``--cpus`` CPUs) is started once, before (a); its start time is reported
apart. The 1-minute load average and ``uptime`` are recorded: the cores may be shared.

    python benchmarks/scale.py
    python benchmarks/scale.py --model smollm2-135m --env-steps 4

Writes benchmarks/results/scale.{md,json}.
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
    p = argparse.ArgumentParser(description="Ray engine overhead and env scoring-service throughput.")
    p.add_argument("--model", default="tiny-random", help="model of every run (default tiny-random)")
    p.add_argument("--scenes", type=int, default=48, help="eval scenes of (a) (default 48)")
    p.add_argument("--batch-size", type=int, default=4, help="scenes per eval batch in (a) (default 4)")
    p.add_argument("--decision-scenes", type=int, default=16, help="scenes of (b) (default 16)")
    p.add_argument("--thoughts", type=int, default=2, help="thoughts per scene in (b) (default 2)")
    p.add_argument("--thought-tokens", type=int, default=24, help="tokens per thought in (b) (default 24)")
    p.add_argument("--env-steps", type=int, default=12, help="timed env steps per configuration in (c) (default 12)")
    p.add_argument("--envs-per-worker", type=int, default=2, help="sub-envs per env worker in (c) (default 2)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    p.add_argument("--out", default=str(RESULTS / "scale"), help="output stem (default benchmarks/results/scale)")
    return p.parse_args(argv)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {os.getloadavg()}"


def eval_scenes(ds, n: int, seed: int = 0) -> list[dict]:
    from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, sample_scenes

    config = SceneConfig(n_samples=n, min_exposure=5, max_exposure=5, split="eval", seed=seed, embedder=None)
    return sample_scenes(ds, config)[0]


# ---------------------------------------------------------------------- (a), (b): chunks through an engine
class Stamped:
    """A stage's chunk function that also reports when its model was ready (wall clock).

    Ray Data hands results to the driver in bursts, so arrival times alone would hide the
    actors' work; the span from "model loaded" to "last records on the driver" does not.
    """

    def __init__(self, process):
        self.process, self.loaded_at = process, None

    def load(self) -> None:
        self.process.load()
        self.loaded_at = time.time()

    def __call__(self, chunk, ci):
        records = self.process(chunk, ci)
        return [{**records[0], "_loaded_at": self.loaded_at}, *records[1:]]


def steady_per_chunk(process, chunks, engine) -> float:
    """Seconds per chunk from the first model being ready to the last chunk's records on the
    driver: start-up (Ray planning, actor start, model load) left out, delivery included."""
    from usermirrorer.data_pipeline.ray_engine import in_process

    stamped = Stamped(process)
    if engine is None:
        stamped.load()
    loaded = []
    for _, records in (in_process(stamped, chunks) if engine is None else engine.map_chunks(stamped, chunks)):
        loaded.append(records[0]["_loaded_at"])
    return (time.time() - min(loaded)) / len(chunks)


def with_ids(scenes: list[dict]) -> list[dict]:
    return [{**s, "scene_id": f"{s['user_id']}:{i}", "dataset": DATASET} for i, s in enumerate(scenes)]


def per_batch_overhead(scenes: list[dict], args) -> dict:
    from usermirrorer.data_pipeline.ray_engine import RayEngine
    from usermirrorer.data_pipeline.training.probs import ProbsChunks

    # the probs stage: one letter distribution per (scene, thought); thoughts are fixed texts
    items = [{**s, "thoughts": ["Thought:\nStimulus: a quiet evening.\nKnowledge: I liked similar films.\n"
                                "Evaluation: habitual."]} for s in with_ids(scenes)]
    chunks = [(i, items[j:j + args.batch_size]) for i, j in enumerate(range(0, len(items), args.batch_size))]
    rows = {}
    for label, engine in (("in process", None), ("Ray, 1 actor", RayEngine(workers=1))):
        began = time.perf_counter()
        per_batch = steady_per_chunk(ProbsChunks(model=args.model, version="strong",
                                                 backend_kwargs={"dtype": "float32"}), chunks, engine)
        wall = time.perf_counter() - began
        rows[label] = {"wall_s": wall, "start_up_s": wall - per_batch * len(chunks), "per_batch_s": per_batch,
                       "load_avg_1m": os.getloadavg()[0]}
        print(f"(a) {label}: {len(chunks)} batches in {rows[label]['wall_s']:.2f} s, steady "
              f"{rows[label]['per_batch_s'] * 1000:.1f} ms per batch", flush=True)
    return {"stage": "probs (letter scoring)", "batches": len(chunks), "batch_size": args.batch_size, "runs": rows,
            "ray_overhead_per_batch_s": rows["Ray, 1 actor"]["per_batch_s"] - rows["in process"]["per_batch_s"],
            "ray_extra_start_up_s": rows["Ray, 1 actor"]["start_up_s"] - rows["in process"]["start_up_s"]}


def worker_throughput(scenes: list[dict], args) -> dict:
    from usermirrorer.data_pipeline.ray_engine import RayEngine
    from usermirrorer.data_pipeline.training.decisions import DecisionChunks

    items = with_ids(scenes)
    chunks = [(i, items[j:j + 2]) for i, j in enumerate(range(0, len(items) - 1, 2))]  # whole chunks of 2
    rows = {}
    for label, engine in (("in process", None), ("Ray, 1 actor", RayEngine(workers=1)),
                          ("Ray, 2 actors", RayEngine(workers=2))):
        process = DecisionChunks(model=args.model, version="strong", n=args.thoughts, seed=0,
                                 max_thought_tokens=args.thought_tokens, batch_size=2 * args.thoughts,
                                 backend_kwargs={"dtype": "float32"})
        began = time.perf_counter()
        rate = 2 / steady_per_chunk(process, chunks, engine)
        rows[label] = {"wall_s": time.perf_counter() - began, "steady_scenes_per_s": rate,
                       "load_avg_1m": os.getloadavg()[0]}
        print(f"(b) {label}: {len(items)} scenes in {rows[label]['wall_s']:.2f} s, steady {rate:.2f} scenes/s",
              flush=True)
    base = rows["Ray, 1 actor"]["steady_scenes_per_s"]
    return {"stage": "decisions (thought generation)", "scenes": len(items), "thoughts": args.thoughts,
            "thought_tokens": args.thought_tokens, "chunk_size": 2, "runs": rows,
            "ratio_2_vs_1_actors": rows["Ray, 2 actors"]["steady_scenes_per_s"] / base,
            "ratio_1_actor_vs_in_process": base / rows["in process"]["steady_scenes_per_s"]}


# ---------------------------------------------------------------------- (c) env service
def env_rate(envs, n_items: int, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    k = envs.single_action_space.shape[0]
    envs.reset(seed=seed)
    slates = lambda: np.stack([rng.choice(n_items, k, replace=False) for _ in range(envs.num_envs)])  # noqa: E731
    envs.step(slates())  # warm-up: first requests, KV caches
    began = time.perf_counter()
    for _ in range(steps):
        envs.step(slates())
    return envs.num_envs * steps / (time.perf_counter() - began)


def env_service(ds, args) -> dict:
    from usermirrorer.envs import RecVectorEnv
    from usermirrorer.envs.workers import ServedVectorEnv
    from usermirrorer.sim.serving import start_server

    env_kwargs = dict(dataset=ds, exposure_size=5, max_steps=10_000)
    rows = []
    with start_server(args.model, backend_kwargs={"dtype": "float32"}) as server:
        for workers in (1, 2, 4):
            total = workers * args.envs_per_worker
            local = RecVectorEnv(num_envs=total, model=args.model, backend_kwargs={"dtype": "float32"}, **env_kwargs)
            in_process = env_rate(local, ds.n_items, args.env_steps)
            local.close()
            stats = server.service.stats
            before = (stats.batches, stats.scoring_requests)
            served = ServedVectorEnv(workers=workers, envs_per_worker=args.envs_per_worker, model=args.model,
                                     backend="openai",
                                     backend_kwargs={"base_url": server.url, "vllm_extensions": True}, **env_kwargs)
            try:
                rate = env_rate(served, ds.n_items, args.env_steps)
            finally:
                served.close()
            batches, requests = stats.batches - before[0], stats.scoring_requests - before[1]
            rows.append({"workers": workers, "sub_envs": total, "in_process_steps_per_s": in_process,
                         "served_steps_per_s": rate, "served_vs_in_process": rate / in_process,
                         "requests_per_forward": requests / max(batches, 1), "load_avg_1m": os.getloadavg()[0]})
            print(f"(c) {workers} worker(s) x {args.envs_per_worker}: served {rate:.1f} steps/s, in process "
                  f"{in_process:.1f} steps/s, {rows[-1]['requests_per_forward']:.1f} requests per forward", flush=True)
    return {"envs_per_worker": args.envs_per_worker, "steps": args.env_steps, "rows": rows}


# ---------------------------------------------------------------------- report
def markdown(r: dict) -> str:
    m, a, b, c = r["machine"], r["overhead"], r["throughput"], r["env"]
    lines = [
        "# Scale-out on one machine: the Ray engine and the env scoring service",
        "",
        f"Machine: {m['platform']}, **{m['cpus']} CPUs**, Python {m['python']}, ray {m['ray']}; model "
        f"`{r['model']}` in float32. `uptime` at start: `{m['uptime_start']}`; at end: `{m['uptime_end']}` "
        "(absolute rates vary with load; the rows of a section were measured back to back).",
        "",
        f"Command: `python benchmarks/scale.py {' '.join(r['argv'])}`. Local Ray cluster: {r['ray_cpus']} CPUs, "
        f"started in {r['ray_start_s']:.1f} s (excluded below). Threads: the in-process runs use torch's "
        f"default ({r['torch_threads']} here); each Ray actor its share of the cluster's CPUs (all of them for 1 "
        "actor, 1 each for 2); the scoring service runs its model in one thread of torch's default width. The "
        "load average counts this benchmark's own processes too.",
        "",
        f"## (a) Per-batch overhead of the Ray path ({a['stage']}, {a['batches']} batches of {a['batch_size']} scenes)",
        "",
        "| engine | wall s (with start-up) | steady ms per batch | load |",
        "|---|---:|---:|---:|",
    ]
    for label, row in a["runs"].items():
        lines.append(f"| {label} | {row['wall_s']:.2f} | {row['per_batch_s'] * 1000:.1f} | {row['load_avg_1m']:.2f} |")
    lines += ["", f"Ray overhead per batch: **{a['ray_overhead_per_batch_s'] * 1000:.1f} ms**; extra start-up of a "
              f"Ray run (Dataset planning, actor start, model load in the actor): **{a['ray_extra_start_up_s']:.1f} s**.",
              "", f"## (b) Throughput with 1 vs 2 Ray workers ({b['stage']}: {b['scenes']} scenes, {b['thoughts']} "
              f"thoughts of {b['thought_tokens']} tokens, chunks of {b['chunk_size']})", "",
              "| engine | wall s (with start-up) | steady scenes/s | load |", "|---|---:|---:|---:|"]
    for label, row in b["runs"].items():
        lines.append(f"| {label} | {row['wall_s']:.2f} | {row['steady_scenes_per_s']:.2f} | {row['load_avg_1m']:.2f} |")
    lines += ["", f"2 actors vs 1: **{b['ratio_2_vs_1_actors']:.2f}x** (at most 2 on {m['cpus']} cores, less when the "
              f"cores are shared); 1 actor vs in process: {b['ratio_1_actor_vs_in_process']:.2f}x.", "",
              f"## (c) Env steps through one scoring service ({c['envs_per_worker']} sub-envs per worker, "
              f"{c['steps']} timed steps)", "",
              "| workers | sub-envs | served steps/s | in-process RecVectorEnv steps/s | served / in process | "
              "requests per forward | load |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in c["rows"]:
        lines.append(f"| {row['workers']} | {row['sub_envs']} | {row['served_steps_per_s']:.1f} | "
                     f"{row['in_process_steps_per_s']:.1f} | {row['served_vs_in_process']:.2f} | "
                     f"{row['requests_per_forward']:.1f} | {row['load_avg_1m']:.2f} |")
    lines += ["", "A step is one sub-env step (a slate scored, a choice drawn). The served path pays an HTTP "
              "round trip per scene and a process hop per worker; it pays off when the model's forward "
              "dominates (a real model, many workers sharing its batches) and the box has cores for the workers.",
              ""]
    return "\n".join(lines)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    from usermirrorer.data_pipeline.raw import load_raws
    from usermirrorer.preprocessing import locate_raws

    up_start = uptime()
    ds = load_raws(locate_raws(".", DATASET), DATASET)
    scenes = eval_scenes(ds, max(args.scenes, args.decision_scenes))
    began = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start = time.perf_counter() - began
    try:
        overhead = per_batch_overhead(scenes[:args.scenes], args)
        throughput = worker_throughput(scenes[:args.decision_scenes], args)
    finally:
        ray.shutdown()
    env = env_service(ds, args)
    report = {
        "model": args.model, "argv": list(argv if argv is not None else sys.argv[1:]), "ray_cpus": args.cpus,
        "ray_start_s": ray_start, "torch_threads": _torch_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray.__version__, "uptime_start": up_start, "uptime_end": uptime()},
        "overhead": overhead, "throughput": throughput, "env": env,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
