"""The ranker contract, written once and run against every registered ranker.

Synthetic case with a known answer: two topic clusters of papers (proteins, galaxies), users who
liked only cluster-A papers; their unseen cluster-A papers must be ranked above every cluster-B paper.
"""

from __future__ import annotations

import numpy as np
import pytest

from digest.rank import RANKERS, Corpus, IdMap, TrainData, make_ranker
from digest.rank.base import top_k
from digest.rank.diversity import mmr

A = [
    f"protein folding {w} structure"
    for w in ("dynamics", "kinetics", "energy", "prediction", "network", "simulation", "alignment", "design")
]
B = [
    f"galaxy dark matter {w} survey"
    for w in ("halo", "cluster", "lensing", "rotation", "formation", "redshift", "energy", "cosmology")
]
TOPICAL = {"content", "svm", "hybrid"}  # rankers that must find the cluster from text alone
FLOORS = {"popularity", "random", "trending"}


def synthetic() -> TrainData:
    corpus = Corpus.from_records(
        [(f"a{i}", t, "") for i, t in enumerate(A)] + [(f"b{i}", t, "") for i, t in enumerate(B)] + [("e", "", "")]
    )
    users = IdMap(["ua1", "ua2", "ub1", "ub2", "nobody", "kw"])
    likes = [
        ("ua1", "a0"),
        ("ua1", "a1"),
        ("ua1", "a2"),
        ("ua2", "a0"),
        ("ua2", "a1"),
        ("ua2", "a3"),
        ("ub1", "b0"),
        ("ub1", "b1"),
        ("ub1", "b2"),
        ("ub2", "b0"),
        ("ub2", "b1"),
        ("ub2", "b3"),
    ]
    counts = np.arange(len(corpus), dtype=np.float32)
    return TrainData.from_pairs(
        corpus, users, likes, dislikes=[("ua1", "b4")], keywords=[[], [], [], [], [], ["protein"]], counts=counts
    )


@pytest.fixture(scope="module")
def data() -> TrainData:
    return synthetic()


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_contract(name: str, data: TrainData) -> None:
    ranker = make_ranker(name)
    assert ranker.fit(data) is ranker
    users = np.arange(len(data.users))
    cands = np.arange(len(data.corpus))
    s = ranker.score(users, cands)
    assert isinstance(s, np.ndarray) and s.dtype == np.float32
    assert s.shape == (len(users), len(cands))
    assert np.isfinite(s).all()
    # a sub-block scores the same as the matching slice of the full block
    sub = ranker.score(users[1:3], cands[::2])
    np.testing.assert_allclose(sub, s[1:3, ::2], rtol=1e-4, atol=1e-4)
    # empty blocks
    assert ranker.score(users[:0], cands).shape == (0, len(cands))
    assert ranker.score(users, cands[:0]).shape == (len(users), 0)
    for u in users:
        reasons = ranker.explain(int(u), cands[:5])
        assert len(reasons) == 5 and all(isinstance(r, str) and r for r in reasons)
    assert ranker.explain(0, cands[:0]) == []
    rows, _scores = ranker.recommend(0, cands, 3, exclude=data.likes[0].indices)
    assert len(rows) == 3 and not np.isin(rows, data.likes[0].indices).any()
    # fit again on new data works
    ranker.fit(data)


@pytest.mark.parametrize("name", sorted(TOPICAL))
def test_known_answer(name: str, data: TrainData) -> None:
    ranker = make_ranker(name).fit(data)
    a_rows = np.arange(len(A))
    b_rows = np.arange(len(A), len(A) + len(B))
    for uid in ("ua1", "ua2"):
        u = data.users.index(uid)
        liked = data.likes[u].indices
        unseen_a = np.setdiff1d(a_rows, liked)
        cands = np.concatenate([unseen_a, b_rows])
        best, _ = top_k(cands, ranker.score(np.array([u]), cands)[0], len(unseen_a))
        assert set(best) == set(unseen_a), f"{name} for {uid}: {best}"
    u = data.users.index("ub1")
    unseen_b = np.setdiff1d(b_rows, data.likes[u].indices)
    cands = np.concatenate([a_rows, unseen_b])
    best, _ = top_k(cands, ranker.score(np.array([u]), cands)[0], len(unseen_b))
    assert set(best) == set(unseen_b)


def test_keywords_only_user_gets_topic(data: TrainData) -> None:
    for name in ("content", "hybrid"):
        ranker = make_ranker(name).fit(data)
        u = data.users.index("kw")
        cands = np.arange(len(A) + len(B))
        best, _ = top_k(cands, ranker.score(np.array([u]), cands)[0], 4)
        assert (best < len(A)).all(), name


