"""Scene-sampling speed and memory (DESIGN.md §3, issue 3).

Measures, on MovieLens-100K (converted from the ``recbole`` package if the project has no raws):

- scenes/s for 256 eval scenes (K=5) and 2,000 / 8,000 train scenes (K in 2..12), standard and
  popularity-matched negatives, excluding the one-off embedding computation (timed apart);
- the same work done the way a straightforward implementation does it — one pandas
  ``DataFrame.apply`` over the sampled rows, each row filtering the log and scoring the catalog
  on its own — on 256 scenes, as the same-run baseline for the speed ratio;
- peak RSS of each run (VmHWM, reset before it);

and on the synthetic generator's large catalog (default 1M items / 10M interactions, generated
once and kept under ``benchmarks/.cache/``):

- the setup from nothing cached: the randomized spectral embedding, the text embedding (and its
  reload from the cache), and each sampler's own structures (exact neighbour blocks, the FAISS
  index, the count-level index of popularity-matched negatives);
- train scenes with exact neighbour lists (byte-identical to scoring every item), train scenes
  with FAISS content neighbours (at the default nprobe and at half of it), popularity-matched
  eval scenes; one sampler at a time, with peak RSS;
- the FAISS lists' recall@11 against the exact ones on 512 scenes, and both search times;
- issue #17's targets against the numbers of the run.

Wall time depends on what else runs on the machine (the 2 cores are shared), so CPU time of
the process is reported too; the load average is recorded with the results.

Run:  python benchmarks/scene_sampling.py [--project-path W] [--skip-large] [--skip-ml100k]
Writes benchmarks/results/scene_sampling.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------
# measurement helpers


def _reset_peak_rss() -> None:
    """Reset VmHWM (Linux >= 4.0) so the next reading is the peak of what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _rss_mib(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Measure:
    """Wall time, CPU time and peak RSS of a block."""

    def __enter__(self) -> Measure:
        gc.collect()
        _reset_peak_rss()
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        self.peak_mib = _rss_mib("VmHWM")


@contextlib.contextmanager
def _threads(n: int):
    """Run the block with ``n`` BLAS / OpenMP / sparse-product threads (0: leave as they are)."""
    if n <= 0:
        yield
        return
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by the spectral embedding's sparse products
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    try:
        import faiss
    except ImportError:
        faiss = None
    faiss_before = faiss.omp_get_max_threads() if faiss else None
    try:
        if faiss:
            faiss.omp_set_num_threads(n)
        if threadpool_limits:
            with threadpool_limits(n):
                yield
        else:
            yield
    finally:
        if faiss:
            faiss.omp_set_num_threads(faiss_before)
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def _load() -> float:
    return os.getloadavg()[0]


def _uptime() -> str:
    """``uptime``'s line (time, load averages over 1, 5 and 15 minutes)."""
    import subprocess

    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


# ---------------------------------------------------------------------------------------------
# the per-row pandas baseline


def pandas_apply_baseline(ds, strategy, rows: np.ndarray, k_range: tuple[int, int], seed: int,
                          V: np.ndarray, E: np.ndarray) -> list[dict[str, Any]]:
    """The same scenes built row by row with ``DataFrame.apply`` (how a first implementation
    reads): each row filters the whole log for the user's history, masks the catalog and takes
    the four ranked lists on its own. Used only as the speed baseline."""
    import pandas as pd

    from usermirrorer.data_pipeline.raw import format_time

    rng = np.random.default_rng(seed)
    log = pd.DataFrame({"user": ds.inter_user, "item": ds.inter_item, "time": ds.inter_time})
    release = strategy.release_times(ds)
    pop = np.bincount(ds.inter_item, minlength=ds.n_items).astype(float) + 1.0
    unit = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    lo, hi = k_range

    def one(row: pd.Series) -> dict[str, Any]:
        user, item, now = int(row["user"]), int(row["item"]), int(row["time"])
        mine = log[log["user"] == user]
        history = mine[mine["time"] < now]
        seen = set(mine[mine["time"] <= now]["item"].tolist())
        allowed = np.array([i for i in range(ds.n_items)
                            if i not in seen and i != item and (release is None or release[i] <= now)])
        k = int(rng.integers(lo, hi + 1))
        length = hi - 1
        lists = [
            rng.choice(allowed, size=min(length, len(allowed)), replace=False),
            rng.choice(allowed, size=min(length, len(allowed)), replace=False, p=pop[allowed] / pop[allowed].sum()),
            allowed[np.argsort(-(V[history["item"].to_numpy()].sum(0) @ V[allowed].T))[:length]],
            allowed[np.argsort(-(unit[item] @ unit[allowed].T))[:length]],
        ]
        labels = rng.permutation(np.repeat(np.arange(4), length))
        cursor = [0, 0, 0, 0]
        merged: list[int] = []
        for label in labels:
            candidate = int(lists[label][cursor[label]])
            cursor[label] += 1
            if candidate not in merged:
                merged.append(candidate)
        others = merged[: k - 1]
        pos = int(rng.integers(0, len(others) + 1))
        shown = others[:pos] + [item] + others[pos:]
        h = history.tail(int(rng.integers(2, 11)))
        return {
            "dataset": ds.name, "user_id": ds.user_ids[user], "item_id": ds.item_ids[item],
            "timestamp": format_time(now), "impression_list": [ds.item_ids[i] for i in shown],
            "item_pos": pos, "choice_cnt": len(shown),
            "text": {
                "profile": strategy.profile(ds, user),
                "history": strategy.history(ds, h["item"].tolist(), h["time"].tolist(),
                                            [ds.behavior_of(r) for r in h.index], now),
                "action_list": [strategy.exposure_item(ds, i, now) for i in shown],
            },
        }

    return log.iloc[rows].apply(one, axis=1).tolist()


# ---------------------------------------------------------------------------------------------
# runs


def _ml100k(project: Path):
    from usermirrorer.data_pipeline.raw import load_raws, raw_paths

    if not raw_paths(project, "ml-100k").interactions.exists():
        from usermirrorer.cli import main

        if main(["preprocess", "ml-100k", "--project-path", str(project)]) != 0:
            raise SystemExit("could not convert ML-100K (is recbole installed?)")
    return load_raws(project, "ml-100k")


def _timed_sampling(ds, config, sampler, progress_label: str) -> dict[str, Any]:
    from usermirrorer.data_pipeline.sampling.sampler import sample_scenes

    render_time = [0.0]
    original = sampler._render

    def timed_render(*args):
        t = time.process_time()
        out = original(*args)
        render_time[0] += time.process_time() - t
        return out

    sampler._render = timed_render
    try:
        with Measure() as m:
            records, report = sample_scenes(ds, config, sampler=sampler)
    finally:
        sampler._render = original
    n = len(records)
    return {
        "run": progress_label, "scenes": n, "wall_s": round(m.wall, 3), "cpu_s": round(m.cpu, 3),
        "scenes_per_s_wall": round(n / m.wall, 1), "scenes_per_s_cpu": round(n / m.cpu, 1),
        "text_cpu_s": round(render_time[0], 3),
        "scenes_per_s_cpu_without_text": round(n / max(m.cpu - render_time[0], 1e-9), 1),
        "peak_rss_mib": round(m.peak_mib, 1), "load_avg": round(_load(), 2),
        "exposure_sizes": {str(k): v for k, v in sorted(report.exposure_sizes.items())},
    }


def bench_ml100k(project: Path, embedder: str, seed: int, repeats: int = 3) -> dict[str, Any]:
    from usermirrorer.data_pipeline.embeddings import collaborative_embedding, content_embedding
    from usermirrorer.data_pipeline.sampling.sampler import (
        SceneConfig,
        SceneSampler,
        eligible_rows,
        sample_scenes,
    )
    from usermirrorer.data_pipeline.sampling.strategies import get_strategy

    ds = _ml100k(project)
    out: dict[str, Any] = {"dataset": repr(ds), "embedder": embedder, "runs": [], "repeats": repeats}
    from usermirrorer.data_pipeline.embeddings import embedding_path

    paths = [embedding_path(project, ds.name, kind) for kind in ("collaborative", "content")]
    before = [p.stat().st_mtime_ns if p.exists() else None for p in paths]
    with Measure() as m:
        V = collaborative_embedding(ds, project)
        E = content_embedding(ds, project, embedder)
    # From the cache only if no cache file was (re)written: a stale cache is recomputed.
    cached = all(b is not None and p.stat().st_mtime_ns == b for p, b in zip(paths, before))
    out["embeddings_setup"] = {"wall_s": round(m.wall, 2), "cpu_s": round(m.cpu, 2), "from_cache": cached,
                               "note": "one-off (cached under embeddings/ afterwards)"}
    runs = [
        ("eval 256, K=5", SceneConfig(n_samples=256, min_exposure=5, max_exposure=5, split="eval",
                                      seed=seed, embedder=embedder)),
        ("train 2000, K=2..12", SceneConfig(n_samples=2000, min_exposure=2, max_exposure=12, seed=seed,
                                            embedder=embedder)),
        ("train 8000, K=2..12", SceneConfig(n_samples=8000, min_exposure=2, max_exposure=12, seed=seed,
                                            embedder=embedder)),
        ("eval 256, K=5, popularity-matched", SceneConfig(
            n_samples=256, min_exposure=5, max_exposure=5, split="eval", seed=seed, embedder=embedder,
            negatives="popularity-matched")),
        ("train 2000, K=2..12, popularity-matched", SceneConfig(
            n_samples=2000, min_exposure=2, max_exposure=12, seed=seed, embedder=embedder,
            negatives="popularity-matched")),
    ]
    samplers: dict[str, SceneSampler] = {}
    for label, config in runs:
        # Scorers are built once per kind of run (embeddings come from the cache): not timed.
        if config.negatives not in samplers:
            samplers[config.negatives] = SceneSampler(ds, config, project_path=project)
            # Warm-up (first-touch page faults, BLAS start-up): one-off costs, not per scene.
            from dataclasses import replace

            sample_scenes(ds, replace(config, n_samples=32, seed=config.seed + 1), sampler=samplers[config.negatives])
        # A run of 256 scenes is ~0.1 s of CPU: on a loaded machine one timing is noisy, so each
        # run is timed `repeats` times (same seed, same sampler) and the median by CPU is kept.
        timings = [_timed_sampling(ds, config, samplers[config.negatives], label) for _ in range(repeats)]
        median = sorted(timings, key=lambda r: r["cpu_s"])[len(timings) // 2]
        median["cpu_s_repeats"] = [r["cpu_s"] for r in timings]
        out["runs"].append(median)
        print(f"  {label}: {out['runs'][-1]['scenes_per_s_wall']:,.0f} scenes/s wall, "
              f"{out['runs'][-1]['scenes_per_s_cpu']:,.0f} scenes/s CPU")

    # End to end, as a user runs it: the scenes command (load the raws, build the sampler with the
    # cached embeddings, sample 8,000 train scenes, write them).
    from usermirrorer.cli import main as cli

    # Twice: with the raws parsed (their parsed copy removed first) and with the parsed copy that
    # any earlier load leaves (preprocess loads them once after converting).
    target = project / "bench_train_8000.jsonl"
    for key, parsed_copy in (("end_to_end_8000_parsing_raws", False), ("end_to_end_8000", True)):
        if not parsed_copy:
            (project / "cache" / "ml-100k.raws.npz").unlink(missing_ok=True)
        with Measure() as m:
            code = cli(["scenes", "--dataset", "ml-100k", "--project-path", str(project), "--samples", "8000",
                        "--min-exposure", "2", "--max-exposure", "12", "--embedder", embedder, "--seed", str(seed),
                        "--output", str(target)])
        if code != 0:
            raise SystemExit("the scenes command failed")
        out[key] = {"command": "usermirrorer scenes --dataset ml-100k --samples 8000 --min-exposure 2 "
                               f"--max-exposure 12 --embedder {embedder}",
                    "raws": "from the parsed copy" if parsed_copy else "parsed and validated",
                    "wall_s": round(m.wall, 2), "cpu_s": round(m.cpu, 2), "peak_rss_mib": round(m.peak_mib),
                    "scenes": sum(1 for _ in open(target)), "load_avg": round(_load(), 2)}
        target.unlink()
        print(f"  end to end, 8000 train scenes, raws {out[key]['raws']}: {out[key]}")

    # Same-run baseline: per-row pandas apply on 256 train scenes (K=2..12).
    strategy = get_strategy(ds.name)
    rows = np.random.default_rng(seed).choice(eligible_rows(ds, 3), size=256, replace=False)
    with Measure() as m:
        base = pandas_apply_baseline(ds, strategy, rows, (2, 12), seed, V, E)
    out["pandas_apply_baseline"] = {
        "run": "train 256, K=2..12, per-row DataFrame.apply", "scenes": len(base),
        "wall_s": round(m.wall, 3), "cpu_s": round(m.cpu, 3),
        "scenes_per_s_wall": round(len(base) / m.wall, 1), "scenes_per_s_cpu": round(len(base) / m.cpu, 1),
        "peak_rss_mib": round(m.peak_mib, 1), "load_avg": round(_load(), 2),
    }
    vec = next(r for r in out["runs"] if r["run"] == "train 2000, K=2..12")
    out["speedup_vs_pandas_apply_cpu"] = round(vec["scenes_per_s_cpu"] / out["pandas_apply_baseline"]["scenes_per_s_cpu"], 1)
    print(f"  pandas apply baseline: {out['pandas_apply_baseline']['scenes_per_s_cpu']:,.0f} scenes/s CPU "
          f"-> vectorised is {out['speedup_vs_pandas_apply_cpu']}x")
    return out


CACHE = Path(__file__).resolve().parent / ".cache"  # gitignored: the generated large catalog


def _synthetic(n_users: int, n_items: int, n_interactions: int, seed: int):
    """The synthetic catalog, generated once and kept as a pickle under benchmarks/.cache/ (keyed
    by its sizes, seed and the generator's source, so a changed generator regenerates)."""
    import hashlib
    import pickle

    from usermirrorer.preprocessing import synthetic

    source = Path(synthetic.__file__).read_bytes() + Path(synthetic.__file__).with_name("base.py").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    path = CACHE / f"synthetic-{n_users}-{n_items}-{n_interactions}-{seed}-{digest}.pkl"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        with Measure() as m, open(path, "rb") as fh:
            ds = pickle.load(fh)
        return ds, {"loaded_from_cache": True, "load_wall_s": round(m.wall, 1), **json.loads(meta.read_text())}
    with Measure() as m:
        ds = synthetic.generate_synthetic(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                                          seed=seed, progress=True)
    info = {"generate_wall_s": round(m.wall, 1), "generate_cpu_s": round(m.cpu, 1),
            "generate_peak_rss_mib": round(m.peak_mib, 1), "generate_load_avg": round(_load(), 2)}
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(ds, fh, protocol=5)
    os.replace(tmp, path)
    meta.write_text(json.dumps(info) + "\n")
    return ds, {"loaded_from_cache": False, **info}


def _top_lists(cands, k: int) -> list[set[int]]:
    """Per scene, the k candidates with the largest raw scores."""
    out = []
    for j in range(len(cands)):
        lo, hi = cands.ptr[j], cands.ptr[j + 1]
        order = np.argsort(-cands.scores[lo:hi], kind="stable")[:k]
        out.append(set(cands.items[lo:hi][order].tolist()))
    return out


def neighbour_recall(sampler, rows: np.ndarray, k: int) -> dict[str, Any]:
    """Recall@k of each FAISS-searched scorer's top-k lists against the exact search on the same
    scenes (same showable items), and the CPU time of both searches."""
    from usermirrorer.data_pipeline.sampling.neighbours import ExactNeighbours, FaissNeighbours
    from usermirrorer.data_pipeline.sampling.sampler import SceneBatch, _concat_ranges

    users, times, targets, user_start, hist_stop, seen_stop = sampler._scene_arrays(rows)
    hist_rows, hist_ptr = _concat_ranges(user_start, hist_stop)
    batch = SceneBatch(users, times, targets, hist_ptr, hist_rows)
    avail = sampler._availability(times, targets, user_start, seen_stop)
    out: dict[str, Any] = {"k": k, "scenes": len(rows), "scorers": {}}
    for i, searcher in sampler.searchers.items():
        if not isinstance(searcher, FaissNeighbours):
            continue
        scorer = sampler.scorers[i]
        queries = scorer.queries(batch)
        exact = ExactNeighbours(scorer.item_factors, prune=bool(scorer.normalise))
        with Measure() as m_exact:
            truth = _top_lists(exact.candidates(queries, avail, k, scorer.normalise), k)
        with Measure() as m_faiss:
            got = _top_lists(searcher.candidates(queries, avail, k, scorer.normalise), k)
        hits = [len(t & g) / len(t) for t, g in zip(truth, got) if t]
        out["scorers"][scorer.name] = {
            "recall_at_k": round(float(np.mean(hits)), 4), "exact_search_cpu_s": round(m_exact.cpu, 3),
            "faiss_search_cpu_s": round(m_faiss.cpu, 3),
            "exact_over_faiss_search_time": round(m_exact.cpu / max(m_faiss.cpu, 1e-9), 1),
            "index": repr(searcher),
        }
    return out


def bench_large(n_users: int, n_items: int, n_interactions: int, n_exact: int, n_faiss: int, n_matched: int,
                seed: int, chunk_mb: int, nprobe: int, setup_threads: int = 0) -> dict[str, Any]:
    import tempfile
    from dataclasses import replace

    from usermirrorer.data_pipeline.embeddings import collaborative_embedding, content_embedding
    from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, SceneSampler

    out: dict[str, Any] = {"users": n_users, "items": n_items, "interactions": n_interactions,
                           "chunk_mb": chunk_mb, "runs": [], "load_start": round(_load(), 2)}
    ds, out["dataset"] = _synthetic(n_users, n_items, n_interactions, seed)
    out["dataset_rss_mib"] = round(_rss_mib("VmRSS"), 1)
    print(f"  {ds!r}: {out['dataset']}; RSS {out['dataset_rss_mib']:.0f} MiB")
    embedder = "hashing-64"
    common = {"seed": seed, "embedder": embedder, "chunk_bytes": chunk_mb * 2**20}
    train = {"min_exposure": 2, "max_exposure": 12, **common}
    project = Path(tempfile.mkdtemp(prefix="usermirrorer-large-"))  # nothing cached: setup from scratch
    setup: dict[str, Any] = {"embedder": embedder, "threads": setup_threads or "as the sampling runs"}
    with _threads(setup_threads), Measure() as m:
        collaborative_embedding(ds, project, dim=64, seed=seed)
    setup["spectral_embedding"] = {"wall_s": round(m.wall, 1), "cpu_s": round(m.cpu, 1), "peak_rss_mib": round(m.peak_mib)}
    with _threads(setup_threads), Measure() as m:
        content_embedding(ds, project, embedder)
    setup["text_embedding"] = {"wall_s": round(m.wall, 1), "cpu_s": round(m.cpu, 1), "peak_rss_mib": round(m.peak_mib)}
    with _threads(setup_threads), Measure() as m:
        content_embedding(ds, project, embedder)
    setup["text_embedding_cached"] = {"wall_s": round(m.wall, 2), "cpu_s": round(m.cpu, 2)}
    labels = {"exact": f"train {n_exact}, K=2..12, exact neighbours",
              "faiss": f"train {n_faiss}, K=2..12, FAISS content neighbours (nprobe {nprobe})",
              "popularity-matched": f"eval {n_matched}, K=5, popularity-matched"}
    for label, config in (
        ("exact", SceneConfig(n_samples=n_exact, **train)),
        ("faiss", SceneConfig(n_samples=n_faiss, neighbours="faiss", faiss_nprobe=nprobe, **train)),
        ("popularity-matched", SceneConfig(n_samples=n_matched, min_exposure=5, max_exposure=5, split="eval",
                                           negatives="popularity-matched", **common)),
    ):
        # One sampler at a time (each holds its own neighbour structures), freed after its run.
        with _threads(setup_threads), Measure() as m:
            sampler = SceneSampler(ds, config, project_path=project)  # embeddings from the cache above
            sampler.candidate_rows()  # eligible rows: once per sampler
        setup[f"sampler_{label}"] = {"wall_s": round(m.wall, 1), "cpu_s": round(m.cpu, 1), "peak_rss_mib": round(m.peak_mib),
                                     "chunk_scenes": sampler.chunk, "searchers": [repr(x) for x in sampler.searchers.values()]}
        print(f"  sampler {label}: {setup[f'sampler_{label}']}")
        sampler.stats["dense_recomputed_lists"] = 0
        row = _timed_sampling(ds, config, sampler, labels[label])
        row["dense_recomputed_lists"] = sampler.stats["dense_recomputed_lists"]
        row["chunk_scenes"] = sampler.chunk
        out["runs"].append(row)
        print(f"  {labels[label]}: {row['scenes_per_s_cpu']:,.0f} scenes/s CPU, peak RSS {row['peak_rss_mib']:,.0f} MiB")
        if label == "faiss":
            rows = np.random.default_rng(seed).choice(sampler.candidate_rows(), size=512, replace=False)
            out["recall"] = neighbour_recall(sampler, rows, k=11)
            print(f"  FAISS vs exact: {out['recall']}")
            # The same index visiting fewer lists: the speed / recall trade-off in one run.
            for fewer in [p for p in (nprobe // 2,) if p >= 1]:
                for searcher in sampler.searchers.values():
                    if hasattr(searcher, "index"):
                        searcher.index.nprobe = searcher.nprobe = fewer
                name = labels["faiss"].replace(f"(nprobe {nprobe})", f"(nprobe {fewer})")
                sampler.stats["dense_recomputed_lists"] = 0
                # Another seed: other scenes, so the item texts rendered by the run above are not
                # reused from the strategy's cache.
                row = _timed_sampling(ds, replace(config, seed=seed + 1), sampler, name + ", seed + 1")
                row["chunk_scenes"] = sampler.chunk
                row["dense_recomputed_lists"] = sampler.stats["dense_recomputed_lists"]
                out["runs"].append(row)
                out.setdefault("recall_fewer_lists", []).append({"nprobe": fewer, **neighbour_recall(sampler, rows, k=11)})
                print(f"  {name}: {row['scenes_per_s_cpu']:,.0f} scenes/s CPU; {out['recall_fewer_lists'][-1]}")
        del sampler
        gc.collect()
    setup["total_exact_wall_s"] = round(setup["spectral_embedding"]["wall_s"] + setup["text_embedding"]["wall_s"]
                                        + setup["sampler_exact"]["wall_s"], 1)
    setup["total_faiss_wall_s"] = round(setup["spectral_embedding"]["wall_s"] + setup["text_embedding"]["wall_s"]
                                        + setup["sampler_faiss"]["wall_s"], 1)
    out["setup"] = setup
    import shutil

    shutil.rmtree(project, ignore_errors=True)  # the embedding caches of this run (~0.5 GB)
    out["peak_rss_mib_overall"] = round(max([r["peak_rss_mib"] for r in out["runs"]]
                                            + [v["peak_rss_mib"] for v in setup.values()
                                               if isinstance(v, dict) and "peak_rss_mib" in v]), 1)
    out["load_end"] = round(_load(), 2)
    return out


# ---------------------------------------------------------------------------------------------
# report


def _earlier_run_note(part: dict[str, Any]) -> list[str]:
    """A paragraph saying a section was kept from an earlier run (and under what load)."""
    earlier = part.get("earlier_run")
    if not earlier:
        return []
    return [f"Not re-run this time: these numbers come from an earlier run (`{earlier['command']}`, "
            f"load average {earlier['load_start']} at start, {earlier['load_end']} at end), "
            "with the code as it was then.", ""]


def _markdown(result: dict[str, Any]) -> str:
    lines = ["# Scene sampling: speed and memory", "",
             f"Machine: {result['machine']}; BLAS threads: {result.get('blas_threads')}. "
             f"Load average at start {result['load_start']}, end {result['load_end']} "
             "(the 2 cores are shared with other jobs: wall-clock rates vary with load; CPU-time rates are "
             "the process's own work).", "",
             f"Command: `{result.get('command', 'python benchmarks/scene_sampling.py')}`", "",
             *([f"`uptime` at start: `{result['uptime_start']}`; at end: `{result['uptime_end']}`.", ""]
               if result.get("uptime_start") else [])]
    ml = result.get("ml100k")
    if ml:
        lines += ["## MovieLens-100K", "", *_earlier_run_note(ml), f"{ml['dataset']}; content embedder `{ml['embedder']}`. "
                  f"One-off embeddings: {ml['embeddings_setup']['wall_s']} s wall"
                  f"{' (loaded from the cache of an earlier run)' if ml['embeddings_setup'].get('from_cache') else ''}"
                  "; excluded below. Each sampler is warmed up on 32 scenes before timing"
                  + (f"; each run is timed {ml['repeats']} times (same seed) and the row is the median by CPU "
                     "time (all CPU times in the JSON)" if ml.get("repeats", 1) > 1 else "") + ".", "",
                  "| run | scenes | wall s | scenes/s (wall) | scenes/s (CPU) | text rendering CPU s | "
                  "scenes/s (CPU, without text) | peak RSS MiB | load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ml["runs"] + [ml["pandas_apply_baseline"]]:
            lines.append(f"| {r['run']} | {r['scenes']} | {r['wall_s']} | {r['scenes_per_s_wall']:,.0f} | "
                         f"{r['scenes_per_s_cpu']:,.0f} | {r.get('text_cpu_s', '-')} | "
                         f"{r.get('scenes_per_s_cpu_without_text', '-')} | {r['peak_rss_mib']:,.0f} | {r['load_avg']} |")
        lines += ["", f"Vectorised vs per-row `DataFrame.apply` (train, K=2..12, CPU time, same run): "
                      f"**{ml['speedup_vs_pandas_apply_cpu']}x**.", ""]
        e2e, cold = ml.get("end_to_end_8000"), ml.get("end_to_end_8000_parsing_raws")
        if e2e:
            lines += [f"End to end (`{e2e['command']}`, in the benchmark's process: load the raws, build the "
                      f"sampler from the cached embeddings, sample, write): {e2e['scenes']} scenes in "
                      f"**{e2e['wall_s']} s** wall ({e2e['cpu_s']} s CPU), peak RSS {e2e['peak_rss_mib']:,} MiB, "
                      "the raws read from the parsed copy an earlier load leaves (`<project>/cache/`)"
                      + (f"; with the raws parsed and validated instead (the copy removed): **{cold['wall_s']} s** "
                         f"wall ({cold['cpu_s']} s CPU)" if cold else "") + ".", ""]
    large = result.get("large")
    if large:
        d, st = large["dataset"], large["setup"]
        made = (f"loaded from the benchmark cache in {d['load_wall_s']} s; generated in {d['generate_wall_s']} s "
                "when it was cached" if d.get("loaded_from_cache") else f"generated in {d['generate_wall_s']} s")
        lines += ["## Large synthetic catalog", "", *_earlier_run_note(large),
                  f"{large['users']:,} users, {large['items']:,} items, {large['interactions']:,} interactions "
                  f"({made}; dataset RSS {large['dataset_rss_mib']:,.0f} MiB). Load average at the start of this "
                  f"part {large['load_start']}, end {large['load_end']}.", "",
                  f"Setup from nothing cached (wall s; threads: {st.get('threads', 'as the sampling runs')}): "
                  f"randomized spectral embedding {st['spectral_embedding']['wall_s']}, "
                  f"`{st['embedder']}` text embedding {st['text_embedding']['wall_s']} "
                  f"(from its cache afterwards: {st['text_embedding_cached']['wall_s']}), "
                  f"exact sampler {st['sampler_exact']['wall_s']} (neighbour blocks, eligible rows), "
                  f"FAISS sampler {st['sampler_faiss']['wall_s']} (the content IVF index, collaborative blocks), "
                  f"popularity-matched sampler {st['sampler_popularity-matched']['wall_s']} (count-level index). "
                  f"**Setup total: {st['total_exact_wall_s']} s exact, {st['total_faiss_wall_s']} s with FAISS.**", "",
                  "| run | scenes | wall s | scenes/s (wall) | scenes/s (CPU) | scenes per chunk | dense recomputed lists | "
                  "peak RSS MiB | load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in large["runs"]:
            lines.append(f"| {r['run']} | {r['scenes']} | {r['wall_s']} | {r['scenes_per_s_wall']:,.1f} | "
                         f"{r['scenes_per_s_cpu']:,.1f} | {r.get('chunk_scenes', '')} | "
                         f"{r.get('dense_recomputed_lists', '-')} | {r['peak_rss_mib']:,.0f} | {r['load_avg']} |")
        rec = large.get("recall")
        for name, v in (rec or {}).get("scorers", {}).items():
            lines += ["", f"FAISS ({v['index']}) against the exact search, {name} scorer, {rec['scenes']} train "
                          f"scenes: recall@{rec['k']} **{v['recall_at_k']:.3f}**; search CPU {v['faiss_search_cpu_s']} s "
                          f"vs {v['exact_search_cpu_s']} s exact (**{v['exact_over_faiss_search_time']}x** faster). "
                          "The collaborative lists stay exact in FAISS mode: sorted by item norm, its exact search "
                          "stops early for most scenes and is about as fast as the index."]
        for other in large.get("recall_fewer_lists", []):
            for name, v in other["scorers"].items():
                lines += ["", f"With nprobe {other['nprobe']}: {name} recall@{other['k']} **{v['recall_at_k']:.3f}**, "
                              f"search CPU {v['faiss_search_cpu_s']} s ({v['exact_over_faiss_search_time']}x faster than exact)."]
        lines += ["", f"Peak RSS over setup and sampling: **{large['peak_rss_mib_overall']:,.0f} MiB** "
                      "(includes the dataset itself).", "",
                  "Exact neighbours give the lists the per-scene dense computation gave, byte for byte (a scene "
                  "whose list cut falls inside an exact score tie is recomputed densely: 'dense recomputed "
                  "lists'); FAISS lists are approximate (recall above); popularity-matched negatives come from "
                  "the count levels next to the real item's, with the dense method's law "
                  "(`tests/data_pipeline/sampling/test_fast_draws.py`).", ""]
    lines += _targets(result)
    return "\n".join(lines) + "\n"


def _targets(result: dict[str, Any]) -> list[str]:
    """Issue #17's targets against this run's numbers (CPU-time rates)."""
    rows = []
    ml, large = result.get("ml100k"), result.get("large")
    if ml and not ml.get("earlier_run"):
        for key, how in (("end_to_end_8000", "raws from their parsed copy"),
                         ("end_to_end_8000_parsing_raws", "raws parsed")):
            e2e = ml.get(key)
            if e2e:
                rows.append((f"ML-100K, 8,000 train scenes end to end (scenes command, {how})", "<= 2.3 s",
                             f"{e2e['wall_s']} s wall ({e2e['cpu_s']} s CPU)", e2e["wall_s"] <= 2.3))
    if large and not large.get("earlier_run"):
        def rate(word):  # the first run of a kind: FAISS at its default nprobe
            return next((r for r in large["runs"] if word in r["run"]), None)
        size = f"{large['items']:,} items"
        for word, label, target in (("FAISS", f"{size}, train scenes/s (FAISS content neighbours)", 1000),
                                    ("exact", f"{size}, train scenes/s (exact neighbours)", 1000),
                                    ("matched", f"{size}, popularity-matched scenes/s", 500)):
            r = rate(word)
            if r:
                rows.append((label, f">= {target:,}", f"{r['scenes_per_s_cpu']:,.0f} ({r['run']})",
                             r["scenes_per_s_cpu"] >= target))
        rows.append((f"{size}, peak RSS", "<= 4,096 MiB", f"{large['peak_rss_mib_overall']:,.0f} MiB",
                     large["peak_rss_mib_overall"] <= 4096))
        st = large["setup"]
        for key, label in (("total_exact_wall_s", "exact"), ("total_faiss_wall_s", "with FAISS")):
            rows.append((f"{size}, setup from nothing cached ({label})", "<= 120 s", f"{st[key]} s wall",
                         st[key] <= 120))
    if not rows:
        return []
    out = ["## Targets (issue #17)", "", "| what | target | this run | met |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {'yes' if ok else '**no**'} |" for a, b, c, ok in rows]
    return out + [""]


def _table(result: dict[str, Any]):
    from rich.table import Table

    table = Table(title="scene sampling")
    for col in ("data", "run", "scenes", "scenes/s wall", "scenes/s CPU", "peak RSS MiB"):
        table.add_column(col)
    for key in ("ml100k", "large"):
        part = result.get(key)
        if not part:
            continue
        rows = part["runs"] + ([part["pandas_apply_baseline"]] if "pandas_apply_baseline" in part else [])
        for r in rows:
            table.add_row(key, r["run"], str(r["scenes"]), f"{r['scenes_per_s_wall']:,.1f}",
                          f"{r['scenes_per_s_cpu']:,.1f}", f"{r['peak_rss_mib']:,.0f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-path", default="/tmp/usermirrorer-bench-scenes",
                        help="working directory (ML-100K raws + embedding caches)")
    parser.add_argument("--embedder", default="minilm", help="content embedder for ML-100K (default minilm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-large", action="store_true", help="skip the large synthetic catalog")
    parser.add_argument("--skip-ml100k", action="store_true")
    parser.add_argument("--repeats", type=int, default=3,
                        help="time each ML-100K run this many times and keep the median by CPU (default 3)")
    parser.add_argument("--large-users", type=int, default=200_000)
    parser.add_argument("--large-items", type=int, default=1_000_000)
    parser.add_argument("--large-interactions", type=int, default=10_000_000)
    parser.add_argument("--large-exact-scenes", type=int, default=2048, help="train scenes, exact neighbours")
    parser.add_argument("--large-scenes", type=int, default=10_000, help="train scenes, FAISS neighbours")
    parser.add_argument("--large-matched-scenes", type=int, default=4096, help="eval scenes, popularity-matched")
    parser.add_argument("--nprobe", type=int, default=16, help="FAISS inverted lists visited per query")
    parser.add_argument("--chunk-mb", type=int, default=256)
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (0: library default); 1 keeps CPU times honest on a shared machine")
    parser.add_argument("--setup-threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of the large catalog's setup (embeddings, indexes; default: every CPU, as "
                             "a user's run has them; 0: as --blas-threads); the sampling runs keep --blas-threads")
    parser.add_argument("--out", default=str(RESULTS / "scene_sampling"), help="results path without extension")
    args = parser.parse_args()

    import torch  # sentence-transformers runs on torch: keep its threads within the 2 cores

    torch.set_num_threads(2)
    blas_threads = "default"
    if args.blas_threads > 0:
        try:
            from threadpoolctl import threadpool_limits

            # On a shared machine, idle BLAS threads spin and inflate CPU time: pin them.
            threadpool_limits(args.blas_threads)
            blas_threads = str(args.blas_threads)
        except ImportError:
            blas_threads = "default (threadpoolctl not installed)"
        try:  # FAISS brings its own OpenMP pool and BLAS, loaded after the limit above: pin them too
            import faiss

            faiss.omp_set_num_threads(args.blas_threads)
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.blas_threads)
        except ImportError:
            pass
    project = Path(args.project_path)
    project.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": " ".join(["python benchmarks/scene_sampling.py", *sys.argv[1:]]),
                              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                              "load_start": round(_load(), 2), "uptime_start": _uptime(), "blas_threads": blas_threads}
    if not args.skip_ml100k:
        print("ML-100K")
        result["ml100k"] = bench_ml100k(project, args.embedder, args.seed, args.repeats)
    if not args.skip_large:
        print("large synthetic catalog")
        result["large"] = bench_large(args.large_users, args.large_items, args.large_interactions,
                                      args.large_exact_scenes, args.large_scenes, args.large_matched_scenes,
                                      args.seed, args.chunk_mb, args.nprobe, args.setup_threads)
    result["load_end"] = round(_load(), 2)
    result["uptime_end"] = _uptime()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Keep the part not re-run this time from an earlier results file.
    json_path = out.with_suffix(".json")
    if json_path.exists():
        previous = json.loads(json_path.read_text())
        for key in ("ml100k", "large"):
            if key not in result and key in previous:
                part = result[key] = previous[key]
                part.setdefault("earlier_run", {
                    "command": previous.get("command", "python benchmarks/scene_sampling.py"),
                    "load_start": previous.get("load_start"), "load_end": previous.get("load_end"),
                })
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    from rich.console import Console

    Console().print(_table(result))
    print(f"wrote {json_path} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
