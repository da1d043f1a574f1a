"""Item co-occurrence in users' interaction sequences: the sequential signal of a log.

Two items *co-occur* once each time one user interacted with both within ``window`` positions
of each other in time order (both directions count, so the matrix is symmetric). Logs are
sequential in ways a bag of items is not: ML-100K users rated films in sessions, several
titles at a time, and the film a user rates next is most often one that other users rated
right next to the films this user just rated. :class:`ItemCooccurrence` turns that into a score
for every catalog item given a user's recent history:

``s_j = log(eps + sum_h decay^age(h) C[h, j] / sqrt(n_h n_j))``

over the last ``last`` history items ``h`` (``age`` 0 = the most recent), ``C`` the counts and
``n`` the items' interaction counts (cosine normalisation: a popular item does not co-occur
with everything by sheer volume). ``window=10, last=20, decay=0.8`` are the values with the
lowest log-loss among window {3, 10, 30} x last {5, 10, 20, 50} x decay {1, 0.9, 0.8, 0.7,
0.6, 0.5} on the fidelity benchmark's train-user fit scenes (ML-100K, one fitted temperature).

**Leave-self-out.** A user's own interactions never count toward their own scores: when the
user has rows among those the counts were built from, their pairs and their share of ``n``
are subtracted first. Without this, a train user's scene would find its own answer in the
counts (the pair "last item -> chosen item" is in them), and a model fitted on such scenes
would trust the feature far more than it deserves on unseen users.
"""

from __future__ import annotations

import numpy as np

from usermirrorer.data_pipeline.raw import RawDataset
from usermirrorer.errors import ConfigError

__all__ = ["ItemCooccurrence"]

_EPS = 1e-3  # the floor of the log: an item that never co-occurred scores log(1e-3)


class ItemCooccurrence:
    """Windowed co-occurrence counts of a dataset's items, and per-user catalog scores.

    Args:
        ds: the dataset.
        rows: interaction rows the counts are built from (e.g. the train users' rows, so eval
            users' futures do not leak in); None: all rows.
        window: items up to this many positions apart in a user's sequence co-occur.
        last: scores use the user's last this many history items.
        decay: weight of a history item per position back (the most recent weighs 1).

    Attributes:
        counts: ``(n_items, n_items)`` sparse symmetric counts (CSR).
        degree: interactions per item among ``rows``.
    """

    def __init__(self, ds: RawDataset, rows: np.ndarray | None = None, window: int = 10, last: int = 20,
                 decay: float = 0.8):
        from scipy import sparse

        if window < 1 or last < 1:
            raise ConfigError(f"co-occurrence window and last must be >= 1, got window={window}, last={last}")
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"co-occurrence decay must be in (0, 1], got {decay}")
        self.ds = ds
        self.window, self.last, self.decay = int(window), int(last), float(decay)
        # the dataset keeps a user's rows contiguous and in time order, so sorted row numbers
        # are the users' sequences one after the other
        self._rows = np.arange(ds.n_interactions) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        users = ds.inter_user[self._rows]
        items = ds.inter_item[self._rows].astype(np.int64)
        first, second = self._pairs(users, items)
        n = ds.n_items
        self.counts = sparse.coo_matrix((np.ones(2 * len(first), dtype=np.float64),
                                         (np.concatenate([first, second]), np.concatenate([second, first]))),
                                        shape=(n, n)).tocsr()  # duplicates summed
        self.degree = np.bincount(items, minlength=n).astype(np.float64)

    def _pairs(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(earlier item, later item) of every pair of one user's items <= window apart."""
        first, second = [], []
        for gap in range(1, self.window + 1):
            if gap >= len(items):
                break
            same = users[gap:] == users[:-gap]
            first.append(items[:-gap][same])
            second.append(items[gap:][same])
        if not first:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(first), np.concatenate(second)

    def own_items(self, user: int | None) -> np.ndarray:
        """The user's items among the rows the counts were built from (time order; empty if none)."""
        if user is None:
            return np.zeros(0, np.int64)
        start, stop = np.searchsorted(self._rows, [self.ds.user_ptr[user], self.ds.user_ptr[user + 1]])
        return self.ds.inter_item[self._rows[start:stop]].astype(np.int64)

    def scores(self, history: np.ndarray, user: int | None = None) -> np.ndarray:
        """``s_j`` of the module docstring for every catalog item (float64, ``n_items``).

        Args:
            history: the user's item indices so far, oldest first.
            user: the user's index; their own rows among the counts' are left out (None: none).
        """
        n = self.ds.n_items
        recent = np.asarray(history, dtype=np.int64)[-self.last:]
        if not len(recent):
            return np.full(n, np.log(_EPS))
        weight = np.bincount(recent, weights=self.decay ** np.arange(len(recent))[::-1], minlength=n)
        degree = self.degree.copy()
        own = self.own_items(user)
        if len(own):
            np.subtract.at(degree, own, 1.0)
        degree = np.sqrt(np.maximum(degree, 1.0))
        held = np.flatnonzero(weight)
        coefficient = weight[held] / degree[held]
        total = np.asarray(self.counts[held].T @ coefficient).ravel()
        if len(own):  # this user's pairs leave the counts (both directions, as they were added)
            first, second = self._pairs(np.zeros(len(own), np.int32), own)
            by_item = np.zeros(n)
            by_item[held] = coefficient
            for a, b in ((first, second), (second, first)):
                np.subtract.at(total, b, by_item[a])
        return np.log(_EPS + np.maximum(total, 0.0) / degree)

    def __repr__(self) -> str:
        return (f"ItemCooccurrence(dataset={self.ds.name!r}, rows={len(self._rows)}, window={self.window}, "
                f"last={self.last}, decay={self.decay}, pairs={int(self.counts.sum()) // 2})")
