"""Maximal marginal relevance: re-rank a user's top list so it is not five copies of one topic."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def mmr(candidates: np.ndarray, scores: np.ndarray, features, k: int, lambda_: float = 0.7) -> np.ndarray:
    """Pick k of `candidates` greedily by lambda_ * relevance - (1 - lambda_) * max similarity to the picks.

    `features` holds one row per candidate (same order), sparse or dense; rows are L2-normalised here so
    similarity is cosine.  Relevance is the scores min-max scaled to [0, 1].  lambda_=1 is plain ranking.
    """
    candidates = np.asarray(candidates)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(candidates)
    k = min(k, n)
    if k <= 0:
        return candidates[:0]
    F = (
        sp.csr_matrix(features, dtype=np.float64)
        if sp.issparse(features)
        else sp.csr_matrix(np.asarray(features, dtype=np.float64))
    )
    return candidates[mmr_order(scores, cosine_similarity_matrix(F), k, lambda_)]


def cosine_similarity_matrix(features) -> np.ndarray:
    """Dense pairwise cosine similarity of the rows of `features` (sparse or dense)."""
    F = sp.csr_matrix(features, dtype=np.float32)
    norms = np.sqrt(np.asarray(F.multiply(F).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    F = sp.diags(1.0 / norms) @ F
    return np.asarray((F @ F.T).toarray(), dtype=np.float32)


def mmr_order(scores: np.ndarray, sim: np.ndarray, k: int, lambda_: float = 0.7) -> np.ndarray:
    """Positions (into `scores`) of k items chosen greedily by MMR, given their pairwise similarity."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    span = scores.max() - scores.min()
    rel = (scores - scores.min()) / span if span > 0 else np.zeros(n)
    chosen: list[int] = []
    max_sim = np.zeros(n)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        value = lambda_ * rel - (1 - lambda_) * max_sim
        value[~available] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, sim[best])
    return np.array(chosen, dtype=np.int64)
