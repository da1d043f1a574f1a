"""The draw maths of scene sampling: top-k, Gumbel noise, successive draws without replacement.

Vectorised over a chunk of scenes (rows) and the catalog (columns); every random number comes
from the caller's ``np.random.Generator``, in a fixed order, so the sampler's output is
byte-identical for a seed.
"""

from __future__ import annotations

import numpy as np

from usermirrorer.errors import ConfigError

__all__ = ["check_seed", "topk_desc", "gumbel", "successive_draws", "first_occurrence"]


def check_seed(seed: object, name: str = "--seed") -> None:
    """Refuse a seed numpy cannot take (negative, not an integer) with the setting's name."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {seed!r}")


def topk_desc(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, largest first (ties: lower index)."""
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


def successive_draws(logits: np.ndarray, valid: np.ndarray, k: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``k`` valid items drawn without replacement with probability ``softmax(logits)``.

    Successive sampling, which has the distribution of Gumbel-top-k over the valid items but
    never touches the whole catalog per row:

    1. i.i.d. draws from one CDF, keeping the first occurrence of each valid item (discarding
       repeats and invalid items *is* successive sampling);
    2. rows still short continue step by step from the distribution with every item drawn so
       far removed (so heavy items that keep repeating cost nothing more);
    3. rows short after that finish with Gumbel-top-k over what is left.

    Returns ``(items, ok)`` of shape ``(m, k)``; ``ok`` is False where a row has fewer than
    ``k`` valid items.
    """
    m, n = valid.shape
    k = min(k, n)
    weights = np.exp(logits - logits.max())
    end = np.cumsum(weights)
    start = end - weights
    total = end[-1]
    n_valid = valid.sum(axis=1)
    want = np.minimum(k, n_valid)

    # 1. i.i.d. draws.
    width = 2 * k + 4
    draws = np.minimum(np.searchsorted(end, rng.random((m, width)) * total, side="right"), n - 1)
    distinct = first_occurrence(draws, np.ones(draws.shape, dtype=bool))
    first = distinct & valid[np.arange(m)[:, None], draws]
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
        good = valid[rows_global, drawn]
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
        rest = valid[rows_global].copy()
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
