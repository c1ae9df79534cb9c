"""Offline ranking metrics as plain functions: recall@k and binary-relevance nDCG@k.

One implementation, shared by `digest eval` (`digest.evaluate`, which re-exports these) and by the
hybrid's weight tuning (`digest.rank.hybrid.tuning`), so a validation figure and a benchmark figure
are the same computation.  They live beside the rankers rather than in `digest.evaluate` because
that module imports the rankers: tuning importing it back would be an import cycle.

recall@k for one user = held-out papers in the top k / all held-out papers of that user, with the
user's training papers excluded from the ranking.  nDCG@k uses binary relevance.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from digest.rank.base import top_k_rows


def recall_at_k(ranked: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Share of `relevant` found in the first k of `ranked` (0.0 when nothing is relevant)."""
    relevant = set(relevant)
    if not relevant:
        return 0.0
    return len(relevant.intersection(list(ranked)[:k])) / len(relevant)


def ndcg_at_k(ranked: Sequence[Any], relevant: Collection[Any], k: int) -> float:
    """Binary-relevance nDCG@k: DCG of the ranking over DCG of the ideal one (0.0 when nothing is relevant)."""
    relevant = set(relevant)
    if not relevant:
        return 0.0
    dcg = sum(1.0 / np.log2(i + 2) for i, item in enumerate(list(ranked)[:k]) if item in relevant)
    idcg = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(relevant))))
    return float(dcg / idcg)


def hits_metrics(
    hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int], ndcg_k: int = 10, n_ideal: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-user metrics from a users x ranks 0/1 `hits` array (the vectorised form of the two above).

    `n_relevant` is each user's number of held-out papers (recall's denominator); `n_ideal` the number
    the ranking could find (nDCG's ideal), defaulting to `n_relevant`.
    """
    hits = np.asarray(hits, dtype=np.float64)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    n_ideal = n_relevant if n_ideal is None else np.asarray(n_ideal, dtype=np.float64)
    safe = np.maximum(n_relevant, 1)
    out = {f"recall@{k}": np.where(n_relevant > 0, hits[:, :k].sum(axis=1) / safe, 0.0) for k in ks}
    disc = 1.0 / np.log2(np.arange(2, ndcg_k + 2))
    dcg = (hits[:, :ndcg_k] * disc[: hits[:, :ndcg_k].shape[1]]).sum(axis=1)
    cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = cum[np.minimum(n_ideal, ndcg_k).astype(np.int64)]
    out[f"ndcg@{ndcg_k}"] = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1), 0.0)
    return out


def block_metrics(
    scores: np.ndarray,
    truth: np.ndarray,
    ks: Sequence[int],
    *,
    n_relevant: np.ndarray | None = None,
    ndcg_k: int = 10,
) -> dict[str, np.ndarray]:
    """Per-user recall@k (every k of `ks`) and nDCG@`ndcg_k` of a users x candidates score block.

    `scores` holds -inf where a paper must not be ranked (the user's training papers); `truth` is
    0/1, the held-out papers among the candidates (those at -inf do not count as findable);
    `n_relevant` is recall's denominator, by default what `truth` holds (`digest eval` gives every
    held-out paper, in the pool or not).
    """
    truth = np.asarray(truth, dtype=bool) & ~np.isneginf(scores)
    hits = np.take_along_axis(truth, top_k_rows(scores, max([*ks, ndcg_k])), axis=1)
    n_found = truth.sum(axis=1)
    return hits_metrics(hits, n_found if n_relevant is None else n_relevant, ks, ndcg_k, n_found)
