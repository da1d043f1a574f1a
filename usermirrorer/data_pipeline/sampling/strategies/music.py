"""Music (Last.fm): the listener's artists, with play counts, and what their friends play.

Registers the ``lastfm-social`` candidate scorer: an artist scores by how much the user's
friends had played it before the scene time, ``log(1 + sum of friends' plays)``, so a
synthetic exposure holds what a social feed would have surfaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from usermirrorer.data_pipeline.sampling.scorers import SceneBatch, ScorerContext, register_scorer
from usermirrorer.data_pipeline.sampling.strategies.base import register_strategy
from usermirrorer.data_pipeline.sampling.strategies.templated import TemplatedStrategy

if TYPE_CHECKING:
    from usermirrorer.data_pipeline.raw import RawDataset

__all__ = ["MusicStrategy", "SocialScorer"]


class SocialScorer:
    """Scores items by the friends' listening strictly before each scene's time.

    Friends are the user ids in ``user_features["friends"]`` (ids absent from the dataset are
    skipped); each friend interaction weighs its ``plays`` behaviour (1 where absent).
    """

    name = "lastfm-social"
    default_mode = "topk"

    def __init__(self, ds: RawDataset, friends_key: str = "friends", weight_key: str = "plays"):
        self.ds = ds
        index = ds.user_index
        lists = [[index[f] for f in feats.get(friends_key) or [] if f in index]
                 for feats in ds.user_features]
        self.friend_ptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
        self.friends = np.array([f for x in lists for f in x], dtype=np.int64)
        plays = ds.behavior.get(weight_key)
        usable = plays is not None and plays.dtype.kind == "f"
        self.weights = np.nan_to_num(plays, nan=1.0) if usable else np.ones(ds.n_interactions)

    def scores(self, batch: SceneBatch) -> np.ndarray:
        ds = self.ds
        out = np.zeros((len(batch), ds.n_items), dtype=np.float32)
        for j in range(len(batch)):
            user, now = int(batch.users[j]), int(batch.times[j])
            ranges = [ds.rows_before(int(f), now) for f in
                      self.friends[self.friend_ptr[user]:self.friend_ptr[user + 1]]]
            rows = np.concatenate([np.arange(r.start, r.stop) for r in ranges] or [np.zeros(0, int)])
            if len(rows):
                out[j] = np.bincount(ds.inter_item[rows], weights=self.weights[rows],
                                     minlength=ds.n_items)
        return np.log1p(out, out=out)

    def __repr__(self) -> str:
        return f"SocialScorer({len(self.friends):,} friend links over {self.ds.n_users:,} users)"


@register_scorer("lastfm-social")
def _social(ds: RawDataset, ctx: ScorerContext) -> SocialScorer:
    return SocialScorer(ds)


@register_strategy("lastfm")
class MusicStrategy(TemplatedStrategy):
    """Last.fm listeners: artists with their tags; friends' listening as an extra scorer."""

    name = "music"
    item_noun = "artist"
    platform = "Last.fm"
    user_noun = "listener"
    verb = "started listening to"
    history_fields = ("tags",)
    exposure_fields = ("tags",)
    release_key = None

    def feedback(self, behavior: Mapping[str, Any]) -> str:
        parts = []
        if isinstance(behavior.get("plays"), (int, float)):
            parts.append(f"{behavior['plays']:,} plays in total")
        if behavior.get("tags"):
            parts.append("tagged it " + ", ".join(behavior["tags"]))
        return ", ".join(parts)

    def extra_scorers(self) -> list[str]:
        return ["lastfm-social"]
