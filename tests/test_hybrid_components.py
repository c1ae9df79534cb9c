"""The hybrid's components, each held to the one contract in `digest.rank.hybrid.component`, and the
weight tuning measured with `digest eval`'s own metrics.

The community of tests/test_saved_ranker.py (three topics, large enough for ALS), with stand-in
embeddings so that all five components are active.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from digest.rank.base import TrainData
from digest.rank.hybrid import COMPONENTS, DEFAULT_WEIGHTS, GRID, HybridRanker
from digest.rank.hybrid.component import Text, unit
from digest.rank.hybrid.ridge import RidgeComponent
from digest.rank.hybrid.tuning import tune_weights
from digest.rank.metrics import block_metrics
from tests.test_saved_ranker import community


def _embeddings(data: TrainData) -> np.ndarray:
    """Stand-in sentence embeddings: a fixed random projection of each paper's words."""
    rng = np.random.default_rng(5)
    vocab: dict[str, np.ndarray] = {}
    out = []
    for text in data.corpus.texts():
        words = text.split()
        out.append(sum((vocab.setdefault(w, rng.standard_normal(16)) for w in words), np.zeros(16)))
    return np.asarray(out, dtype=np.float32)


@pytest.fixture(scope="module")
def fitted() -> tuple[HybridRanker, TrainData]:
    data = community(new_papers=4)
    return HybridRanker(embeddings=_embeddings(data)).fit(data), data


@pytest.mark.parametrize("name", COMPONENTS)
def test_every_component_keeps_the_contract(name: str, fitted: tuple[HybridRanker, TrainData]) -> None:
    ranker, data = fitted
    part = ranker.state.parts[name]
    users, cands = np.arange(0, len(data.users), 3), np.arange(len(data.corpus))
    block = part.raw(users, cands)
    assert block.shape == (len(users), len(cands)) and np.isfinite(block).all()
    # the pair form is the block, one entry at a time (explanations use it)
    uu, cc = np.repeat(users, len(cands)), np.tile(cands, len(users))
    np.testing.assert_allclose(part.raw_pairs(uu, cc), block.ravel(), rtol=1e-5, atol=1e-6)
    if not part.textual:
        assert all(part.reason(int(p)) for p in cands[:5])
    # folding in a day with nothing new changes nothing
    ranker.update(community(new_papers=4), embeddings=_embeddings(data))
    np.testing.assert_allclose(part.raw(users, cands), block, rtol=1e-5, atol=1e-5)


def test_a_component_without_what_it_needs_is_left_out() -> None:
    ranker = HybridRanker().fit(community())  # no embeddings: no emb
    assert list(ranker.state.parts) == ["content", "lsa", "cf", "trend"]
    assert list(HybridRanker(weights={"lsa": 0.0}).fit(community()).state.parts) == ["content", "cf", "trend"]


def test_tuning_measures_with_the_eval_metrics() -> None:
    """A perfect collaborative block wins the validation, and the figures reported are `block_metrics`'s
    (nDCG@10 decides: with 180 papers every held-out like is in anyone's top 300)."""
    data = community()
    seen: dict[str, np.ndarray] = {}

    def blocks_of(sub: TrainData, users: np.ndarray, cands: np.ndarray) -> dict[str, np.ndarray]:
        held = sp.csr_matrix(data.likes - sub.likes)
        truth = held[users][:, cands].toarray() > 0
        content = np.random.default_rng(0).standard_normal(truth.shape).astype(np.float32)
        seen.update(truth=truth, content=content.copy(), exclude=sub.likes[users][:, cands].toarray() > 0)
        return {"content": content, "cf": truth.astype(np.float32)}

    chosen, report = tune_weights(
        data, "warm", blocks_of, weights={"emb": 4.0}, start=DEFAULT_WEIGHTS, has_embeddings=False, objective="ndcg"
    )
    assert chosen is not None and chosen["cf"] in GRID["cf"] and chosen["cf"] > 0
    assert report["val_recall@300"] == 1.0 and report["val_ndcg@10"] == 1.0
    alone = seen["content"]
    alone[seen["exclude"]] = -np.inf
    m = block_metrics(alone, seen["truth"], [300])
    assert report["content_alone"] == [round(float(m["recall@300"].mean()), 4), round(float(m["ndcg@10"].mean()), 4)]
    assert "emb" not in report["chosen"] and chosen["emb"] == 4.0


