"""Popularity-matched negatives at catalog scale (DESIGN.md §8), without a scenes x catalog array.

The definition (the dense implementation in the sampler spells it out on a whole score row):
give every item the key ``count + 0.5 u`` (``count``: its interactions strictly before the scene
time, ``u`` uniform noise), let ``d = key - key(real item)``, and take as the *above* side the
``window`` showable items with the smallest ``d > 0`` and as the *below* side the ``window``
with the largest ``d < 0``; each side is shuffled, the number of options more popular than the
real item is uniform on ``0..K-1``, and the options are read from the two sides.

The noise only orders items inside one count level (levels never mix: the noise is below 0.5),
so the sides have a closed form that needs the levels next to the real item's count ``c`` only:

- of the ``g`` showable items at level ``c``, the number above the real item is uniform on
  ``0..g`` (its rank among them), and the level's contributions to the two sides are uniformly
  random disjoint subsets of sizes ``min(A, window)`` and ``min(g - A, window)``;
- the above side then takes whole levels ``c+1, c+2, ...`` and a uniformly random part of the
  last one it needs; the below side likewise with ``c-1, c-2, ...``.

:class:`MatchedDraws` draws exactly that distribution from a :class:`LevelIndex` of the log:
a level's size at any time is two binary searches, and its members come from rejection sampling
over a prefix of the index (large levels) or from enumerating that prefix (small ones), so a
scene costs about the few dozen items it returns, not the catalog.
``tests/data_pipeline/sampling/test_fast_draws.py`` compares the two laws.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LevelIndex", "MatchedDraws"]

_PREFIX_SCAN = 4096  # a level whose candidates number at most this is enumerated, not sampled


class LevelIndex:
    """Which items have exactly ``u`` interactions before a time ``t``, without a scan.

    For every ``u >= 1``, the items with at least ``u`` interactions sorted by the time of
    their ``u``-th: those before ``t`` are a prefix, and the items of level ``u`` are the ones
    of that prefix whose ``(u+1)``-th interaction is not before ``t``. So a level's size is two
    binary searches, and a uniform member is a uniform prefix position accepted when it has not
    moved on. Built once from the log (two sorts of the interactions).

    Args:
        items: int ``(n_interactions,)`` item of each interaction.
        times: int64 ``(n_interactions,)`` time of each interaction.
        n_items: catalog size.
    """

    def __init__(self, items: np.ndarray, times: np.ndarray, n_items: int):
        items = np.asarray(items, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        self.n_items = n_items
        by_item = np.lexsort((times, items))
        self.degree = np.bincount(items, minlength=n_items).astype(np.int64)
        self.item_ptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(self.degree, out=self.item_ptr[1:])
        self.item_times = times[by_item]  # each item's interaction times, ascending
        # One sorted key per interaction, (item, time): counts of many items are one search.
        self._t0 = int(times.min()) - 1 if len(times) else 0
        span = int(times.max()) - self._t0 + 2 if len(times) else 2
        self._shift = 1 << max(1, int(span).bit_length())
        self._keys = items[by_item] * self._shift + (self.item_times - self._t0)
        rank = np.arange(len(items)) - np.repeat(self.item_ptr[:-1], self.degree)
        by_rank = np.lexsort((self.item_times, rank))
        self.rank_ptr = np.zeros(int(self.degree.max(initial=0)) + 2, dtype=np.int64)
        np.cumsum(np.bincount(rank, minlength=len(self.rank_ptr) - 1), out=self.rank_ptr[1:])
        self.rank_items = items[by_item][by_rank]  # block u-1: items by the time of their u-th
        self.rank_times = self.item_times[by_rank]
        self.top = len(self.rank_ptr) - 2  # the largest degree

    def reached(self, u: int, t: int) -> int:
        """Items with at least ``u`` interactions before ``t``."""
        if u <= 0:
            return self.n_items
        if u > self.top:
            return 0
        lo, hi = self.rank_ptr[u - 1], self.rank_ptr[u]
        return int(np.searchsorted(self.rank_times[lo:hi], t, side="left"))

    def size(self, u: int, t: int) -> int:
        """Items with exactly ``u`` interactions before ``t``."""
        return self.reached(u, t) - self.reached(u + 1, t)

    def candidates(self, u: int, positions: np.ndarray) -> np.ndarray:
        """Items at the given positions of level ``u``'s prefix."""
        if u <= 0:
            return positions
        return self.rank_items[self.rank_ptr[u - 1] + positions]

    def counts(self, items: np.ndarray, t: int) -> np.ndarray:
        """Interactions of each item strictly before ``t``."""
        items = np.asarray(items, dtype=np.int64)
        offset = min(max(int(t) - self._t0, 0), self._shift - 1)
        order = np.argsort(items, kind="stable")  # ascending needles: a cache-friendly search
        out = np.empty(len(items), dtype=np.int64)
        out[order] = np.searchsorted(self._keys, items[order] * self._shift + offset, side="left")
        return out - self.item_ptr[items]

    def still_at(self, items: np.ndarray, u: int, t: int) -> np.ndarray:
        """Of items with at least ``u`` interactions before ``t``: those with no more."""
        nxt = self.item_ptr[items] + u
        has_next = u < self.degree[items]
        out = ~has_next
        out[has_next] = self.item_times[nxt[has_next]] >= t
        return out


