"""The `lsa` component: the TF-IDF profile in a 200-dimension LSA space of the TF-IDF.

The LSA axes catch related words the TF-IDF keeps apart.  New papers and changed readers are
projected onto the fitted axes.  Explained by the text reason (whose "close to <liked title>" looks
for the nearest liked paper in this space).
"""

from __future__ import annotations

import numpy as np

from digest.rank.base import TrainData
from digest.rank.hybrid.component import Component, Day, Text, take_dense, take_users, unit


class LsaComponent(Component):
    name = "lsa"
    textual = True

    def __init__(self, *, dims: int = 200, seed: int = 0) -> None:
        self.dims = dims
        self.seed = seed

    def fit(self, data: TrainData, text: Text) -> bool:
        X = text.tfidf.items
        k = min(self.dims, X.shape[1] - 1, len(data.corpus) - 1)
        if k < 8:
            return False
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(k, random_state=self.seed, algorithm="randomized", n_iter=4)
        self.text = text
        self.items = unit(svd.fit_transform(X).astype(np.float32))  # each paper, unit length
        self.comp = svd.components_.astype(np.float32)  # TF-IDF -> LSA projection
        self.profiles = unit(np.asarray(text.tfidf.profiles @ self.comp.T, dtype=np.float32))
        return True

    def update(self, day: Day) -> None:
        self.items = take_dense(
            self.items, day.paper_rows, unit(np.asarray(day.new_tfidf @ self.comp.T, dtype=np.float32))
        )
        block = unit(np.asarray(self.text.tfidf.profiles[day.changed] @ self.comp.T, dtype=np.float32))
        self.profiles = take_users(self.profiles, day.user_rows, day.changed, block)

    def raw(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.profiles[users] @ self.items[candidates].T

    def raw_pairs(self, users: np.ndarray, papers: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.profiles[users], self.items[papers])
