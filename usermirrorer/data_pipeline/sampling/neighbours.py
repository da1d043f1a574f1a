"""Top-k neighbour lists of the factor scorers (collaborative, content) at catalog scale.

A factor scorer's score of item ``i`` in scene ``j`` is ``q_j . f_i`` (a query vector per scene,
a factor row per item), optionally divided by the row's largest absolute score. Its top-k list
is the ``k`` showable items with the largest ``score + 1e-6 * u`` (``u`` uniform noise drawn for
every item, which breaks ties at random). Scoring the whole catalog per scene makes a
1M-item catalog crawl, so here:

- :class:`ExactNeighbours` streams the catalog in item blocks against many scenes at once
  (one matrix product per block, not per scene), keeps per scene only the items within noise
  reach of its running k-th best showable score, and skips the rest of the catalog for a scene
  once the Cauchy-Schwarz bound ``|q| |f_i|`` of the remaining items (sorted by norm) falls
  below that threshold. :func:`select_topk` then reads the noise of the surviving items only
  (:func:`~usermirrorer.data_pipeline.sampling.draws.skip_uniform_f32`), and recomputes a scene
  densely in the rare case of an exact tie at the cut, so the lists are byte-identical to the
  per-scene dense computation for the same seed.
- :class:`FaissNeighbours` (optional, ``pip install 'usermirrorer[ann]'``) asks an inverted-file
  index for the nearest items instead: approximate, much faster on very large catalogs; its
  recall against the exact lists is what ``benchmarks/scene_sampling.py`` reports.

Exactness rests on one property of the BLAS: every entry of a float32 matrix product is the
same whatever the shape of the product it is computed in, as long as that product is not small
(OpenBLAS takes other kernels for products with ``M*N*K`` up to about 1e6, or with a vector
operand). :func:`regular_matmul` keeps every product here above that size; a scene chunk whose
dense product was itself small is scored densely as before (see ``dense_product_is_small``).

The property holds for OpenBLAS's AVX-512 kernels (``SkylakeX``, ``Cooperlake``,
``SapphireRapids``: what it picks on Intel CPUs with AVX-512), which the tests select. It does
not hold for its ``Haswell`` kernels, which it picks on AMD Zen CPUs even when they have
AVX-512 (and which some machines name in ``OPENBLAS_CORETYPE``): there the last bit of some
entries depends on the product's shape. Measured on ML-100K (2,000 train scenes, K 2..12), the
blocked lists changed 2 scenes against the dense computation, and the dense computation changed
10 scenes against the AVX-512 kernels. Scenes are then still valid and seeded (a re-run on the
same machine gives the same bytes), but to get the bytes a seed gives elsewhere on such a CPU,
start Python with ``OPENBLAS_CORETYPE=SkylakeX`` (read when numpy first loads OpenBLAS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usermirrorer.data_pipeline.sampling.draws import ShowableMask, skip_uniform_f32, topk_desc
from usermirrorer.errors import ConfigError, MissingDependency

__all__ = [
    "regular_matmul_t",
    "Candidates",
    "ExactNeighbours",
    "FaissNeighbours",
    "NoiseBlock",
    "select_topk",
    "regular_matmul",
    "dense_product_is_small",
    "NOISE_SCALE",
]

NOISE_SCALE = np.float32(1e-6)  # top-k tie-breaking noise: scores + 1e-6 * U[0, 1)
# Products with M*N*K above this use OpenBLAS's regular kernels (entries independent of shape).
_REGULAR_MNK = 2_000_000
# How far below the k-th best score an item may be and still enter the list through its noise,
# relative to |q| max|f| (an upper bound of the row's normalising scale): the noise is < 1e-6 of
# a normalised score, plus float32 rounding of the division and the sum.
_REACH = 4e-6


def dense_product_is_small(m: int, n_items: int, dim: int) -> bool:
    """Whether an ``(m, dim) @ (dim, n_items)`` float32 product may take a small-matrix kernel."""
    return m < 2 or n_items < 2 or m * n_items * dim <= _REGULAR_MNK


def regular_matmul(queries: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``queries @ factors.T`` (float32), padded with repeated rows so the product is not small.

    Entries then equal those of any other regular product of the same rows and columns.
    """
    return regular_matmul_t(queries, factors.T)