class MatchedDraws:
    """Popularity-matched negatives for one scene at a time.

    Args:
        index: the log's :class:`LevelIndex`.
        release: int64 ``(n_items,)`` release times, or None.
        window: items per side (``popularity_window * (max_exposure - 1)``).
    """

    def __init__(self, index: LevelIndex, release: np.ndarray | None, window: int):
        self.index = index
        self.n_items = index.n_items
        self.release = None if release is None else np.asarray(release, dtype=np.int64)
        self.window = window
        self._marks = np.zeros(self.n_items, dtype=bool)  # scratch: the scene's excluded items
        if self.release is not None:
            self.release_sorted = np.sort(self.release)
            # Items counted before their release (dirty logs): the only unreleased items whose
            # count can be above zero.
            first = np.full(self.n_items, np.iinfo(np.int64).max, dtype=np.int64)
            has = index.degree > 0
            first[has] = index.item_times[index.item_ptr[:-1][has]]
            self.early = np.flatnonzero(first < self.release)

    def __repr__(self) -> str:
        return f"MatchedDraws(n_items={self.n_items:,}, window={self.window})"

    def _count(self, item: int, t: int) -> int:
        return int(self.index.counts(np.array([item]), t)[0])

    def _showable(self, items: np.ndarray, now: int) -> np.ndarray:
        ok = ~self._marks[items]
        if self.release is not None:
            ok &= self.release[items] <= now
        return ok

    def _showable_count(self, u: int, size: int, now: int, excluded: np.ndarray, excluded_counts: np.ndarray) -> int:
        """Showable items at level ``u``: its size minus its excluded and unreleased items."""
        bad = excluded[excluded_counts == u]
        if self.release is None:
            return size - len(bad)
        bad = bad[self.release[bad] <= now]  # unreleased ones are counted next
        early = self.early[self.release[self.early] > now]
        early_counts = self._counts(early, now)
        if u == 0:
            unreleased = self.n_items - int(np.searchsorted(self.release_sorted, now, side="right"))
            at_level = unreleased - int((early_counts > 0).sum())
        else:
            at_level = int((early_counts == u).sum())
        return size - len(bad) - at_level

    def _level(self, u: int, want: int, now: int, excluded: np.ndarray, excluded_counts: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """``want`` showable items of level ``u`` at random (all of them if fewer)."""
        index = self.index
        size = index.size(u, now)
        if size == 0 or want <= 0:
            return np.zeros(0, dtype=np.int64)
        showable = self._showable_count(u, size, now, excluded, excluded_counts)
        want = min(want, showable)
        if want <= 0:
            return np.zeros(0, dtype=np.int64)
        reached = index.reached(u, now)
        if reached <= _PREFIX_SCAN or 64 * showable < reached:
            # Enumerate the prefix: cheap, or the level is too thin in it for rejection.
            items = index.candidates(u, np.arange(reached))
            items = items[index.still_at(items, u, now) & self._showable(items, now)]
            return items[rng.choice(len(items), size=want, replace=False)] if want < len(items) else items
        out = np.zeros(0, dtype=np.int64)
        while len(out) < want:
            need = want - len(out)
            draws = index.candidates(u, rng.integers(0, reached, size=int(2 * need * reached / showable) + 16))
            hit = draws[index.still_at(draws, u, now) & self._showable(draws, now)]
            _, first = np.unique(hit, return_index=True)
            hit = hit[np.sort(first)]  # in draw order, each once: a uniform random subset
            hit = hit[~np.isin(hit, out)]
            out = np.concatenate([out, hit[:need]])
        return out

    def _outward(self, c: int, step: int, need: int, now: int, excluded, excluded_counts,
                 rng: np.random.Generator) -> np.ndarray:
        """``need`` showable items from the levels beyond ``c`` (``step`` +1: above, -1: below):
        whole levels nearest ``c`` first, a uniformly random part of the last level needed."""
        index = self.index
        out: list[np.ndarray] = []
        u = c + step
        while need > 0 and 0 <= u <= index.top:
            if u > 0 and index.reached(u, now) <= _PREFIX_SCAN:
                # High levels: few items reach them, so take them all at once with their counts
                # (levels above c: everything from u up; below: from u down to the next scan).
                lo = u if step > 0 else max(1, u - 64)
                while lo < u and index.reached(lo, now) > 4 * _PREFIX_SCAN:
                    lo = (lo + u + 1) // 2  # a run of levels whose items stay few
                pool = index.candidates(lo, np.arange(index.reached(lo, now)))
                counts = self._counts(pool, now)
                keep = (counts <= u) if step < 0 else (counts >= u)
                pool, counts = pool[keep], counts[keep]
                ok = self._showable(pool, now)
                pool, counts = pool[ok], counts[ok]
                for v in (np.unique(counts) if step > 0 else np.unique(counts)[::-1]).tolist():
                    if need <= 0:
                        break
                    members = pool[counts == v]
                    if len(members) > need:
                        members = members[rng.choice(len(members), size=need, replace=False)]
                    out.append(members)
                    need -= len(members)
                if step > 0:
                    break
                u = lo - 1
                continue
            got = self._level(u, need, now, excluded, excluded_counts, rng)
            out.append(got)
            need -= len(got)
            u += step
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _counts(self, items: np.ndarray, t: int) -> np.ndarray:
        return self.index.counts(items, t)

    def sides(self, target: int, now: int, excluded: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The shuffled above and below sides of one scene.

        Args:
            target: the real item.
            now: the scene time.
            excluded: distinct items the scene may not show (history up to ``now``, the real item).
            rng: the generator.
        """
        w = self.window
        c = self._count(target, now)
        excluded = np.asarray(excluded, dtype=np.int64)
        excluded_counts = self._counts(excluded, now)
        self._marks[excluded] = True
        try:
            # The real item's own level: its rank among the showable items sharing its count.
            size = self.index.size(c, now)
            g = self._showable_count(c, size, now, excluded, excluded_counts)
            n_above = int(rng.integers(0, g + 1))
            take_up, take_down = min(n_above, w), min(g - n_above, w)
            same = self._level(c, take_up + take_down, now, excluded, excluded_counts, rng)
            same = same[rng.permutation(len(same))]  # which of them go above: at random
            up = np.concatenate([same[:take_up], self._outward(c, 1, w - take_up, now, excluded, excluded_counts, rng)])
            down = np.concatenate([same[take_up:], self._outward(c, -1, w - take_down, now, excluded,
                                                                 excluded_counts, rng)])
        finally:
            self._marks[excluded] = False
        return rng.permutation(up), rng.permutation(down)
