"""arxiv-sanity-lite's recommender, faithfully: one linear SVM per user over TF-IDF.

For each user, a `LinearSVC(class_weight="balanced", C=0.01, max_iter=10000, tol=1e-6)` is trained
with the user's liked papers as positives and every other paper of the corpus as negatives; its
decision function is the score.  One fit per user is slow by design (about 0.1-0.3 s per user on
17k papers), so each user's model is fitted lazily the first time the user is scored, then cached.
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from digest.features import fit_tfidf
from digest.rank.base import Ranker, TrainData


class SVMRanker(Ranker):
    name = "svm"

    def __init__(self, *, C: float = 0.01, ngram_max: int = 2) -> None:
        self.C = C
        self.ngram_max = ngram_max

    def fit(self, data: TrainData) -> SVMRanker:
        self.data = data
        _, self.items = fit_tfidf(data.corpus.texts(), ngram_max=self.ngram_max)
        self._models: dict[int, tuple[np.ndarray, float] | None] = {}
        return self

    def _model(self, user: int) -> tuple[np.ndarray, float] | None:
        if user not in self._models:
            liked = self.data.likes[user].indices
            n = self.items.shape[0]
            if len(liked) == 0 or len(liked) == n:
                self._models[user] = None
            else:
                y = np.zeros(n, dtype=np.int8)
                y[liked] = 1
                clf = LinearSVC(class_weight="balanced", C=self.C, max_iter=10000, tol=1e-6)
                clf.fit(self.items, y)
                self._models[user] = (clf.coef_.ravel().astype(np.float32), float(clf.intercept_[0]))
        return self._models[user]

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), len(candidates)), dtype=np.float32)
        block = self.items[candidates]
        for i, u in enumerate(users):
            model = self._model(int(u))
            if model is not None:
                out[i] = block @ model[0] + model[1]
        return out

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        model = self._model(user)
        if model is None:
            return ["no likes yet"] * len(papers)
        vocab = np.asarray(self._vocab())
        reasons = []
        for p in papers:
            row = self.items[p]
            contrib = row.data * model[0][row.indices]
            if len(contrib) and contrib.max() > 0:
                reasons.append(f"matches keyword {vocab[row.indices[int(np.argmax(contrib))]]}")
            else:
                reasons.append("like your library (svm)")
        return reasons

    def _vocab(self) -> list[str]:
        if not hasattr(self, "_vocabulary"):
            vec, _ = fit_tfidf(self.data.corpus.texts(), ngram_max=self.ngram_max)
            self._vocabulary = list(vec.get_feature_names_out())
        return self._vocabulary
