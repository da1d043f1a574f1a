"""The draw maths of scene sampling: top-k, Gumbel noise, successive draws without replacement.

Vectorised over a chunk of scenes (rows) and the catalog (columns); every random number comes
from the caller's ``np.random.Generator``, in a fixed order, so the sampler's output is
byte-identical for a seed. Two pieces keep that promise at catalog scale without touching
every item per scene: :class:`ItemDistribution` holds a fixed draw distribution's CDF, built
once instead of once per chunk, and :func:`skip_uniform_f32` reads a few values of a large
block of uniform noise and moves the generator past the block as if it had drawn all of it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from usermirrorer.errors import ConfigError

__all__ = [
    "check_seed",
    "topk_desc",
    "gumbel",
    "ItemDistribution",
    "successive_draws",
    "first_occurrence",
    "skip_uniform_f32",
]


class ShowableMask(Protocol):
    """What the draws need to know about which items each row may take (see
    :class:`~usermirrorer.data_pipeline.sampling.availability.Availability`)."""

    n_items: int

    def lookup(self, scenes: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def counts(self) -> np.ndarray: ...

    def dense(self, scenes: np.ndarray | None = None) -> np.ndarray: ...

    def block(self, scenes: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def __len__(self) -> int: ...


class _DenseMask:
    """A ``(m, n_items)`` bool array seen through the :class:`ShowableMask` interface."""

    def __init__(self, valid: np.ndarray):
        self.valid = np.asarray(valid, dtype=bool)
        self.n_items = self.valid.shape[1]

    def __len__(self) -> int:
        return self.valid.shape[0]

    def lookup(self, scenes: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.valid[scenes, items]

    def counts(self) -> np.ndarray:
        return self.valid.sum(axis=1)

    def dense(self, scenes: np.ndarray | None = None) -> np.ndarray:
        return self.valid.copy() if scenes is None else self.valid[scenes]

    def block(self, scenes: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.valid[np.asarray(scenes)[:, None], np.asarray(items)[None, :]]


def check_seed(seed: object, name: str = "--seed") -> None:
    """Refuse a seed numpy cannot take (negative, not an integer) with the setting's name."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {seed!r}")


