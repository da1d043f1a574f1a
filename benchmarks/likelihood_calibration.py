"""Does a richer calibration map than one temperature lift a likelihood row's held-out E[acc]?

Reads one likelihood-mode row's cached answers from a fidelity-benchmark project (every option's
log-likelihood after the scene's context, after the neutral context, and its token count), fits
each map below by log-loss on the row's train-user fit scenes, and scores it on the eval scenes
of both variants. No model runs: run ``usermirrorer bench fidelity`` first.

    python benchmarks/likelihood_calibration.py --project-path workspace/fidelity-bench

Maps (each a log-linear pool of score terms, :mod:`usermirrorer.sim.pool`): PMI / T (the table's
rule); PMI divided by tokens^a; a temperature gated by the scene's own PMI spread; the context and
neutral log-likelihoods weighted separately, plain and gated. Writes
benchmarks/results/likelihood_calibration.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from usermirrorer.data_pipeline.jsonl import iter_jsonl
from usermirrorer.fidelity.benchmark import FidelityConfig, train_fit_scenes
from usermirrorer.fidelity.eval_scenes import VARIANTS, scenes_fingerprint
from usermirrorer.fidelity.workspace import (
    FidelityPaths,
    ensure_eval_scenes,
    ensure_split,
    load_benchmark_raws,
    load_likelihood_ft_manifests,
)
from usermirrorer.sim.pool import fit_pool_weights, pool_probs, pool_terms


def _table(path: Path, scenes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 3, K)`` likelihoods (context, neutral, tokens) and the real positions, in cache order."""
    pos = {str(s["scene_id"]): int(s["item_pos"]) for s in scenes}
    recs = [r for _, r in iter_jsonl(path) if r["scene_id"] in pos and "likelihood" in r]
    return np.array([r["likelihood"] for r in recs]), np.array([pos[r["scene_id"]] for r in recs])


def _maps(lik: np.ndarray) -> dict[str, tuple[list[np.ndarray], int | None]]:
    """Map name -> (score terms, gate index or None)."""
    lp, prior, tokens = lik[:, 0], lik[:, 1], np.maximum(lik[:, 2], 1.0)
    pmi = lp - prior
    out: dict[str, tuple[list[np.ndarray], int | None]] = {"PMI / T (the table's rule)": ([pmi], None)}
    for a in (0.25, 0.5, 0.75, 1.0):
        out[f"PMI / tokens^{a} / T"] = ([pmi / tokens**a], None)
    out["PMI, T gated by the scene's PMI spread"] = ([pmi], 0)
    out["context and neutral log-likelihoods weighted apart"] = ([lp, prior], None)
    out["the same, gated by the PMI spread"] = ([pmi, prior], 0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-path", default="./workspace", help="the fidelity benchmark's project")
    parser.add_argument("--row", default="trained-listwise-2800-ex-likelihood",
                        help="part of the row's cache file name (under <project>/fidelity/cache/<scenes>/<variant>/)")
    parser.add_argument("--fit-scenes", type=int, default=600, help="the benchmark's --likelihood-fit-scenes")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    config = FidelityConfig(project_path=args.project_path)  # the benchmark's default scenes and split
    ds = load_benchmark_raws(config.project_path, config.dataset)
    split = ensure_split(ds, config.project_path, config.seed, config.eval_user_fraction)
    scenes, _ = ensure_eval_scenes(ds, config.scene_spec, split, config.project_path, progress=False)
    fit, _ = train_fit_scenes(ds, split, config)  # the same scenes and ids the benchmark's cache holds
    cache = FidelityPaths(args.project_path).cache / scenes_fingerprint(scenes)

    def one(folder: str, fit_file: bool) -> Path:
        found = [p for p in sorted((cache / folder).glob(f"*{args.row}*.jsonl")) if ("-fit-" in p.name) == fit_file]
        if len(found) != 1:
            parser.error(f"expected one cache file matching {args.row!r} under {cache / folder}, found {len(found)}: "
                         "run `usermirrorer bench fidelity` first, or pass --row")
        return found[0]

    fit_lik, fit_y = _table(one("train-users", True), fit[: args.fit_scenes])
    evals = {v: _table(one(v, False), scenes[v]) for v in VARIANTS}
    eval_maps = {v: _maps(lik) for v, (lik, _) in evals.items()}
    rows = []
    for name, (terms, gate) in _maps(fit_lik).items():
        weights = fit_pool_weights(pool_terms(terms, gate), fit_y, l2=1e-6)
        row = {"map": name, "weights": np.round(weights, 5).tolist()}
        for v, (_, y) in evals.items():
            p = pool_probs(pool_terms(eval_maps[v][name][0], gate), weights)
            hit = p[np.arange(len(y)), y]
            row[v] = {"scenes": len(y), "expected_accuracy": float(hit.mean()),
                      "top1": float((p.argmax(axis=1) == y).mean()), "log_loss": float(-np.log(hit).mean())}
        rows.append(row)
    load = [round(x, 2) for x in os.getloadavg()]
    trainings = "; ".join(f"`{m['command']}` ({m['train_scenes']} scenes, {m['train_seconds'] / 60:.1f} min, "
                          f"{'bf16' if m['autocast_bf16'] else 'fp32'})"
                          for m in load_likelihood_ft_manifests(args.project_path))
    lines = ["# Likelihood-mode calibration maps (held-out ML-100K users, K=5)", "",
             (f"Row: cache files matching `{args.row}` in `{cache}`; maps fitted by log-loss on its "
             f"{len(fit_y)} train-user fit scenes, scored on {len(evals['standard'][1])} + "
             f"{len(evals['popularity-matched'][1])} eval scenes. Load average {load} (no model runs). "
             f"Trainings in this project: {trainings or 'none'}."), "",
             "| map | weights | standard E[acc] % | top-1 % | log-loss | popularity-matched E[acc] % | top-1 % | log-loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{100 * r[v]['expected_accuracy']:.1f} | {100 * r[v]['top1']:.1f} | {r[v]['log_loss']:.3f}"
                 for v in VARIANTS]
        lines.append(f"| {r['map']} | {r['weights']} | " + " | ".join(cells) + " |")
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "likelihood_calibration.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "likelihood_calibration.json").write_text(json.dumps({"row": args.row, "load": load, "rows": rows},
                                                                indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
