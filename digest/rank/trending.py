"""Trending: the community signal (`data.counts`: upvotes on the source site, or likes across subscribers)."""

from __future__ import annotations

import numpy as np

from digest.rank.base import Ranker, TrainData


class TrendingRanker(Ranker):
    name = "trending"

    def fit(self, data: TrainData) -> TrendingRanker:
        self.data = data
        self.counts = np.nan_to_num(np.asarray(data.counts, dtype=np.float32))
        return self

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        s = np.log1p(np.maximum(self.counts[candidates], 0))
        return np.broadcast_to(s, (len(users), len(candidates))).astype(np.float32)

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return [trending_reason(self.counts[p]) for p in papers]


def trending_reason(count: float) -> str:
    n = round(float(count))
    return f"trending: {n} upvote" + ("" if n == 1 else "s")
