"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digest.evaluate import hits_metrics, ndcg_at_k, recall_at_k


def test_recall_hand_computed() -> None:
    ranked = ["a", "b", "c", "d", "e"]
    assert recall_at_k(ranked, {"b", "e", "z"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"b", "e", "z"}, 5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, {"a"}, 1) == 1.0
    assert recall_at_k(ranked, set(), 3) == 0.0
    assert recall_at_k(ranked, {"a"}, 100) == 1.0  # k past the end


def test_ndcg_hand_computed() -> None:
    # relevant at ranks 2 and 3 (1-based) out of two relevant: DCG = 1/log2(3) + 1/log2(4)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(["x", "a", "b"], {"a", "b"}, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}, 10) == 0.0
    assert ndcg_at_k(["x"], set(), 10) == 0.0
    # more relevant than k: ideal is k hits
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, 2) == pytest.approx(1.0)


def test_vectorised_matches_plain() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        ranked = list(rng.permutation(30))
        relevant = set(rng.choice(30, size=int(rng.integers(1, 8)), replace=False).tolist())
        hits = np.array([[r in relevant for r in ranked]])
        m = hits_metrics(hits, np.array([len(relevant)]), [5, 10, 20])
        for k in (5, 10, 20):
            assert m[f"recall@{k}"][0] == pytest.approx(recall_at_k(ranked, relevant, k))
        assert m["ndcg@10"][0] == pytest.approx(ndcg_at_k(ranked, relevant, 10))


def test_score_block_matches_plain() -> None:
    """`block_metrics` (what `digest eval` and the hybrid's tuning measure with) ranks each row,
    leaves out the -inf papers, and agrees with the plain functions user by user."""
    from digest.rank.metrics import block_metrics

    rng = np.random.default_rng(1)
    scores = rng.standard_normal((6, 40)).astype(np.float32)
    truth = rng.random((6, 40)) < 0.15
    train = (rng.random((6, 40)) < 0.1) & ~truth
    train[0, np.flatnonzero(truth[0])[:1]] = True  # a held-out paper the user had in training: not findable
    scores[train] = -np.inf
    n_relevant = truth.sum(axis=1) + 1  # one more held out outside the pool
    m = block_metrics(scores, truth, [5, 20], n_relevant=n_relevant)
    for u in range(6):
        order = [int(j) for j in np.argsort(-scores[u], kind="stable") if not train[u, j]]
        relevant = set(np.flatnonzero(truth[u] & ~train[u]).tolist())
        for k in (5, 20):
            assert m[f"recall@{k}"][u] == pytest.approx(len(relevant.intersection(order[:k])) / n_relevant[u])
        assert m["ndcg@10"][u] == pytest.approx(ndcg_at_k(order, relevant, 10))