def test_too_few_validation_readers_keep_the_weights() -> None:
    data = community()
    small = TrainData(data.corpus, data.users, sp.csr_matrix(data.likes.shape, dtype=np.float32))
    chosen, report = tune_weights(small, "cold", lambda *a: {}, weights={}, start=DEFAULT_WEIGHTS, has_embeddings=False)
    assert chosen is None and report == {"mode": "cold", "val_users": 0, "chosen": None}


def test_a_keyword_pulls_the_embedding_profile_and_is_folded_in() -> None:
    data = community()
    E = _embeddings(data)
    target = int(np.argmax(np.abs(E).sum(axis=1)))  # a paper whose direction the keyword will point at
    words = [["topic word"] if u == 0 else [] for u in range(len(data.users))]
    keyed = TrainData(data.corpus, data.users, data.likes, data.dislikes, words, data.counts)
    vectors = {"topic word": E[target]}
    plain = HybridRanker(embeddings=E).fit(keyed)  # no keyword vectors: keywords cannot reach emb
    pulled = HybridRanker(embeddings=E, keyword_embeddings=vectors).fit(keyed)
    before = plain.state.parts["emb"].raw(np.array([0]), np.array([target]))[0, 0]
    after = pulled.state.parts["emb"].raw(np.array([0]), np.array([target]))[0, 0]
    assert after > before
    others = np.arange(1, len(data.users))  # readers without keywords keep their profile
    np.testing.assert_allclose(pulled.state.parts["emb"].profiles[others], plain.state.parts["emb"].profiles[others])
    # a reader who adds the keyword later gets it through the daily fold-in
    later = [["topic word"] if u in (0, 1) else [] for u in range(len(data.users))]
    plain.update(
        TrainData(data.corpus, data.users, data.likes, data.dislikes, later, data.counts),
        embeddings=E,
        keyword_embeddings=vectors,
    )
    assert (
        plain.state.parts["emb"].raw(np.array([1]), np.array([target]))[0, 0]
        > pulled.state.parts["emb"].raw(np.array([1]), np.array([target]))[0, 0]
    )


def test_paper_vectors_lose_the_fit_s_mean_and_new_papers_lose_the_same_one() -> None:
    """Centring: the fit takes its corpus's mean paper vector off every vector; a paper folded in
    later loses that same mean (not today's), so it gets the vector it would have had in the fit."""
    small, big = community(new_papers=300), community(new_papers=302)  # over 1,000 papers: centring applies
    assert len(small.corpus) >= 1000
    E_small, E_big = _embeddings(small) + 3.0, _embeddings(big) + 3.0  # one large shared direction
    ranker = HybridRanker(embeddings=E_small, emb_smooth=0).fit(small)
    mean = unit(E_small).mean(axis=0)
    assert ranker.emb_mean is not None
    np.testing.assert_allclose(ranker.emb_mean, mean, atol=1e-6)
    np.testing.assert_allclose(ranker.embeddings, unit(unit(E_small) - mean), atol=1e-5)
    assert abs(float(np.mean(ranker.embeddings @ ranker.embeddings[0]))) < 0.2  # no longer all alike
    ranker.update(big, embeddings=E_big)
    known = set(small.corpus.ids.ids)
    new = np.array([i for i, pid in enumerate(big.corpus.ids.ids) if pid not in known])
    assert len(new) == len(big.corpus) - len(small.corpus)
    np.testing.assert_allclose(ranker.embeddings[new], unit(unit(E_big[new]) - mean), atol=1e-5)
    tiny = HybridRanker(embeddings=_embeddings(community())).fit(community())  # a small corpus keeps its vectors
    assert tiny.emb_mean is None


