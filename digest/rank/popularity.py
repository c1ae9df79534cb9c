"""Popularity floor: every user gets the papers most users liked."""

from __future__ import annotations

import numpy as np

from digest.rank.base import Ranker, TrainData


class PopularityRanker(Ranker):
    """Scores a paper by how many users liked it in training (ties broken by the community counts)."""

    name = "popularity"

    def fit(self, data: TrainData) -> PopularityRanker:
        self.data = data
        self.likes = np.asarray(data.reader_likes.sum(axis=0), dtype=np.float32).ravel()
        counts = np.asarray(data.counts, dtype=np.float32)
        tie = np.log1p(np.maximum(counts, 0)) / (np.log1p(max(float(counts.max(initial=0)), 0)) + 1.0)
        self.popularity = (self.likes + 0.5 * tie).astype(np.float32)
        return self

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity[candidates], (len(users), len(candidates))).astype(np.float32)

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return [f"liked by {int(self.likes[p])} readers" for p in papers]
