"""The slate action space: K *distinct* item indices.

A slate is a ``MultiDiscrete([n_items] * K)`` whose entries must all differ. A plain
``MultiDiscrete.sample()`` draws with replacement, so random agents (and gymnasium's own
``check_env``) would hit invalid slates; :class:`SlateSpace` samples without replacement and
``contains`` checks distinctness. It stays a ``MultiDiscrete`` subclass so RL libraries that
dispatch on space types keep working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import MultiDiscrete
from gymnasium.vector.utils import batch_space

__all__ = ["SlateSpace", "fill_repeats"]


class SlateSpace(MultiDiscrete):
    """``MultiDiscrete([n_items] * K)`` restricted to slates without repeated items.

    The last axis is the slate; leading axes (from :func:`gymnasium.vector.utils.batch_space`)
    are independent slates, one per sub-environment.

    Args:
        n_items: catalog size; entries are item indices ``0..n_items-1``.
        slate_size: K, the number of items shown per step.
        batch: optional leading batch size (vector environments).
        seed: seed of the space's own sampler.
    """

    def __init__(
        self,
        n_items: int,
        slate_size: int,
        batch: int | None = None,
        seed: int | np.random.Generator | None = None,
    ):
        shape = (slate_size,) if batch is None else (batch, slate_size)
        super().__init__(np.full(shape, n_items, dtype=np.int64), dtype=np.int64, seed=seed)
        self.n_items = int(n_items)
        self.slate_size = int(slate_size)
        self.batch = batch

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A uniformly random slate (or one per batch row) of distinct items."""
        if mask is not None or probability is not None:
            raise NotImplementedError(
                "SlateSpace.sample does not take mask/probability; draw item indices yourself "
                "with rng.choice(n_items, K, replace=False, p=...)"
            )
        rows = 1 if self.batch is None else self.batch
        out = np.stack(
            [
                self.np_random.choice(self.n_items, self.slate_size, replace=False)
                for _ in range(rows)
            ]
        ).astype(np.int64)
        return out[0] if self.batch is None else out

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        rows = np.asarray(x).reshape(-1, self.slate_size)
        return all(len(np.unique(row)) == self.slate_size for row in rows)

    def __repr__(self) -> str:
        batch = "" if self.batch is None else f", batch={self.batch}"
        return f"SlateSpace(n_items={self.n_items}, slate_size={self.slate_size}{batch})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SlateSpace)
            and other.n_items == self.n_items
            and other.slate_size == self.slate_size
            and other.batch == self.batch
        )

    __hash__ = None  # mutable sampler state; like gymnasium spaces, not hashable


def fill_repeats(slate: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``slate`` with each repeated entry replaced, in order, by the first ``fallback`` item not
    yet in it; a slate of distinct items comes back unchanged (as a copy).

    This is what a repeated slot means with ``RecEnv(repeats="fill")`` and
    :class:`~usermirrorer.envs.wrappers.DedupSlate`: policies that sample each slot on its own
    (the ``MultiDiscrete`` heads of Stable-Baselines3 and TorchRL) repeat items by chance.

    Args:
        slate: 1-D int array of item indices.
        fallback: item indices in the order used to fill repeated slots (e.g. most popular
            first); must hold at least ``len(slate)`` distinct items.
    """
    out = np.array(slate, dtype=np.int64).reshape(-1)
    used: set[int] = set()
    repeats = []
    for i, item in enumerate(out.tolist()):
        if item in used:
            repeats.append(i)
        else:
            used.add(item)
    if repeats:
        fill = (int(x) for x in fallback if int(x) not in used)
        for i in repeats:
            item = next(fill)
            used.add(item)
            out[i] = item
    return out


@batch_space.register(SlateSpace)
def _batch_slate_space(space: SlateSpace, n: int = 1) -> SlateSpace:
    # A batch of slates is still a slate space (distinct within each row), not the Box that
    # gymnasium derives for a plain MultiDiscrete, so vector action_space.sample() stays valid.
    if space.batch is not None:
        raise ValueError(f"cannot batch an already batched {space!r}")
    from copy import deepcopy

    return SlateSpace(space.n_items, space.slate_size, batch=n, seed=deepcopy(space.np_random))
