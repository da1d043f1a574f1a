"""Which items a scene may show, without a scenes x catalog mask (DESIGN.md §3, steps 2 and 4).

An item may be shown in a scene at time ``t`` when it is released by ``t`` (the domain's time
rule), the user has not interacted with it before or at ``t``, and it is not the real item. For
a chunk of scenes, :class:`Availability` keeps only what differs per scene — the excluded items
(history and real item, a few dozen per scene) — plus the shared release times, so asking
about a few thousand (scene, item) pairs costs a few thousand operations whatever the catalog
size. :meth:`Availability.dense` still gives the full boolean mask for the rare rows that need
the whole catalog (an exact finish of a draw, a domain scorer that scores every item).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Availability", "ReleaseIndex"]


class ReleaseIndex:
    """Release times of a catalog, sorted once, to count the items released by a time.

    Args:
        release: int64 ``(n_items,)`` first second each item may be shown; None: no rule.
        n_items: catalog size.
    """

    def __init__(self, release: np.ndarray | None, n_items: int):
        self.release = None if release is None else np.asarray(release, dtype=np.int64)
        self.n_items = n_items
        self._sorted = None if self.release is None else np.sort(self.release)

    def released_by(self, times: np.ndarray) -> np.ndarray:
        """Number of items released at or before each time."""
        times = np.asarray(times, dtype=np.int64)
        if self._sorted is None:
            return np.full(len(times), self.n_items, dtype=np.int64)
        return np.searchsorted(self._sorted, times, side="right").astype(np.int64)

    def __repr__(self) -> str:
        return f"ReleaseIndex(n_items={self.n_items}, rule={'yes' if self.release is not None else 'none'})"


class Availability:
    """The showable items of a chunk of scenes, as a sparse complement.

    Args:
        release: the catalog's :class:`ReleaseIndex`.
        times: int64 ``(m,)`` scene times.
        excluded_ptr: int64 CSR offsets ``(m + 1,)`` into ``excluded_items``.
        excluded_items: items never shown in each scene (interacted with before or at ``t``,
            the real item); repeats are allowed.

    ``lookup``, ``counts`` and ``dense`` agree exactly with the mask
    ``release <= t``, minus the excluded items, that scene sampling used to build densely.
    """

    def __init__(self, release: ReleaseIndex, times: np.ndarray, excluded_ptr: np.ndarray,
                 excluded_items: np.ndarray):
        self.release = release
        self.n_items = release.n_items
        self.times = np.asarray(times, dtype=np.int64)
        m = len(self.times)
        scene = np.repeat(np.arange(m, dtype=np.int64), np.diff(excluded_ptr))
        # One sorted key per excluded (scene, item): membership is a binary search.
        self._keys = np.unique(scene * self.n_items + np.asarray(excluded_items, dtype=np.int64))
        self._m = m

    def __len__(self) -> int:
        return self._m

    def excluded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scenes, items)`` of the distinct excluded pairs, sorted by scene then item."""
        return self._keys // self.n_items, self._keys % self.n_items

    def lookup(self, scenes: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Bool, same shape as the broadcast of ``scenes`` and ``items``: showable or not."""
        scenes, items = np.broadcast_arrays(np.asarray(scenes, dtype=np.int64), np.asarray(items, dtype=np.int64))
        keys = scenes * self.n_items + items
        pos = np.searchsorted(self._keys, keys)
        hit = np.zeros(keys.shape, dtype=bool)
        inside = pos < len(self._keys)
        hit[inside] = self._keys[pos[inside]] == keys[inside]
        ok = ~hit
        if self.release.release is not None:
            ok &= self.release.release[items] <= self.times[scenes]
        return ok

    def counts(self) -> np.ndarray:
        """Showable items per scene."""
        total = self.release.released_by(self.times)
        scenes, items = self.excluded()
        if self.release.release is not None:
            released = self.release.release[items] <= self.times[scenes]
            scenes = scenes[released]
        return total - np.bincount(scenes, minlength=self._m)

    def dense(self, scenes: np.ndarray | None = None) -> np.ndarray:
        """The ``(len(scenes), n_items)`` bool mask of the given scenes (default: all)."""
        scenes = np.arange(self._m) if scenes is None else np.asarray(scenes, dtype=np.int64)
        if self.release.release is not None:
            mask = self.release.release[None, :] <= self.times[scenes][:, None]
        else:
            mask = np.ones((len(scenes), self.n_items), dtype=bool)
        key_scene, key_item = self.excluded()
        local = np.full(self._m, -1, dtype=np.int64)
        local[scenes] = np.arange(len(scenes))
        hit = local[key_scene] >= 0
        mask[local[key_scene[hit]], key_item[hit]] = False
        return mask

    def block(self, scenes: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The ``(len(scenes), len(items))`` bool mask of some scenes over some items."""
        scenes = np.asarray(scenes, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if self.release.release is not None:
            mask = self.release.release[items][None, :] <= self.times[scenes][:, None]
        else:
            mask = np.ones((len(scenes), len(items)), dtype=bool)
        key_scene, key_item = self.excluded()
        local = np.full(self._m, -1, dtype=np.int64)
        local[scenes] = np.arange(len(scenes))
        by_item = np.argsort(items, kind="stable")
        col = np.searchsorted(items[by_item], key_item)
        col = np.minimum(col, len(items) - 1)
        hit = (local[key_scene] >= 0) & (items[by_item][col] == key_item)
        mask[local[key_scene[hit]], by_item[col[hit]]] = False
        return mask

    def subset(self, scenes: np.ndarray) -> Availability:
        """The availability of the given scenes, renumbered ``0..len(scenes)-1`` (repeats allowed)."""
        scenes = np.asarray(scenes, dtype=np.int64)
        key_scene, key_item = self.excluded()
        bounds = np.searchsorted(key_scene, np.arange(self._m + 1))
        lengths = bounds[scenes + 1] - bounds[scenes]
        ptr = np.zeros(len(scenes) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        offsets = np.arange(int(ptr[-1])) - np.repeat(ptr[:-1], lengths)
        items = key_item[np.repeat(bounds[scenes], lengths) + offsets]
        return Availability(self.release, self.times[scenes], ptr, items)

    def __repr__(self) -> str:
        return f"Availability({self._m} scenes, {len(self._keys)} excluded pairs, n_items={self.n_items})"
