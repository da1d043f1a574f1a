"""Causal popularity: how many interactions each item had strictly before a time (DESIGN.md §3, §8).

"Popularity at time ``t``" never counts the future: an interaction at ``t`` itself or later is
left out. Every popularity in the package comes from here — the popularity-matched negatives of
the scene sampler, the popularity choice models, the popularity recommenders of the env:

- :class:`CausalCounts` holds one running count per item and moves a cursor through the log in
  time order; :meth:`CausalCounts.at` costs the interactions between the previous and the new
  time (forward or backward), so a stream of nearly sorted times is a single pass over the log.
- :func:`iter_causal_popularity` / :func:`causal_popularity`: the counts for a batch of times
  (sorted once, then one pass), in bounded chunks or as one matrix.
- :func:`popularity_bins`: quantile bins of such counts.

>>> counts = CausalCounts(ds)                                 # doctest: +SKIP
>>> counts.at(parse_time("1998-03-01 00:00:00"))[item]        # doctest: +SKIP
42
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset

__all__ = ["CausalCounts", "iter_causal_popularity", "causal_popularity", "popularity_bins"]


class CausalCounts:
    """Interactions per item strictly before a time, for times asked in any order.

    Args:
        ds: the dataset whose log is counted.
        rows: count only these interaction rows (e.g. the train users' rows, so an evaluation
            of held-out users does not count their own interactions); None: every row.

    The array :meth:`at` returns is the counter's own (read-only): it is valid until the next
    call, so copy it to keep it.
    """

    def __init__(self, ds: RawDataset, rows: np.ndarray | None = None):
        times, items = ds.inter_time, ds.inter_item
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            times, items = times[rows], items[rows]
        order = np.argsort(times, kind="stable")
        self._times = times[order]
        self._items = items[order].astype(np.int64)
        self._counts = np.zeros(ds.n_items, dtype=np.int64)
        self._done = 0  # interactions counted: the first `_done` of the time-sorted log

    @property
    def n_items(self) -> int:
        return len(self._counts)

    def at(self, t: int) -> np.ndarray:
        """``(n_items,)`` int64: interactions with each item strictly before ``t``."""
        stop = int(np.searchsorted(self._times, t, side="left"))
        lo, hi = sorted((self._done, stop))
        if hi > lo:
            delta = self._items[lo:hi]
            sign = 1 if stop > self._done else -1
            if len(delta) > self.n_items:
                self._counts += sign * np.bincount(delta, minlength=self.n_items)
            else:
                np.add.at(self._counts, delta, sign)
            self._done = stop
        # a fresh read-only view each call: a stored one would stop aliasing the counts in a
        # deep copy of the counter (copy.deepcopy copies a view as an array of its own)
        view = self._counts.view()
        view.flags.writeable = False
        return view


def iter_causal_popularity(
    ds: RawDataset, times: np.ndarray, chunk_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Causal popularity in chunks: yields ``(indices, counts)`` with ``counts[j, i]`` the number of
    interactions with item ``i`` strictly before ``times[indices[j]]``.

    Chunks come in ascending time order; each holds at most ``chunk_size x n_items`` int32, and
    the whole pass costs one sort of the log plus one scan.
    """
    times = np.asarray(times, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    counter = CausalCounts(ds)
    for start in range(0, len(order), max(1, chunk_size)):
        idx = order[start:start + chunk_size]
        block = np.empty((len(idx), ds.n_items), dtype=np.int32)
        for j, q in enumerate(idx):
            block[j] = counter.at(int(times[q]))
        yield idx, block


def causal_popularity(ds: RawDataset, times: np.ndarray, chunk_size: int = 256) -> np.ndarray:
    """``counts[j, i]`` = interactions with item ``i`` strictly before ``times[j]`` (int32).

    The result is ``len(times) x n_items``; for large catalogs iterate
    :func:`iter_causal_popularity` instead.
    """
    times = np.asarray(times, dtype=np.int64)
    out = np.empty((len(times), ds.n_items), dtype=np.int32)
    for idx, block in iter_causal_popularity(ds, times, chunk_size):
        out[idx] = block
    return out


def popularity_bins(counts: np.ndarray, available: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Quantile bin of every item per row, with edges from the available items only.

    Args:
        counts: ``(m, n_items)`` popularity counts.
        available: ``(m, n_items)`` bool, which items define the quantiles.
        n_bins: number of bins (10 = deciles).

    Returns:
        ``(labels, edges)``: int8/int16 ``(m, n_items)`` bin per item (a monotone function of the
        count, so equal counts share a bin) and ``(n_bins - 1, m)`` edges.
    """
    values = np.where(available, counts.astype(np.float64), np.nan)
    qs = np.arange(1, n_bins) / n_bins
    if len(qs) == 0:
        return np.zeros(counts.shape, dtype=np.int16), np.zeros((0, counts.shape[0]))
    empty = ~available.any(axis=1)
    values[empty] = 0.0  # rows with nothing available: any edges do
    edges = np.nanquantile(values, qs, axis=1, method="lower")
    labels = np.zeros(counts.shape, dtype=np.int16)
    for edge in edges:
        labels += counts >= edge[:, None]
    return labels, edges
