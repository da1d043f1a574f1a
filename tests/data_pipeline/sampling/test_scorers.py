"""Scorers, the scorer registry and the embedding caches."""

from __future__ import annotations

import numpy as np
import pytest
from scene_fixtures import TracingStrategy, make_dataset

from usermirrorer.data_pipeline import embeddings
from usermirrorer.data_pipeline.embeddings import spectral_item_embedding
from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.data_pipeline.sampling.sampler import SceneConfig, SceneSampler, sample_scenes
from usermirrorer.data_pipeline.sampling.scorers import (
    SceneBatch,
    ScorerContext,
    collaborative_scores,
    collaborative_scores_for_items,
    make_scorer,
    register_scorer,
    scorer_names,
)
from usermirrorer.errors import ConfigError


def two_communities(seed: int = 0) -> RawDataset:
    """Users 0-29 consume items 0-39, users 30-59 items 40-79 (plus a little noise)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(60):
        block = 0 if u < 30 else 40
        chosen = rng.choice(40, size=15, replace=False) + block
        noise = rng.choice(80, size=1)
        users += [u] * 16
        items += chosen.tolist() + noise.tolist()
    n = len(users)
    return RawDataset(
        name="communities",
        user_ids=np.array([f"u{i}" for i in range(60)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(80)], dtype=object),
        user_description=[{} for _ in range(60)], user_features=[{} for _ in range(60)],
        item_description=[{"title": f"t{i}"} for i in range(80)], item_features=[{} for _ in range(80)],
        inter_user=np.array(users), inter_item=np.array(items),
        inter_time=np.arange(n, dtype=np.int64) * 60,
    )


def test_spectral_embedding_is_degree_normalised_svd():
    ds = two_communities()
    V = spectral_item_embedding(ds, dim=8)
    assert V.shape == (80, 8) and V.dtype == np.float32
    R = np.zeros((60, 80))
    R[ds.inter_user, ds.inter_item] = 1
    du, di = R.sum(1), R.sum(0)
    normed = R / np.sqrt(du)[:, None] / np.sqrt(di)[None, :]
    _, _, vt = np.linalg.svd(normed)
    expected = vt[:8].T * np.sqrt(di)[:, None]
    # Singular vectors are defined up to sign (and rotation within ties): compare projectors.
    assert np.allclose(V @ V.T, expected @ expected.T, atol=1e-4)


def test_collaborative_scores_follow_communities():
    ds = two_communities()
    V = spectral_item_embedding(ds, dim=4)
    rows = [np.arange(ds.user_ptr[u], ds.user_ptr[u] + 5) for u in (0, 45)]
    scores = collaborative_scores(ds, V, rows)
    assert scores.shape == (2, 80)
    assert scores[0, :40].mean() > scores[0, 40:].mean()
    assert scores[1, 40:].mean() > scores[1, :40].mean()
    direct = collaborative_scores_for_items(V, [ds.inter_item[r] for r in rows])
    assert np.allclose(scores, direct)


def test_randomized_svd_agrees_with_exact(monkeypatch):
    ds = two_communities()
    # The top two directions (degree vector, community split) are well separated from the rest.
    exact = spectral_item_embedding(ds, dim=2)
    monkeypatch.setattr(embeddings, "_DENSE_SVD_LIMIT", 0)
    approx = spectral_item_embedding(ds, dim=2, seed=1)
    assert np.allclose(exact @ exact.T, approx @ approx.T, atol=5e-3)


def test_float32_product_equals_the_sparse_product():
    from scipy import sparse

    rng = np.random.default_rng(0)
    matrix = sparse.random(40, 30, density=0.2, format="csr", random_state=1, dtype=np.float64)
    dense = rng.standard_normal((30, 7))
    got = embeddings._Float32Product(matrix) @ dense
    assert got.dtype == np.float64 and got.shape == (40, 7)
    assert np.allclose(got, matrix @ dense, rtol=1e-5, atol=1e-5)
    # row blocks in threads: the same bytes for any thread count (more threads than rows too)
    for threads in (2, 3, 64):
        product = embeddings._Float32Product(matrix, threads)
        assert 1 < len(product.blocks) <= min(threads, 40)
        np.testing.assert_array_equal(product @ dense, got)


def test_fit_rows_restrict_the_fit():
    ds = two_communities()
    first_half = np.flatnonzero(ds.inter_time < ds.inter_time.max() // 2)
    V = spectral_item_embedding(ds, rows=first_half, dim=4)
    unseen = np.setdiff1d(np.arange(80), ds.inter_item[first_half])
    assert len(unseen) > 0 and np.all(V[unseen] == 0)
    with pytest.raises(ConfigError):
        spectral_item_embedding(ds, rows=np.array([10**9]))


def test_registry_and_domain_extra_scorer():
    @register_scorer("test-favourite")
    def favourite(ds, ctx):
        class Favourite:
            name = "test-favourite"
            default_mode = "topk"

            def scores(self, batch: SceneBatch) -> np.ndarray:
                out = np.zeros((len(batch), ds.n_items), dtype=np.float32)
                out[:, 7] = 10.0  # always rank item 7 first
                return out

        return Favourite()

    assert "test-favourite" in scorer_names()
    with pytest.raises(ConfigError, match="unknown scorer"):
        make_scorer("no-such-scorer", two_communities())

    class WithExtra(TracingStrategy):
        def extra_scorers(self):
            return ["test-favourite"]

    ds = make_dataset(n_users=60, n_items=100, n_interactions=2000, with_release=False, seed=9)
    config = SceneConfig(n_samples=300, min_exposure=4, max_exposure=4, split="eval", embedder=None)
    sampler = SceneSampler(ds, config, WithExtra())
    assert [s.name for s in sampler.scorers] == ["random", "popularity", "collaborative", "test-favourite"]
    records, _ = sample_scenes(ds, config, sampler=sampler)
    plain, _ = sample_scenes(ds, config, TracingStrategy())

    def shows_item_7(scenes):
        return sum("i7" in r["impression_list"] for r in scenes if r["item_id"] != "i7") / len(scenes)

    # Its list is merged in order, so item 7 heads one of four lists of three.
    assert shows_item_7(records) > 0.35
    assert shows_item_7(records) > 3 * shows_item_7(plain)


def test_collaborative_cache_reused(tmp_path, monkeypatch):
    ds = two_communities()
    first = embeddings.collaborative_embedding(ds, tmp_path, dim=4)
    path = embeddings.embedding_path(tmp_path, ds.name, "collaborative")
    assert path.exists()

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(embeddings, "spectral_item_embedding", boom)
    again = embeddings.collaborative_embedding(ds, tmp_path, dim=4)
    assert np.array_equal(first, again)
    # Another fit (other rows) must not reuse it.
    with pytest.raises(AssertionError, match="recomputed"):
        embeddings.collaborative_embedding(ds, tmp_path, dim=4, rows=np.arange(100))


def test_content_scorer_with_hashing_embedder(tmp_path):
    ds = two_communities()
    ds.item_description[3] = {"title": "space opera adventure"}
    ds.item_description[50] = {"title": "space opera adventure sequel"}
    emb = embeddings.content_embedding(ds, tmp_path, "hashing")
    assert emb.shape[0] == 80
    assert embeddings.embedding_path(tmp_path, ds.name, "content").exists()
    scorer = make_scorer("content", ds, ScorerContext(project_path=tmp_path, embedder="hashing"))
    batch = SceneBatch(np.array([0]), np.array([0]), np.array([3]), np.array([0, 0]), np.zeros(0, np.int64))
    scores = scorer.scores(batch)[0]
    assert np.argsort(-scores)[1] == 50  # the nearest other item shares the words


def test_unknown_embedder():
    with pytest.raises(ConfigError, match="unknown embedder"):
        embeddings.make_embedder("word2vec")


@pytest.mark.slow
def test_default_minilm_embedder_finds_similar_titles():
    ds = two_communities()
    for i, title in enumerate(["A romantic comedy in Paris", "Love story set in France",
                               "Alien invasion war film", "Tax accounting seminar"]):
        ds.item_description[i] = {"title": title}
    emb = embeddings.content_embedding(ds, None, "minilm")
    assert emb.shape == (80, 384)
    sims = emb[:4] @ emb[:4].T
    assert np.argmax(sims[0, 1:]) + 1 == 1  # "love story in France" is nearest to "romcom in Paris"


def test_content_cache_follows_the_item_texts(tmp_path):
    """The content cache is keyed by the item texts: reused for the same texts (the texts'
    digest is kept per dataset object), recomputed when a dataset's texts differ."""
    from dataclasses import replace

    ds = make_dataset(n_users=30, n_items=60, n_interactions=600, with_release=False, seed=3)
    first = embeddings.content_embedding(ds, tmp_path, "hashing-32")
    again = embeddings.content_embedding(ds, tmp_path, "hashing-32")
    assert np.array_equal(first, again)
    assert np.array_equal(first, embeddings.HashingEmbedder(32).embed(embeddings.item_texts(ds)))
    renamed = replace(ds, item_description=[{**d, "title": d["title"] + " II"} for d in ds.item_description])
    other = embeddings.content_embedding(renamed, tmp_path, "hashing-32")
    assert not np.array_equal(first, other)
    assert np.array_equal(other, embeddings.HashingEmbedder(32).embed(embeddings.item_texts(renamed)))