def test_hybrid_explains_with_component_reasons(data: TrainData) -> None:
    ranker = make_ranker("hybrid").fit(data)
    u = data.users.index("ua1")
    reasons = ranker.explain(u, np.array([3, 4, 5]))
    assert all(
        r.startswith(("close to ", "matches keyword ", "liked by readers", "trending: ", "popular")) for r in reasons
    )
    trend = make_ranker("hybrid", weights={"content": 0.0, "lsa": 0.0, "cf": 0.0, "trend": 1.0}).fit(data)
    assert trend.explain(u, np.array([10]))[0] == "trending: 10 upvotes"


def test_hybrid_copes_with_tiny_data() -> None:
    corpus = Corpus.from_records([("p1", "deep learning", ""), ("p2", "", ""), ("p3", "graph theory", "")])
    for users, likes, kws in [
        ([], [], None),
        (["solo"], [], [["graph"]]),
        (["solo"], [("solo", "p1")], None),
        (["a", "b"], [("a", "p1"), ("a", "p3"), ("b", "p1")], None),
    ]:
        data = TrainData.from_pairs(corpus, IdMap(users), likes, keywords=kws)
        for name in sorted(RANKERS):
            r = make_ranker(name).fit(data)
            s = r.score(np.arange(len(users)), np.arange(3))
            assert s.shape == (len(users), 3) and np.isfinite(s).all()
            if users:
                assert len(r.explain(0, np.arange(3))) == 3
    empty = Corpus.from_records([])
    data = TrainData.from_pairs(empty, IdMap(["x"]), [])
    for name in ("popularity", "random", "trending", "collaborative", "hybrid"):
        assert make_ranker(name).fit(data).score(np.array([0]), np.zeros(0, np.int64)).shape == (1, 0)


def test_hybrid_dislikes_push_down(data: TrainData) -> None:
    corpus, users = data.corpus, data.users
    base = TrainData.from_pairs(corpus, users, [("ua1", "a0"), ("ua1", "b0")])
    with_dislike = TrainData.from_pairs(corpus, users, [("ua1", "a0"), ("ua1", "b0")], dislikes=[("ua1", "b1")])
    u = users.index("ua1")
    b_rows = np.arange(len(A) + 1, len(A) + len(B))
    s0 = make_ranker("hybrid").fit(base).score(np.array([u]), b_rows)[0]
    s1 = make_ranker("hybrid").fit(with_dislike).score(np.array([u]), b_rows)[0]
    assert s1.mean() < s0.mean()


def test_mmr_diversifies_near_duplicates() -> None:
    # five near-duplicates of topic A scored highest, then topic B papers
    feats = np.array([[1.0, 0.01 * i, 0.0] for i in range(5)] + [[0.0, 0.0, 1.0], [0.05, 0.0, 1.0]])
    scores = np.array([1.0, 0.99, 0.98, 0.97, 0.96, 0.8, 0.79])
    cands = np.arange(7) + 100
    picked = mmr(cands, scores, feats, k=3, lambda_=0.5)
    assert picked[0] == 100
    assert any(p in (105, 106) for p in picked), picked
    assert len(set(picked)) == 3
    # lambda_=1 is plain ranking
    assert list(mmr(cands, scores, feats, k=3, lambda_=1.0)) == [100, 101, 102]
    assert len(mmr(cands[:0], scores[:0], feats[:0], k=3)) == 0


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_explain_many_matches_explain(name: str, data: TrainData) -> None:
    ranker = make_ranker(name).fit(data)
    users = np.arange(len(data.users))
    rng = np.random.default_rng(0)
    papers = np.stack([rng.permutation(len(data.corpus))[:6] for _ in users])
    assert ranker.explain_many(users, papers) == [ranker.explain(int(u), row) for u, row in zip(users, papers)]
    assert ranker.explain_many(users[:0], papers[:0]) == []
    assert ranker.explain_many(users[:2], papers[:2, :0]) == [[], []]


def test_explain_many_with_keywords_and_dislikes(data: TrainData) -> None:
    # a fitted hybrid whose trend or content wins on different papers: reasons still agree one by one
    for weights in ({"trend": 1.0}, {"content": 0.0, "lsa": 0.0, "cf": 0.0, "trend": 1.0}, {"cf": 8.0}):
        ranker = make_ranker("hybrid", weights=weights).fit(data)
        users = np.array([5, 0, 2, 5])
        papers = np.tile(np.arange(len(data.corpus))[None, ::2], (4, 1))
        assert ranker.explain_many(users, papers) == [ranker.explain(int(u), row) for u, row in zip(users, papers)]
    content = make_ranker("content").fit(data)
    got = content.explain_many(np.array([5]), np.arange(8)[None, :])[0]
    assert got == content.explain(5, np.arange(8)) and any(r.startswith("matches keyword") for r in got)