def test_the_ridge_scorer_is_the_weighted_least_squares_solution() -> None:
    """The Woodbury form each reader's scorer is computed by equals the direct weighted least squares
    against every paper (liked: target 1, confidence 1 + alpha; the rest: 0, confidence 1)."""
    rng = np.random.default_rng(3)
    E = unit(rng.standard_normal((60, 8)).astype(np.float32))
    likes = sp.csr_matrix((np.ones(7, np.float32), ([0, 0, 0, 1, 2, 2, 2], [1, 5, 9, 30, 2, 3, 4])), shape=(4, 60))
    part = RidgeComponent(alpha=20.0, lam_scale=0.1)
    part.text = Text(None, E)  # type: ignore[arg-type]  # the scorer reads only the paper vectors
    gram = E.astype(np.float64).T @ E
    lam = 0.1 * np.trace(gram) / 8
    part.B = np.linalg.inv(gram + lam * np.eye(8)).astype(np.float32)
    W = part._weights(likes)
    for u in range(3):
        mine = likes.indices[likes.indptr[u] : likes.indptr[u + 1]]
        c = np.ones(60)
        c[mine] = 21.0
        r = np.zeros(60)
        r[mine] = 1.0
        direct = np.linalg.solve(E.T @ (c[:, None] * E) + lam * np.eye(8), E.T @ (c * r))
        np.testing.assert_allclose(W[u], direct / np.linalg.norm(direct), atol=1e-4)
    assert not W[3].any()  # no likes: no scorer


def test_smoothing_is_each_paper_plus_its_neighbours_mean_and_leaves_the_input_alone() -> None:
    """`smooth_embeddings` works in place on its own unit copy, in similarity blocks: the result is
    unit(e_i + beta * mean of the k most similar other papers), computed here by brute force, and
    the caller's array is not touched; smoothing only some rows gives those rows the same vectors."""
    from digest.rank.hybrid.emb import smooth_embeddings

    rng = np.random.default_rng(3)
    E = (rng.standard_normal((2_500, 12)) * rng.uniform(0.5, 2.0, (2_500, 1))).astype(np.float32)
    before = E.copy()
    U = unit(E)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    near = np.argsort(-S, axis=1)[:, :7]
    want = unit(U + 1.5 * U[near].mean(axis=1))
    got = smooth_embeddings(E, 1.5, 7)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(E, before)
    rows = rng.choice(len(E), 40, replace=False)
    np.testing.assert_allclose(smooth_embeddings(E, 1.5, 7, rows=rows), want[rows], atol=1e-5)


def test_the_emb_nearest_liked_term_is_the_brute_force_one(fitted: tuple[HybridRanker, TrainData]) -> None:
    from digest.rank.hybrid.emb import NEAREST_MAX_LIKES

    ranker, data = fitted
    part = ranker.state.parts["emb"]
    users, cands = np.arange(len(data.users)), np.arange(len(data.corpus))
    E, likes, w = unit(part.text.embeddings), part.likes.tocsr(), part.nearest_weight
    expected = part.profiles[users] @ E[cands].T
    near = 0
    for u in users:
        mine = likes.indices[likes.indptr[u] : likes.indptr[u + 1]]
        if 1 < len(mine) <= NEAREST_MAX_LIKES:
            expected[u] = (1 - w) * expected[u] + w * (E[mine] @ E[cands].T).max(axis=0)
            near += 1
    assert w > 0 and near > 10  # the term is on, for many readers of this community
    np.testing.assert_allclose(part.raw(users, cands), expected, rtol=1e-5, atol=1e-5)
