"""The `trend` component: log(1 + likes + community counts) of every paper, the same for every reader.

Standardised on one scale for everyone (`global_scale`); recomputed from each day's data.
Explained "trending: N upvotes", or "popular: liked by N readers" without community counts.
"""

from __future__ import annotations

import numpy as np

from digest.rank.base import TrainData
from digest.rank.hybrid.component import Component, Day, Text
from digest.rank.trending import trending_reason


class TrendComponent(Component):
    name = "trend"
    global_scale = True

    def fit(self, data: TrainData, text: Text) -> bool:
        self._count(data)
        return True

    def update(self, day: Day) -> None:
        self._count(day.data)

    def _count(self, data: TrainData) -> None:
        counts = np.zeros(len(data.corpus), np.float32) if data.counts is None else data.counts
        likes = data.reader_likes  # a reader's interests are not more readers
        raw = np.asarray(likes.sum(axis=0), dtype=np.float32).ravel() + np.maximum(np.nan_to_num(counts), 0)
        self.trend = np.log1p(raw).astype(np.float32)
        # what the reasons say
        self.counts = np.maximum(np.nan_to_num(np.asarray(counts, dtype=np.float64)), 0)
        self.like_counts = np.asarray(likes.getnnz(axis=0)).ravel()

    def raw(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.trend[candidates], (len(users), len(candidates)))

    def raw_pairs(self, users: np.ndarray, papers: np.ndarray) -> np.ndarray:
        return self.trend[papers]

    def reason(self, paper: int) -> str:
        if self.counts[paper] > 0:
            return trending_reason(self.counts[paper])
        k = int(self.like_counts[paper])
        return f"popular: liked by {k} reader" + ("" if k == 1 else "s")
