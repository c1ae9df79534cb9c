"""Random floor: a fixed pseudo-random score per (user, paper), reproducible for a seed."""

from __future__ import annotations

import numpy as np

from digest.rank.base import Ranker, TrainData


class RandomRanker(Ranker):
    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, data: TrainData) -> RandomRanker:
        self.data = data
        return self

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        # hash (seed, user, paper) so a pair's score does not depend on the rest of the block
        u = np.asarray(users, dtype=np.uint64)[:, None]
        c = np.asarray(candidates, dtype=np.uint64)[None, :]
        with np.errstate(over="ignore"):
            h = (
                (u * np.uint64(0x9E3779B97F4A7C15))
                ^ (c * np.uint64(0xC2B2AE3D27D4EB4F))
                ^ np.uint64(self.seed * 0x165667B1 + 1)
            )
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
        return ((h >> np.uint64(40)).astype(np.float64) / float(1 << 24)).astype(np.float32)

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return ["picked at random"] * len(papers)