def test_profiles_keep_their_heaviest_terms_first_columns_among_equals() -> None:
    """`profile_terms`: each profile row keeps its k entries of largest magnitude (negative ones count
    by size); among equal magnitudes the first columns win, so the choice never depends on sort order."""
    import scipy.sparse as sp

    from digest.rank.content import _heaviest

    rng = np.random.default_rng(0)
    for trial in range(100):
        dense = np.round(rng.uniform(-3, 3, size=(int(rng.integers(1, 12)), int(rng.integers(1, 40)))))  # many ties
        dense[rng.random(dense.shape) < 0.3] = 0
        k = int(rng.integers(1, 8))
        got = _heaviest(sp.csr_matrix(dense, dtype=np.float32), k).toarray()
        want = np.zeros_like(dense)
        for i, row in enumerate(dense):
            cols = [j for j in np.argsort(-np.abs(row), kind="stable") if row[j] != 0][:k]  # stable: first column first
            want[i, cols] = row[cols]
        assert np.array_equal(got, want), trial


def test_top_columns_are_the_largest_entries_of_each_row() -> None:
    """The neighbour searches' exact top k (a floor from group maxima, then a sort of what is above
    it): the same set as a full sort, with self-masked (-inf) entries, ties, narrow and wide rows."""
    from digest.rank._linalg import top_columns

    rng = np.random.default_rng(3)
    for n, m, k in [(50, 5_000, 20), (7, 700, 30), (3, 100, 5), (4, 64, 64), (20, 2_000, 1), (10, 20_000, 500)]:
        S = rng.standard_normal((n, m)).astype(np.float32)
        S[:, rng.integers(0, m, n)] = -np.inf
        S[0] = np.round(S[0])  # many ties
        got = np.sort(top_columns(S, k), axis=1)
        assert got.shape == (n, k)
        kth = -np.sort(-S, axis=1)[:, k - 1 : k]
        chosen = np.take_along_axis(S, got, axis=1)
        assert (chosen >= kth).all() and (np.diff(got, axis=1) > 0).all(), (n, m, k)  # the k largest, no repeats
        untied = np.sum(kth < S, axis=1) == np.sum(kth <= S, axis=1) - 1  # rows with one entry at the k-th value
        want = np.sort(np.argsort(-S, axis=1, kind="stable")[:, :k], axis=1)
        assert np.array_equal(got[untied], want[untied]), (n, m, k)


def test_sparse_products_shared_among_threads_are_bit_identical() -> None:
    """The ridge map's large sparse x dense products split the columns among threads: the same bits."""
    import scipy.sparse as sp

    from digest.rank._linalg import sparse_times_dense

    rng = np.random.default_rng(1)
    n, per = 20_000, 30
    A = sp.csr_matrix(
        (rng.random(n * per, dtype=np.float32), rng.integers(0, 30_000, n * per), np.arange(0, n * per + 1, per)),
        shape=(n, 30_000),
    )
    B = rng.standard_normal((30_000, 101)).astype(np.float32)
    C = rng.standard_normal((20_000, 101)).astype(np.float32)
    assert A.nnz * B.shape[1] >= 50_000_000  # large enough to be split
    for threads in (2, 3):
        assert np.array_equal(sparse_times_dense(A, B, threads=threads), np.asarray(A @ B, dtype=np.float32))
        assert np.array_equal(sparse_times_dense(A.T, C, threads=threads), np.asarray(A.T @ C, dtype=np.float32))


def test_the_text_to_factors_ridge_is_the_least_squares_solution_on_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ridge_cg` fits on some rows of [TF-IDF | w * vectors] by masking its products (no copy of
    either), and in blocks of columns when its buffers would be large: the direct solution either way."""
    import scipy.sparse as sp

    from digest.rank import _linalg

    rng = np.random.default_rng(4)
    X = sp.random(1_500, 400, density=0.03, format="csr", dtype=np.float32, random_state=4)
    D = rng.standard_normal((1_500, 12)).astype(np.float32)
    rows = np.sort(rng.choice(1_500, 900, replace=False))
    Y = rng.standard_normal((900, 30)).astype(np.float32)
    F = np.hstack([X.toarray(), 0.6 * D])[rows]
    want = np.linalg.solve(F.T @ F + 2.0 * np.eye(F.shape[1]), F.T @ Y)
    got = _linalg.ridge_cg(X, Y, 2.0, dense=D, dense_weight=0.6, rows=rows, tol=1e-7, iters=2_000)
    np.testing.assert_allclose(got, want, atol=1e-4)
    monkeypatch.setattr(_linalg, "CG_BUFFER", F.shape[1] * 16)  # blocks of 16 columns
    blocked = _linalg.ridge_cg(X, Y, 2.0, dense=D, dense_weight=0.6, rows=rows, tol=1e-7, iters=2_000)
    np.testing.assert_allclose(blocked, want, atol=1e-4)
