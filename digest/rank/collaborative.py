"""Collaborative filtering alone: `implicit`'s ALS (or BPR) on the users x papers likes.

Papers nobody liked get a zero factor (score 0): this ranker cannot rank brand-new papers, which
is why the hybrid maps text onto the factor space.  With too few likes to learn from (fewer than
`min_likes`), it scores everything 0 instead of failing.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from digest.rank._linalg import finite32, single_blas_thread
from digest.rank.base import Ranker, TrainData

CF_REASON = "liked by readers with similar libraries"


def fit_factors(
    likes: sp.csr_matrix,
    *,
    model: str = "als",
    factors: int = 200,
    regularization: float = 0.1,
    alpha: float = 20.0,
    iterations: int = 15,
    seed: int = 0,
    keep_model: bool = False,
) -> tuple:
    """(user factors, item factors) of a users x items 0/1 matrix; factors capped by the data size.

    With `keep_model`, also the fitted `implicit` model (to fold new users in later, `fold_in_users`)."""
    factors = int(max(2, min(factors, min(likes.shape) - 1)))
    with single_blas_thread():
        if model == "bpr":
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            est = BayesianPersonalizedRanking(
                factors=factors, learning_rate=0.05, regularization=0.01, iterations=100, random_state=seed
            )
            est.fit(sp.csr_matrix(likes, dtype=np.float32), show_progress=False)
        elif model == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            est = AlternatingLeastSquares(
                factors=factors, regularization=regularization, iterations=iterations, random_state=seed
            )
            est.fit(sp.csr_matrix(likes * alpha, dtype=np.float32), show_progress=False)
        else:
            raise ValueError(f"unknown collaborative model {model!r}: als or bpr")
    U = finite32(np.asarray(est.user_factors))
    V = finite32(np.asarray(est.item_factors))
    if keep_model:
        est.user_factors = np.zeros((0, U.shape[1]), dtype=np.float32)  # the caller keeps U; no second copy
        return U, V, est
    return U, V


def fold_in_users(model, likes: sp.csr_matrix, item_factors: np.ndarray, alpha: float) -> np.ndarray:
    """ALS user factors of these likes rows against fixed item factors (one least-squares solve per
    user, as an ALS half-step): how a reader whose likes changed is folded in without a refit."""
    if likes.shape[0] == 0:
        return np.zeros((0, item_factors.shape[1]), dtype=np.float32)
    with single_blas_thread():
        model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        model._YtY = None  # cached from the previous item factors
        U = model.recalculate_user(np.arange(likes.shape[0]), sp.csr_matrix(likes * alpha, dtype=np.float32))
    return finite32(np.asarray(U).reshape(likes.shape[0], -1))


class CollaborativeRanker(Ranker):
    name = "collaborative"

    def __init__(
        self,
        *,
        model: str = "als",
        factors: int = 200,
        regularization: float = 0.1,
        alpha: float = 20.0,
        iterations: int = 15,
        min_likes: int = 20,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.min_likes = min_likes

    def fit(self, data: TrainData) -> CollaborativeRanker:
        self.data = data
        likes = data.likes
        self.enabled = likes.nnz >= self.min_likes and min(likes.shape) >= 3
        if self.enabled:
            self.U, self.V = fit_factors(
                likes,
                model=self.model,
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                seed=self.seed,
            )
            # items nobody liked have no signal: exactly zero, not ALS's random init
            self.V[np.asarray(likes.getnnz(axis=0)) == 0] = 0.0
        return self

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return np.zeros((len(users), len(candidates)), dtype=np.float32)
        return finite32(self.U[users] @ self.V[candidates].T, inplace=True)

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return [CF_REASON] * len(papers)