def regular_matmul_t(queries: np.ndarray, factors_t: np.ndarray) -> np.ndarray:
    """``queries @ factors_t`` for factors stored transposed (``dim x n``; column slices allowed).

    The same entries as :func:`regular_matmul` on ``factors_t.T`` (OpenBLAS's regular kernels
    accumulate each entry in the same order either way), and about three times faster for a
    few rows against a large catalog: the catalog needs no transposition while it is packed.
    """
    m, dim = queries.shape
    n = factors_t.shape[1]
    need = max(2, -(-(_REGULAR_MNK + 1) // max(1, n * dim)))
    if n < 2:
        raise ConfigError("a neighbour search needs at least 2 items")
    if m >= need:
        return queries @ factors_t
    padded = np.concatenate([queries, np.repeat(queries[:1], need - m, axis=0)])
    return (padded @ factors_t)[:m]


@dataclass
class Candidates:
    """The items of each scene that may enter its top-k list, in CSR form.

    Attributes:
        ptr: int64 ``(m + 1,)`` offsets into ``items``/``scores``.
        items: int64 showable items, sorted within each scene.
        scores: float32 raw scores ``q . f`` of those items.
        scale: float32 ``(m,)`` the largest absolute score of each scene over the whole
            catalog (the normalising divisor); 1 where the scorer does not normalise.
        normalise: whether scores are divided by ``scale``.
    """

    ptr: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    scale: np.ndarray
    normalise: bool

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def rows(self, start: int, stop: int) -> Candidates:
        """The candidates of scenes ``start..stop-1`` (renumbered from 0)."""
        lo, hi = self.ptr[start], self.ptr[stop]
        return Candidates(self.ptr[start:stop + 1] - lo, self.items[lo:hi], self.scores[lo:hi],
                          self.scale[start:stop], self.normalise)


def _from_lists(m: int, rows: np.ndarray, items: np.ndarray, scores: np.ndarray, scale: np.ndarray,
                normalise: bool) -> Candidates:
    order = np.lexsort((items, rows))
    ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=ptr[1:])
    return Candidates(ptr, items[order].astype(np.int64), scores[order].astype(np.float32), scale, normalise)


class ExactNeighbours:
    """Exact candidate search over a factor matrix, blocked over items, pruned by norm.

    Args:
        factors: float32 ``(n_items, dim)`` item factors.
        block: items per block (each block is one matrix product for all active scenes).
        prune: sort items by norm and stop a scene once no remaining item can reach its list
            (pays off when norms vary, as with the degree-scaled spectral embedding; unit
            content vectors have nothing to prune).
    """

    def __init__(self, factors: np.ndarray, block: int = 8192, prune: bool = True):
        factors = np.ascontiguousarray(factors, dtype=np.float32)
        self.n_items, self.dim = factors.shape
        norms = np.linalg.norm(factors.astype(np.float64), axis=1)
        self.max_norm = float(norms.max()) if len(norms) else 0.0
        self.prune = prune
        # Kept transposed (dim x n_items), in search order: products against it are faster.
        if prune:
            self.order = np.argsort(-norms, kind="stable")
            self.factors_t = factors.T[:, self.order]
            self.norms = norms[self.order]
        else:
            self.order = None
            self.factors_t = np.ascontiguousarray(factors.T)
            self.norms = norms
        # Blocks of [block, 2 * block) items: no tiny tail block (a small product).
        starts = list(range(0, max(self.n_items - block, 0) + 1, block)) if self.n_items > block else [0]
        self.bounds = list(zip(starts, starts[1:] + [self.n_items]))

    def __repr__(self) -> str:
        return (f"ExactNeighbours(n_items={self.n_items:,}, dim={self.dim}, blocks={len(self.bounds)}, "
                f"prune={self.prune})")

    def dense_rows(self, queries: np.ndarray) -> np.ndarray:
        """Float32 ``(m, n_items)`` scores of every item, in item order (entries equal to the
        dense ``queries @ factors.T``)."""
        scores = regular_matmul_t(np.ascontiguousarray(queries, dtype=np.float32), self.factors_t)
        if self.order is None:
            return scores
        out = np.empty_like(scores)
        out[:, self.order] = scores
        return out

    def candidates(self, queries: np.ndarray, mask: ShowableMask, k: int, normalise: bool) -> Candidates:
        """Every showable item that can be among the ``k`` largest of ``score + noise`` per scene.

        Args:
            queries: float32 ``(m, dim)`` query vectors.
            mask: which items each scene may show.
            k: list length.
            normalise: divide each scene's scores by its largest absolute score.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = len(queries)
        qnorm = np.linalg.norm(queries.astype(np.float64), axis=1)
        reach = _REACH * qnorm * self.max_norm + 1e-30
        top = np.full((m, k), -np.inf)  # running best showable raw scores, descending
        threshold = np.full(m, -np.inf)  # the k-th of them
        row_max = np.full(m, -np.inf, dtype=np.float32)
        row_min = np.full(m, np.inf, dtype=np.float32)
        active = np.arange(m)
        found_rows, found_items, found_scores = [], [], []
        for lo, hi in self.bounds:
            if self.prune and len(active):
                # |q . f| <= |q| |f| (with slack for float32 rounding): rows whose remaining items
                # can neither reach the list nor raise the normalising maximum are finished.
                bound = qnorm[active] * self.norms[lo] * (1 + 1e-4) + 1e-30
                abs_max = np.maximum(row_max[active], -row_min[active])
                done = bound < threshold[active] - reach[active]
                if normalise:
                    done &= bound <= abs_max
                active = active[~done]
            if len(active) == 0:
                break
            scores = regular_matmul_t(queries[active], self.factors_t[:, lo:hi])
            if normalise:
                row_max[active] = np.maximum(row_max[active], scores.max(axis=1))
                row_min[active] = np.minimum(row_min[active], scores.min(axis=1))
            items = self.order[lo:hi] if self.order is not None else np.arange(lo, hi)
            cut = (threshold[active] - reach[active]).astype(np.float32)
            open_rows = ~np.isfinite(cut)
            if open_rows.any():
                # No k-th best yet: mask this block densely and take its k-th best showable score.
                local = np.flatnonzero(open_rows)
                masked = scores[local].copy()
                masked[~mask.block(active[local], items)] = -np.inf
                width = masked.shape[1]
                kth = (np.partition(masked, width - k, axis=1)[:, width - k] if width > k
                       else masked.min(axis=1))
                cut[local] = np.where(np.isfinite(kth), (kth - reach[active[local]]).astype(np.float32), -np.inf)
            # flatnonzero + divmod: several times faster than a 2-D nonzero on a sparse mask.
            r, c = np.divmod(np.flatnonzero(scores >= cut[:, None]), scores.shape[1])
            rows, cols = active[r], items[c]
            showable = mask.lookup(rows, cols)
            rows, cols, vals = rows[showable], cols[showable], scores[r[showable], c[showable]]
            if len(rows):
                found_rows.append(rows)
                found_items.append(cols)
                found_scores.append(vals)
                top, threshold = _update_top(top, rows, vals.astype(np.float64))
        scale = np.ones(m, dtype=np.float32)
        if normalise:
            # Scenes pruned before any block have no maximum yet: they had nothing to prune by.
            scale = np.maximum(row_max, -row_min).astype(np.float32)
        if not found_rows:
            return Candidates(np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int64),
                              np.zeros(0, dtype=np.float32), scale, normalise)
        return _from_lists(m, np.concatenate(found_rows), np.concatenate(found_items),
                           np.concatenate(found_scores), scale, normalise)


def _update_top(top: np.ndarray, rows: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge new (row, score) pairs into each row's running top-k; returns (top, k-th best)."""
    k = top.shape[1]
    touched = np.unique(rows)
    local = np.searchsorted(touched, rows)
    merged_rows = np.concatenate([np.repeat(np.arange(len(touched)), k), local])
    merged_vals = np.concatenate([top[touched].ravel(), vals])
    order = np.lexsort((-merged_vals, merged_rows))
    merged_rows, merged_vals = merged_rows[order], merged_vals[order]
    starts = np.searchsorted(merged_rows, np.arange(len(touched)))
    rank = np.arange(len(merged_rows)) - starts[merged_rows]
    keep = rank < k
    block = np.full((len(touched), k), -np.inf)
    block[merged_rows[keep], rank[keep]] = merged_vals[keep]
    top = top.copy()
    top[touched] = block
    return top, top[:, k - 1]


@dataclass
class NoiseBlock:
    """Where a chunk's ``(m, n_items)`` block of tie-breaking noise starts in the generator.

    ``skip`` reads the values of some entries and moves the generator past the block; ``row``
    redraws one whole row (for the rare dense recomputation) from the saved start.
    """

    state: dict
    m: int
    n_items: int

    @classmethod
    def at(cls, rng: np.random.Generator, m: int, n_items: int) -> NoiseBlock:
        return cls(rng.bit_generator.state, m, n_items)

    def row(self, j: int) -> np.ndarray:
        probe = np.random.Generator(type(np.random.default_rng().bit_generator)())
        probe.bit_generator.state = self.state
        skip_uniform_f32(probe, j * self.n_items, np.zeros(0, dtype=np.int64))
        return probe.random(self.n_items, dtype=np.float32)


def select_topk(cands: Candidates, k: int, rng: np.random.Generator, mask: ShowableMask,
                dense_row, block_noise: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """The top-``k`` lists of a chunk from its candidates, drawing its noise block from ``rng``.

    Args:
        cands: the chunk's candidates (rows ``0..m-1``).
        k: list length.
        rng: the generator; moved past the ``m x n_items`` noise block exactly as the dense
            computation ``rng.random((m, n_items), dtype=float32)`` moves it.
        mask: the chunk's showable items.
        dense_row: ``dense_row(scenes) -> float32 (len(scenes), n_items)`` raw scores of some
            scenes over the whole catalog, for scenes whose cut falls inside an exact tie; None:
            ties at the cut go to the lower item index (approximate candidates are not exact
            anyway).
        block_noise: False: draw one uniform per candidate instead (the same law, and no walk
            through the generator's stream) where the dense draws are not reproduced anyway
            (FAISS mode); ties at the cut then go to the lower item index.

    Returns:
        ``(items, ok, n_dense)``: ``(m, k)`` lists, which entries are real, and how many scenes
        needed the dense recomputation.
    """
    m, n = len(cands), mask.n_items
    k = min(k, n)
    noise_start = NoiseBlock.at(rng, m, n)
    rows = np.repeat(np.arange(m), np.diff(cands.ptr))
    scores = cands.scores
    if cands.normalise:
        scale = cands.scale[rows]
        scores = np.divide(scores, scale, out=scores.copy(), where=scale > 0)
    # k-th best normalised score per row; only items within noise reach of it can make the list.
    order = np.lexsort((-scores, rows))
    rank = np.arange(len(rows)) - cands.ptr[rows[order]]
    kth = np.full(m, -np.inf)
    at_k = rank == k - 1
    kth[rows[order][at_k]] = scores[order][at_k]
    near = scores.astype(np.float64) >= kth[rows] - 2e-6 * (1.0 + np.abs(kth[rows]))
    rows, items, scores = rows[near], cands.items[near], scores[near]
    if block_noise:
        noise = skip_uniform_f32(rng, m * n, rows * n + items)
    else:
        noise = rng.random(len(items), dtype=np.float32)
        dense_row = None
    noise *= NOISE_SCALE
    values = scores + noise
    order = np.lexsort((items, -values, rows))
    rows, items, values = rows[order], items[order], values[order]
    starts = np.searchsorted(rows, np.arange(m))
    counts = np.bincount(rows, minlength=m)
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    out = np.zeros((m, k), dtype=np.int64)
    ok = np.zeros((m, k), dtype=bool)
    out[rows[keep], rank[keep]] = items[keep]
    ok[rows[keep], rank[keep]] = True
    # An exact tie across the cut: which tied item the dense top-k kept depends on its
    # partition algorithm, so recompute that scene the dense way.
    if dense_row is None or len(values) == 0:
        return out, ok, 0
    tied = np.flatnonzero((counts > k) & (values[np.minimum(starts + k - 1, len(values) - 1)]
                                          == values[np.minimum(starts + k, len(values) - 1)]))
    if len(tied) == 0:
        return out, ok, 0
    rows_dense = dense_row(tied)  # one product for all tied scenes of the chunk
    showable = mask.dense(tied)
    for r, j in enumerate(tied.tolist()):
        row = rows_dense[r]
        if cands.normalise:
            scale = np.maximum(row.max(), -row.min())
            if scale > 0:
                row = row / scale
        row = row + noise_start.row(j) * NOISE_SCALE
        row[~showable[r]] = -np.inf
        top = topk_desc(row[None, :], k)
        out[j] = top[0]
        ok[j] = np.isfinite(row[top[0]])
    return out, ok, len(tied)


class FaissNeighbours:
    """Approximate top-k candidates from a FAISS inverted-file index (optional extra ``ann``).

    Maximum inner product search becomes nearest-neighbour search by appending
    ``sqrt(max|f|^2 - |f_i|^2)`` to every item (and 0 to every query), so one L2 index serves
    both the collaborative scores (norms vary) and the cosine content scores.

    Args:
        factors: float32 ``(n_items, dim)`` item factors.
        nlist: inverted lists (default ``2 sqrt(n_items)``: 2,000 for 1M items).
        nprobe: lists visited per query (recall vs speed).
        seed: seeds the k-means training sample.
        train_iterations: k-means iterations (on ``40 * nlist`` sampled items).
    """

    def __init__(self, factors: np.ndarray, nlist: int | None = None, nprobe: int = 16, seed: int = 0,
                 train_iterations: int = 10):
        try:
            import faiss
        except ImportError as exc:
            raise MissingDependency("faiss-cpu", "ann") from exc
        factors = np.ascontiguousarray(factors, dtype=np.float32)
        self.n_items, self.dim = factors.shape
        norms2 = (factors.astype(np.float64) ** 2).sum(axis=1)
        self._lift = float(norms2.max()) if len(norms2) else 0.0
        extra = np.sqrt(np.maximum(self._lift - norms2, 0.0)).astype(np.float32)[:, None]
        data = np.ascontiguousarray(np.hstack([factors, extra]))
        self.nlist = int(nlist or max(1, min(self.n_items // 40, int(2 * np.sqrt(self.n_items)))))
        self.nprobe = nprobe
        quantizer = faiss.IndexFlatL2(self.dim + 1)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim + 1, self.nlist, faiss.METRIC_L2)
        self.index.cp.niter = train_iterations
        self.index.cp.seed = seed
        sample = np.random.default_rng(seed).choice(self.n_items, size=min(self.n_items, 40 * self.nlist),
                                                    replace=False)
        self.index.train(data[np.sort(sample)])
        self.index.add(data)
        self.index.nprobe = nprobe
        self.factors = factors

    def __repr__(self) -> str:
        return f"FaissNeighbours(n_items={self.n_items:,}, nlist={self.nlist}, nprobe={self.nprobe})"

    def candidates(self, queries: np.ndarray, mask: ShowableMask, k: int, normalise: bool) -> Candidates:
        """The ``k`` best showable items the index finds per scene (searching deeper for scenes
        whose nearest items are mostly not showable)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = len(queries)
        lifted = np.hstack([queries, np.zeros((m, 1), dtype=np.float32)])
        depth = np.full(m, 4 * k)
        rows_out, items_out = [], []
        todo = np.arange(m)
        while len(todo):
            d = int(min(depth[todo].max(), self.n_items))
            _, found = self.index.search(lifted[todo], d)
            r = np.repeat(todo, d)
            items = found.ravel()
            real = items >= 0
            r, items = r[real], items[real].astype(np.int64)
            showable = mask.lookup(r, items)
            per_row = np.bincount(r[showable], minlength=m)[todo]
            finished = (per_row >= k) | (d >= self.n_items) | (d >= 64 * k)
            fin = np.isin(r, todo[finished]) & showable
            rows_out.append(r[fin])
            items_out.append(items[fin])
            todo = todo[~finished]
            depth[todo] *= 4
        rows = np.concatenate(rows_out)
        items = np.concatenate(items_out)
        scores = np.einsum("ij,ij->i", queries[rows], self.factors[items]).astype(np.float32)
        scale = np.ones(m, dtype=np.float32)
        if normalise and len(rows):
            # The largest |score| the index saw stands in for the catalog's (only the
            # tie-breaking noise's size depends on it).
            scale = np.zeros(m, dtype=np.float32)
            np.maximum.at(scale, rows, np.abs(scores))
            scale[scale == 0] = 1
        return _from_lists(m, rows, items, scores, scale, normalise)
