"""The `content` component: each reader's TF-IDF profile against each paper (the `ContentRanker`).

The profile is the liked papers + keywords - dislikes, keeping its `profile_terms` = 200 heaviest
terms: the same CiteULike figures as the full profile, a tenth of the memory and of the scoring
time with abstracts.  Explained by the text reason: "close to <liked title>" (the liked paper
nearest in the LSA space) / "matches keyword X".

The TF-IDF space itself is fitted and folded in by the blend, because every component reads it
(`Text.tfidf`); this component only scores with it.
"""

from __future__ import annotations

import numpy as np

from digest.rank.base import TrainData
from digest.rank.hybrid.component import Component, Day, Text


class ContentComponent(Component):
    name = "content"
    textual = True

    def fit(self, data: TrainData, text: Text) -> bool:
        self.text = text
        return True

    def update(self, day: Day) -> None:
        """Nothing: the blend has folded the TF-IDF (paper rows, changed readers' profiles) in."""

    def raw(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.text.tfidf.score(users, candidates)

    def raw_pairs(self, users: np.ndarray, papers: np.ndarray) -> np.ndarray:
        c = self.text.tfidf
        return np.asarray(c.profiles[users].multiply(c.items[papers]).sum(axis=1), dtype=np.float32).ravel()
