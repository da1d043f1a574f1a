"""Likelihood-mode training speed against what this CPU's matrix units can do.

Reads the ``training.json`` of every ``usermirrorer train`` run in a project, measures the
machine's dense matmul rate at the training's shapes (fp32 and bf16, the training's thread
count), and reports examples/s, the FLOPs one example costs (the recipe's estimate) and the
share of the measured matmul rate the training reached.

    python benchmarks/likelihood_training.py --project-path workspace/fidelity-bench

Writes benchmarks/results/likelihood_training.{md,json}. Run it on an otherwise idle machine:
the matmul rate is measured now, the training rate when the training ran (its load average is
in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from usermirrorer.fidelity.workspace import load_likelihood_ft_manifests


def matmul_gflops(dtype_name: str, threads: int, seconds: float = 4.0) -> float:
    """Dense ``(512 x 576) @ (576 x 1536)`` rate (SmolLM2's MLP shape over a 512-token block)."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(10):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 512 * 576 * 1536 * n / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-path", default="./workspace", help="project of the `usermirrorer train` runs")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    manifests = load_likelihood_ft_manifests(args.project_path)
    if not manifests:
        parser.error(f"no finished `usermirrorer train` run under {args.project_path}/fidelity/likelihood-ft/")
    rows = []
    for m in manifests:
        threads = m["threads"]
        peak = {d: matmul_gflops(d, threads) for d in ("fp32", "bf16")}
        used = "bf16" if m["autocast_bf16"] else "fp32"
        rows.append({"loss": m["loss"], "command": m["command"], "examples": m["train_scenes"],
                     "train_seconds": m["train_seconds"], "examples_per_second": m["examples_per_second"],
                     "tokens_per_example": m["tokens_per_example"], "gflop_per_example": m["flops_per_example"] / 1e9,
                     "achieved_gflops": m["achieved_gflops"], "threads": threads, "dtype": used,
                     "matmul_gflops": peak, "share_of_matmul": m["achieved_gflops"] / peak[used],
                     "load_at_end": m.get("load")})
    load_now = [round(x, 2) for x in os.getloadavg()]
    lines = ["# Likelihood-mode training speed (CPU)", "",
             (f"Machine: {platform.machine()}, {os.cpu_count()} cores; load average now {load_now}. Matmul rate: "
              "`(512x576) @ (576x1536)` measured now at each training's thread count; training rate: as recorded "
              "in its training.json (load average at the end of that training in the last column)."), "",
             ("| loss | examples | min | examples/s | tokens/example | GFLOP/example | achieved GFLOP/s | dtype | "
              "matmul GFLOP/s fp32 / bf16 | share of matmul rate | load at end | command |"),
             "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['examples']} | {r['train_seconds'] / 60:.1f} | {r['examples_per_second']} | "
                     f"{r['tokens_per_example']:.0f} | {r['gflop_per_example']:.0f} | {r['achieved_gflops']} | "
                     f"{r['dtype']} | {r['matmul_gflops']['fp32']:.0f} / {r['matmul_gflops']['bf16']:.0f} | "
                     f"{100 * r['share_of_matmul']:.0f}% | {r['load_at_end']} | `{r['command']}` |")
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "likelihood_training.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "likelihood_training.json").write_text(json.dumps({"load_now": load_now, "rows": rows}, indent=1) + "\n",
                                                  encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