def topk_desc(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, largest first (ties: lower index).

    Values tied *at* the k-th place are kept as numpy's partition returns them, which differs
    between CPUs; the callers pass Gumbel-perturbed float scores, where such ties do not occur.
    """
    n = values.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((values.shape[0], 0), dtype=np.int64)
    if k < n:
        part = np.argpartition(values, n - k, axis=1)[:, n - k:]
    else:
        part = np.broadcast_to(np.arange(n), values.shape).copy()
    order = np.lexsort((part, -np.take_along_axis(values, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def gumbel(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    u = rng.random(shape, dtype=np.float32)
    np.clip(u, np.float32(1e-12), None, out=u)
    return -np.log(-np.log(u))


class ItemDistribution:
    """A fixed distribution over the catalog, ``softmax(logits)``, with its CDF built once.

    Args:
        logits: float64 ``(n_items,)`` log-weights (scores / temperature).
    """

    def __init__(self, logits: np.ndarray):
        self.logits = np.asarray(logits, dtype=np.float64)
        self.weights = np.exp(self.logits - self.logits.max())
        self.end = np.cumsum(self.weights)
        self.start = self.end - self.weights
        self.total = self.end[-1]

    @property
    def n_items(self) -> int:
        return len(self.logits)

    def __repr__(self) -> str:
        return f"ItemDistribution(n_items={self.n_items})"


def successive_draws(logits: np.ndarray | ItemDistribution, valid: np.ndarray | ShowableMask, k: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``k`` valid items drawn without replacement with probability ``softmax(logits)``.

    Successive sampling, which has the distribution of Gumbel-top-k over the valid items but
    never touches the whole catalog per row:

    1. i.i.d. draws from one CDF, keeping the first occurrence of each valid item (discarding
       repeats and invalid items *is* successive sampling);
    2. rows still short continue step by step from the distribution with every item drawn so
       far removed (so heavy items that keep repeating cost nothing more);
    3. rows short after that finish with Gumbel-top-k over what is left.

    Args:
        logits: the log-weights, or an :class:`ItemDistribution` built from them once.
        valid: ``(m, n_items)`` bool, or a :class:`ShowableMask` (sparse, for large catalogs).
        k: items per row.
        rng: the caller's generator.

    Returns ``(items, ok)`` of shape ``(m, k)``; ``ok`` is False where a row has fewer than
    ``k`` valid items.
    """
    dist = logits if isinstance(logits, ItemDistribution) else ItemDistribution(logits)
    mask = _DenseMask(valid) if isinstance(valid, np.ndarray) else valid
    m, n = len(mask), dist.n_items
    k = min(k, n)
    logits, weights, end, start, total = dist.logits, dist.weights, dist.end, dist.start, dist.total
    n_valid = mask.counts()
    want = np.minimum(k, n_valid)

    # 1. i.i.d. draws.
    width = 2 * k + 4
    draws = np.minimum(np.searchsorted(end, rng.random((m, width)) * total, side="right"), n - 1)
    distinct = first_occurrence(draws, np.ones(draws.shape, dtype=bool))
    first = distinct & mask.lookup(np.arange(m)[:, None], draws)
    order = np.argsort(~first, axis=1, kind="stable")[:, :k]
    items = np.take_along_axis(draws, order, axis=1)
    ok = np.take_along_axis(first, order, axis=1)
    got = ok.sum(axis=1)
    active = np.flatnonzero(got < want)
    if len(active) == 0:
        return items, ok
    # The rows that continue: their prefix is fixed; every distinct drawn item is removed.
    steps = 2 * k + 8
    cols = width + steps
    gone = np.full((len(active), cols), -1, dtype=np.int64)
    gone[:, :width] = np.where(distinct[active], draws[active], -1)
    gone_start = np.where(gone >= 0, start[np.maximum(gone, 0)], np.inf)
    gone_w = np.where(gone >= 0, weights[np.maximum(gone, 0)], 0.0)
    order = np.argsort(gone_start, axis=1, kind="stable")
    gone = np.take_along_axis(gone, order, axis=1)
    gone_start = np.take_along_axis(gone_start, order, axis=1)
    gone_w = np.take_along_axis(gone_w, order, axis=1)
    removed = gone_w.sum(axis=1)
    n_gone = (gone >= 0).sum(axis=1)

    # 2. step by step on the shrunken distribution (local row index r -> global active[r]).
    local = np.arange(len(active))
    for _ in range(steps):
        if len(local) == 0:
            break
        x = rng.random(len(local)) * np.maximum(total - removed[local], 0.0)
        # Map a point of the shrunken line back onto the full CDF, skipping removed items
        # (ascending by CDF start, so each skip may push x past later removed items).
        used = int(n_gone[local].max())
        for col in range(used):
            x = np.where(gone_start[local, col] <= x, x + gone_w[local, col], x)
        drawn = np.minimum(np.searchsorted(end, x, side="right"), n - 1)
        fresh = ~(gone[local, :used] == drawn[:, None]).any(axis=1)  # float edge: draw again
        rows, drawn = local[fresh], drawn[fresh]
        rows_global = active[rows]
        good = mask.lookup(rows_global, drawn)
        vg = rows_global[good]
        items[vg, got[vg]] = drawn[good]
        ok[vg, got[vg]] = True
        got[vg] += 1
        # Insert the drawn item into the row's sorted removed list.
        slot = n_gone[rows]
        gone[rows, slot] = drawn
        gone_start[rows, slot] = start[drawn]
        gone_w[rows, slot] = weights[drawn]
        removed[rows] += weights[drawn]
        n_gone[rows] += 1
        upto = int(n_gone[rows].max()) if len(rows) else 0
        order = np.argsort(gone_start[rows, :upto], axis=1, kind="stable")
        gone[rows, :upto] = np.take_along_axis(gone[rows, :upto], order, axis=1)
        gone_start[rows, :upto] = np.take_along_axis(gone_start[rows, :upto], order, axis=1)
        gone_w[rows, :upto] = np.take_along_axis(gone_w[rows, :upto], order, axis=1)
        local = local[(got[active[local]] < want[active[local]]) & (n_gone[local] < cols)]

    # 3. exact finish for the few rows still short.
    if len(local):
        rows_global = active[local]
        rest = mask.dense(rows_global)
        taken = gone[local]
        r_idx = np.repeat(np.arange(len(local)), cols)
        mask = taken.ravel() >= 0
        rest[r_idx[mask], taken.ravel()[mask]] = False
        scores = np.where(rest, logits[None, :] + gumbel(rng, rest.shape), -np.inf)
        need = int(k - got[rows_global].min())
        top = topk_desc(scores, need)
        top_ok = np.isfinite(np.take_along_axis(scores, top, axis=1))
        for r, j in enumerate(rows_global):
            more = top[r][top_ok[r]][: k - got[j]]
            items[j, got[j]: got[j] + len(more)] = more
            ok[j, got[j]: got[j] + len(more)] = True
    return items, ok


def first_occurrence(items: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mask of valid entries that are the first valid occurrence of their item in their row."""
    marked = np.where(valid, items, -1)
    order = np.argsort(marked, axis=1, kind="stable")
    sorted_items = np.take_along_axis(marked, order, axis=1)
    dup_sorted = np.zeros_like(valid)
    dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    dup = np.zeros_like(valid)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return valid & ~dup


_U24 = np.float32(1.0 / 16777216.0)


def skip_uniform_f32(rng: np.random.Generator, count: int, indices: np.ndarray) -> np.ndarray:
    """The values ``rng.random(count, dtype=np.float32)[indices]``, without drawing the rest.

    Afterwards ``rng`` is where it would be after drawing all ``count`` values, so every later
    draw is unchanged: a top-k list that needs its tie-breaking noise only for the few items near
    the cut reads exactly the noise the dense implementation drew for them. Works on numpy's
    PCG64 (what ``np.random.default_rng`` gives): a float32 is the high 24 bits of a 32-bit
    half of a 64-bit output, low half first, a pending high half kept in the generator's state;
    another bit generator draws the whole block (same values, slower).

    Args:
        rng: the generator (moved past the block).
        count: size of the block the dense implementation drew.
        indices: int positions inside the block (any order, repeats allowed).

    Returns:
        float32 values, one per index.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if count <= 0:
        return np.zeros(len(indices), dtype=np.float32)
    bitgen = rng.bit_generator
    if type(bitgen) is not np.random.PCG64:
        return rng.random(count, dtype=np.float32)[indices]
    state = bitgen.state
    buffered = bool(state["has_uint32"])
    # Position of each value in the stream of 32-bit halves that follow the buffered one.
    half = indices - 1 if buffered else indices
    out = np.empty(len(indices), dtype=np.uint64)
    from_buffer = half < 0
    out[from_buffer] = state["uinteger"]
    needed = np.unique(half[~from_buffer] >> 1)
    remaining = count - 1 if buffered else count
    n_outputs = (remaining + 1) // 2
    last = n_outputs - 1 if remaining % 2 else -1  # its high half stays buffered
    wanted = np.union1d(needed, [last]) if last >= 0 else needed
    raws = np.empty(len(wanted), dtype=np.uint64)
    probe = np.random.PCG64()
    probe.state = {"bit_generator": "PCG64", "state": dict(state["state"]), "has_uint32": 0, "uinteger": 0}
    done = 0  # outputs the probe has produced so far
    for j, q in enumerate(wanted.tolist()):
        if q > done:
            probe.advance(q - done)
        raws[j] = probe.random_raw()
        done = q + 1
    raw_of = dict(zip(wanted.tolist(), raws.tolist()))
    rest = ~from_buffer
    if rest.any():
        picked = raws[np.searchsorted(wanted, half[rest] >> 1)]
        high = (half[rest] & 1).astype(bool)
        out[rest] = np.where(high, picked >> np.uint64(32), picked & np.uint64(0xFFFFFFFF))
    # Move the real generator past the block, keeping a pending high half as numpy would.
    bitgen.advance(n_outputs)
    after = bitgen.state
    if last >= 0:
        after["has_uint32"], after["uinteger"] = 1, int(raw_of[last] >> 32)
        bitgen.state = after
    return (out >> np.uint64(8)).astype(np.float32) * _U24
