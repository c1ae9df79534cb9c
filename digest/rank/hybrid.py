"""Hybrid ranker: text, collaborative signal carried to new papers through text, and the trend.

Components, each standardised per user (z-score against the user's scores over a fixed sample of
the corpus, so a pair's score does not depend on the rest of the candidate block) and blended with
weights:

- ``content``: the TF-IDF profile (liked papers + keywords - dislikes, its `profile_terms` = 200
  heaviest terms: the same CiteULike figures as the full profile, a tenth of the memory and of the
  scoring time with abstracts) against each paper (the `ContentRanker`); explained "close to <liked
  title>" (the liked paper nearest in the LSA space) / "matches keyword X";
- ``lsa``: the same profile in a 200-dimension LSA space of the TF-IDF (catches related words);
- ``cf``: `implicit` ALS user factors against item factors; a paper nobody liked (a brand-new one)
  gets its factors from a ridge regression TF-IDF -> ALS item factors fitted on the liked papers,
  so collaborative signal reaches it through its text; explained "liked by readers with similar
  libraries".  Skipped when the likes have no co-occurrence to learn from (no user with two likes,
  or fewer than `min_likes` likes);
- ``trend``: log(1 + likes + community counts); explained "trending: N upvotes";
- ``emb`` (optional extra): a sentence-embedding profile, when `embeddings` are given.  Each paper's
  vector is first smoothed over the corpus: unit(e + `emb_smooth` (2) * mean of its `emb_smooth_k`
  (20) nearest papers' vectors), no likes used (CiteULike p1 recall@300 0.295 -> 0.324, cold
  recall@100 +0.011; ~8 s for 17k papers); the smoothed vectors also feed the cf map.

A brand-new paper's mapped factors are blended (`knn_mix` 0.6) with the similarity-weighted mean
factors of its `knn_k` (500) nearest liked papers in factor space (cold recall@100 +0.010 without
embeddings, +0.002 with).  With enough likes but no co-occurrence (no reader with two likes: cf
skipped, no validation possible) the weights are `NO_CF_WEIGHTS[_EMB]`, what a single-like
validation chose (see there).

Fit weekly, fold each day in: `update(data)` carries a fit over to a day with new papers, new
readers and changed likes without refitting (see `update`; `digest.rank.saved` keeps the fit on
disk), and `score` remembers its last block so that explaining the picks of that block is a lookup.

Weights: `tune="cold"` or `tune="warm"` chooses them inside `fit` on a validation split carved from
the training likes only (cold: hold out 20% of the liked papers with all their likes, rank them as
brand-new papers, k = 100; warm: hold out 20% of each user's likes, k = 300), maximising
recall@k / recall@k(content alone) + nDCG@10 / nDCG@10(content alone), so the blend is judged on
the head of the list as well as on recall; coordinate ascent over `GRID`, then a refit on
everything.  Without tuning, `DEFAULT_WEIGHTS` are used (`weights={...}` overrides any of them).
They sit between what validation chose on CiteULike (BENCHMARKS.md, "Quality"): cold start picked
content 1, cf 8 (with embeddings: cf 15, emb 8); the dense warm split (p10) picked content 1, cf 2
(with embeddings: cf 3, trend 0.25, emb 8); the sparse split (p1, one like per user: no validation
possible, cf skipped) gains from lsa 0.25.  Daily use ranks brand-new papers with few likes in the
community, hence cf 2 rather than 8 until the community is large; emb 8 is what both validations
chose, and only matters when embeddings are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from digest.rank._linalg import finite32, ridge_cg, zstats
from digest.rank.base import Ranker, TrainData, paper_rows, top_k_rows
from digest.rank.collaborative import CF_REASON, fit_factors, fold_in_users
from digest.rank.content import ContentRanker
from digest.rank.trending import trending_reason

COMPONENTS = ("content", "lsa", "cf", "trend", "emb")
DEFAULT_WEIGHTS: dict[str, float] = {"content": 1.0, "lsa": 0.25, "cf": 2.0, "trend": 0.0, "emb": 8.0}
# Enough likes for a popularity but no co-occurrence (no reader with two likes, e.g. CiteULike p1): the
# collaborative part is skipped and nothing can be validated.  These are what a single-like validation
# chose for the remaining components: keep one random like per reader of p10's and of cold's train.csv,
# hold out the rest, k = 300; both chose content 1, emb 16, trend 4 with embeddings (trend 1-2 and lsa
# 0-0.5 without).
NEIGHBOUR_POOL = 20_000  # neighbours (embedding smoothing, factor kNN) are looked for among at most this many papers
NO_CF_WEIGHTS: dict[str, float] = {"content": 1.0, "lsa": 0.25, "cf": 0.0, "trend": 1.0, "emb": 0.0}
NO_CF_WEIGHTS_EMB: dict[str, float] = {"content": 1.0, "lsa": 0.0, "cf": 0.0, "trend": 4.0, "emb": 16.0}
GRID: dict[str, tuple[float, ...]] = {
    "lsa": (0.0, 0.25, 0.5),
    "cf": (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0),
    "trend": (0.0, 0.1, 0.25),
    "emb": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
}


@dataclass
class _State:
    """Everything one fit of the components learned (fitted twice when tuning)."""

    content: ContentRanker
    lsa_items: np.ndarray | None
    lsa_profiles: np.ndarray | None
    U: np.ndarray | None
    V: np.ndarray | None
    trend: np.ndarray
    emb_profiles: np.ndarray | None
    stats: dict[str, tuple[np.ndarray, np.ndarray]]
    # what folding new papers and readers in needs (`HybridRanker.update`)
    lsa_comp: np.ndarray | None = None  # LSA: TF-IDF -> LSA projection
    cf_map: np.ndarray | None = None  # ridge map [TF-IDF | embeddings] -> ALS item factors
    cf_model: object | None = None  # the fitted implicit model (item factors swapped in to fold users in)
    sample_ids: list[str] | None = None  # the papers every reader's z-score statistics are measured on


class HybridRanker(Ranker):
    name = "hybrid"
    folds_in = True

    def __init__(
        self,
        *,
        weights: dict[str, float] | None = None,
        tune: str | None = None,
        factors: int = 200,
        regularization: float = 0.1,
        alpha: float = 20.0,
        iterations: int = 15,
        map_lambda: float = 3.0,
        lsa_dims: int = 200,
        min_likes: int = 50,
        embeddings: np.ndarray | None = None,
        emb_map_weight: float = 1.0,
        keyword_weight: float = 0.35,
        dislike_weight: float = 0.5,
        profile_terms: int | None = 200,
        seed: int = 0,
        val_users: int = 1500,
        objective: str = "both",
        emb_smooth: float = 2.0,
        emb_smooth_k: int = 20,
        knn_mix: float = 0.6,
        knn_k: int = 500,
    ) -> None:
        if tune not in (None, "cold", "warm"):
            raise ValueError("tune must be None, 'cold' or 'warm'")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self._given_weights = dict(weights or {})
        self.emb_smooth = emb_smooth
        self.emb_smooth_k = emb_smooth_k
        self.knn_mix = knn_mix
        self.knn_k = knn_k
        self.tune = tune
        self.als = dict(factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, seed=seed)
        self.map_lambda = map_lambda
        self.lsa_dims = lsa_dims
        self.min_likes = min_likes
        self.raw_embeddings = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        self.embeddings = self.raw_embeddings  # smoothed in `fit`
        self.emb_map_weight = emb_map_weight
        self.keyword_weight = keyword_weight
        self.profile_terms = profile_terms
        self.dislike_weight = dislike_weight
        self.seed = seed
        self.val_users = val_users
        self.tuning: dict | None = None
        if objective not in ("both", "recall", "ndcg"):
            raise ValueError("objective must be 'both', 'recall' or 'ndcg'")
        self.objective = objective

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, data: TrainData) -> HybridRanker:
        self.data = data
        if self.raw_embeddings is not None and len(self.raw_embeddings) != len(data.corpus):
            raise ValueError("embeddings must have one row per corpus paper")
        self.embeddings = self._smooth(self.raw_embeddings)
        self.weights = {**DEFAULT_WEIGHTS, **self._given_weights}
        if data.likes.nnz >= self.min_likes and not _can_fit_cf(data.likes, self.min_likes):
            # a popularity but no co-occurrence: cf is skipped, nothing to validate on -> the single-like-validated weights
            base = NO_CF_WEIGHTS_EMB if self.embeddings is not None else NO_CF_WEIGHTS
            self.weights = {**DEFAULT_WEIGHTS, **base, **self._given_weights}
        if self.tune is not None:
            self._tune(data)
        self.state = self._fit_components(data)
        self._remember(data)
        return self

    def _remember(self, data: TrainData) -> None:
        """Per-fit facts the explanations use, and what the state was computed from (for `update`)."""
        self.data = data
        self._memo = None  # scores of the previous state
        self._trend_counts = np.maximum(np.nan_to_num(np.asarray(data.counts, dtype=np.float64)), 0)
        self._like_counts = np.asarray(data.likes.getnnz(axis=0)).ravel()
        self._fitted = (
            list(data.corpus.ids.ids),
            list(data.users.ids),
            data.likes,
            data.dislikes,
            [list(k) for k in data.keywords],
        )

    def _fit_components(self, data: TrainData) -> _State:
        n_items = len(data.corpus)
        content = ContentRanker(
            keyword_weight=self.keyword_weight,
            dislike_weight=self.dislike_weight,
            ngram_max=2,
            min_df=2 if n_items >= 1000 else 1,
            profile_terms=self.profile_terms,
        ).fit(data)
        X = content.items
        # LSA space of the TF-IDF
        lsa_items = lsa_profiles = comp = None
        k = min(self.lsa_dims, X.shape[1] - 1, n_items - 1)
        if k >= 8 and self.weights.get("lsa", 0) != 0:
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(k, random_state=self.seed, algorithm="randomized", n_iter=4)
            lsa_items = _unit(svd.fit_transform(X).astype(np.float32))
            comp = svd.components_.astype(np.float32)
            lsa_profiles = _unit(np.asarray(content.profiles @ comp.T, dtype=np.float32))
        # collaborative factors, carried to unliked papers through text
        U = V = M = est = None
        likes = data.likes
        if _can_fit_cf(likes, self.min_likes):
            U, V, est = fit_factors(likes, **self.als, keep_model=True)
            liked = np.asarray(likes.getnnz(axis=0)) > 0
            cold = ~liked
            if cold.any():
                M = self._cf_map(X, V, liked)
                V[cold] = self._mix_neighbours(self._map_to_factors(M, X[cold], cold), V[liked])
            U = self._push_away(U, V, data.dislikes)
            U, V = finite32(U), finite32(V)
        trend = _trend(data)
        emb_profiles = self._emb_profiles(data.likes, data.dislikes)
        state = _State(content, lsa_items, lsa_profiles, U, V, trend, emb_profiles, {}, comp, M, est)
        # per-user standardisation against a fixed sample of the corpus
        rng = np.random.default_rng(self.seed)
        sample = (
            np.sort(rng.choice(n_items, size=min(n_items, 2000), replace=False)) if n_items else np.zeros(0, np.int64)
        )
        state.sample_ids = [data.corpus.ids.ids[i] for i in sample]
        state.stats = self._stats(state, np.arange(len(data.users)), sample)
        return state

    def _stats(
        self, state: _State, users: np.ndarray, sample: np.ndarray, *, chunk: int = 8192
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each active component's per-user (mean, std) over the sample papers, `chunk` users at a time
        (100k readers x 2,000 sample papers would be 0.8 GB per component block)."""
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for start in range(0, max(len(users), 1), chunk):
            block = users[start : start + chunk]
            for name in COMPONENTS:
                raw = self._raw(state, name, block, sample)
                if raw is not None:
                    parts.setdefault(name, []).append(
                        zstats(raw)
                        if raw.shape[1]
                        else (np.zeros(len(block), np.float32), np.ones(len(block), np.float32))
                    )
        return {
            name: (np.concatenate([m for m, _ in got]), np.concatenate([s for _, s in got]))
            for name, got in parts.items()
        }

    def _cf_map(self, X: sp.csr_matrix, V: np.ndarray, liked: np.ndarray) -> np.ndarray:
        """The ridge map from a paper's text (TF-IDF, and embeddings when given) to its ALS factors,
        learned on the papers someone liked."""
        D = self._map_dense(np.flatnonzero(liked))
        return ridge_cg(X[liked], V[liked], self.map_lambda, dense=D)

    def _map_dense(self, rows: np.ndarray) -> np.ndarray | None:
        if self.embeddings is None or not self.emb_map_weight:
            return None
        # [TF-IDF | w * embeddings] -> factors: the embeddings carry meaning TF-IDF misses
        return self.emb_map_weight * _unit(self.embeddings[rows])

    def _map_to_factors(self, M: np.ndarray, X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """Factors of papers nobody liked (TF-IDF rows X, corpus rows `rows`) through the ridge map."""
        out = np.asarray(X @ M[: X.shape[1]], dtype=np.float32)
        D = self._map_dense(np.flatnonzero(rows) if rows.dtype == bool else rows)
        if D is not None:
            out += D @ M[X.shape[1] :]
        return out

    def _mix_neighbours(self, Vc: np.ndarray, Vw: np.ndarray) -> np.ndarray:
        """Mapped factors Vc of papers nobody liked, blended (knn_mix) with the similarity-weighted mean
        factors of their knn_k nearest liked papers (cosine in factor space; Vw: the liked papers' factors)."""
        if not self.knn_mix or len(Vw) <= self.knn_k or not len(Vc):
            return Vc
        return (1 - self.knn_mix) * Vc + self.knn_mix * np.asarray(
            _factor_knn(Vc, Vw, self.knn_k) @ Vw, dtype=np.float32
        )

    def _smooth(
        self, E: np.ndarray | None, old: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Embeddings each pulled toward their corpus neighbourhood (`smooth_embeddings`); not in a tiny
        corpus, where the neighbours would be most of it.  With `old` (the fitted, smoothed vectors) and
        `rows` (each paper's row in the fit, -1 if new), only new papers are smoothed: old ones keep theirs."""
        if E is None or not self.emb_smooth or len(E) < 1000:
            return E
        if old is None or rows is None:
            return smooth_embeddings(E, self.emb_smooth, self.emb_smooth_k)
        new = np.flatnonzero(rows < 0)
        return _take_dense(old, rows, smooth_embeddings(E, self.emb_smooth, self.emb_smooth_k, rows=new))

    def _push_away(self, U: np.ndarray, V: np.ndarray, dislikes: sp.csr_matrix | None) -> np.ndarray:
        """A disliked paper's factors push the user away from similar papers."""
        if dislikes is None or not dislikes.nnz:
            return U
        return U - 0.5 * np.asarray(_row_mean(dislikes) @ V, dtype=np.float32) * (np.diff(dislikes.indptr) > 0)[:, None]

    def _emb_profiles(self, likes: sp.csr_matrix, dislikes: sp.csr_matrix | None) -> np.ndarray | None:
        """Optional sentence-embedding profiles: mean liked embedding - disliked ones, unit length."""
        if self.embeddings is None:
            return None
        E = _unit(self.embeddings)
        prof = _row_mean(likes) @ E
        if dislikes is not None and dislikes.nnz:
            prof = prof - self.dislike_weight * (_row_mean(dislikes) @ E)
        return _unit(np.asarray(prof, dtype=np.float32))

    # -- folding in --------------------------------------------------------------------------

    def update(self, data: TrainData, *, embeddings: np.ndarray | None = None) -> HybridRanker:
        """Fold a day's changes into the last fit instead of refitting: new papers get TF-IDF rows
        from the fitted vocabulary, LSA coordinates and ALS factors through the ridge map; readers
        who are new or whose likes, dislikes or keywords changed get new profiles and ALS factors
        (one least-squares step against the item factors) and new z-score statistics; everyone
        else keeps theirs; the trend is recomputed.  The vocabulary, LSA axes, ALS item factors and
        the map stay as fitted, so a periodic `fit` is still needed (`digest.rank.saved`)."""
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if len(embeddings) != len(data.corpus):
                raise ValueError("embeddings must have one row per corpus paper")
        if not hasattr(self, "state"):
            self.raw_embeddings = embeddings if embeddings is not None else self.raw_embeddings
            return self.fit(data)
        if (embeddings is None) != (self.embeddings is None):
            raise ValueError("update needs embeddings exactly when the fit had them")
        paper_ids, user_ids, old_likes, old_dislikes, old_keywords = self._fitted
        pindex = {pid: i for i, pid in enumerate(paper_ids)}
        prow = np.fromiter((pindex.get(p, -1) for p in data.corpus.ids.ids), dtype=np.int64, count=len(data.corpus))
        uindex = {u: i for i, u in enumerate(user_ids)}
        urow = np.fromiter((uindex.get(u, -1) for u in data.users.ids), dtype=np.int64, count=len(data.users))
        changed = _changed_users(data, prow, urow, len(paper_ids), old_likes, old_dislikes, old_keywords)
        st = self.state
        self.prepare_update()  # in the fit's coordinates, before anything moves
        if embeddings is not None:
            self.raw_embeddings = embeddings
            self.embeddings = self._smooth(embeddings, self.embeddings, prow)
        new = np.flatnonzero(prow < 0)
        fresh = st.content.fold_in(data, prow, urow, changed)
        if st.lsa_items is not None:
            st.lsa_items = _take_dense(st.lsa_items, prow, _unit(np.asarray(fresh @ st.lsa_comp.T, dtype=np.float32)))
            block = _unit(np.asarray(st.content.profiles[changed] @ st.lsa_comp.T, dtype=np.float32))
            st.lsa_profiles = _take_users(st.lsa_profiles, urow, changed, block)
        if st.U is not None:
            liked_fit = np.asarray(self._fitted[2].getnnz(axis=0)) > 0
            mapped = self._mix_neighbours(self._map_to_factors(st.cf_map, fresh, new), st.V[liked_fit])
            st.V = finite32(_take_dense(st.V, prow, mapped))
            likes_c = data.likes[changed]
            block = fold_in_users(st.cf_model, likes_c, st.V, self.als["alpha"])
            block = self._push_away(block, st.V, None if data.dislikes is None else data.dislikes[changed])
            st.U = finite32(_take_users(st.U, urow, changed, block))
        st.trend = _trend(data)
        if st.emb_profiles is not None:
            block = self._emb_profiles(data.likes[changed], None if data.dislikes is None else data.dislikes[changed])
            st.emb_profiles = _take_users(st.emb_profiles, urow, changed, block)
        sample = data.corpus.ids.indices(st.sample_ids)
        fresh_stats = self._stats(st, changed, sample)
        for name, (mean, std) in list(st.stats.items()):
            if name in fresh_stats:
                st.stats[name] = (
                    _take_users(mean, urow, changed, fresh_stats[name][0]),
                    _take_users(std, urow, changed, fresh_stats[name][1]),
                )
        if "trend" in st.stats:  # one global scale, recomputed with the new trend
            mean, std = (
                zstats(st.trend[sample][None, :]) if len(sample) else (np.zeros(1, np.float32), np.ones(1, np.float32))
            )
            st.stats["trend"] = (np.full(len(urow), mean[0], np.float32), np.full(len(urow), std[0], np.float32))
        self.last_update = {"new_papers": len(new), "new_users": int((urow < 0).sum()), "changed_users": len(changed)}
        self._remember(data)
        return self

    def prepare_update(self) -> None:
        """Learn the text -> factors map if the fit did not need one (every paper had a like), so that
        a saved model folds new papers in quickly."""
        st = self.state
        if st.U is not None and st.cf_map is None:
            liked = np.asarray(self._fitted[2].getnnz(axis=0)) > 0
            st.cf_map = self._cf_map(st.content.items, st.V, liked)

    def __getstate__(self) -> dict:
        """Saved without the training data (texts, likes): `update` brings today's."""
        state = dict(self.__dict__)
        state.pop("data", None)
        return state

    def _raw(self, state: _State, name: str, users: np.ndarray, candidates: np.ndarray) -> np.ndarray | None:
        """The unstandardised users x candidates block of one component, or None if it is off."""
        if name == "content":
            return state.content.score(users, candidates)
        if name == "lsa" and state.lsa_items is not None:
            return state.lsa_profiles[users] @ state.lsa_items[candidates].T
        if name == "cf" and state.U is not None:
            return state.U[users] @ state.V[candidates].T
        if name == "trend":
            return np.broadcast_to(state.trend[candidates], (len(users), len(candidates)))
        if name == "emb" and state.emb_profiles is not None:
            return state.emb_profiles[users] @ _unit(self.embeddings[candidates]).T
        return None

    def _z(self, state: _State, name: str, users: np.ndarray, candidates: np.ndarray) -> np.ndarray | None:
        raw = self._raw(state, name, users, candidates)
        if raw is None:
            return None
        if name == "trend":  # one global scale: the same for every user
            mean, std = state.stats[name]
            return (raw - mean[:1, None]) / std[:1, None] if len(mean) else raw * 0
        mean, std = state.stats[name]
        return (raw - mean[users, None]) / std[users, None]

    # -- scoring -------------------------------------------------------------------------------

    def components(self, users: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
        """Each active component's weighted, standardised block (what `score` sums)."""
        users = np.asarray(users, dtype=np.int64)
        candidates = np.asarray(candidates, dtype=np.int64)
        out = {}
        for name in COMPONENTS:
            w = self.weights.get(name, 0.0)
            if w == 0:
                continue
            z = self._z(self.state, name, users, candidates)
            if z is not None:
                out[name] = w * z
        return out

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        parts = self.components(users, candidates)
        total = np.zeros((len(users), len(candidates)), dtype=np.float32)
        for block in parts.values():
            total += block
        # the last block's parts, so that explaining its picks (the daily run's next step) is a lookup
        self._memo = (np.asarray(users, dtype=np.int64), np.asarray(candidates, dtype=np.int64), parts)
        return finite32(total)

    def _memo_parts(self, users: np.ndarray, papers: np.ndarray) -> dict[str, np.ndarray] | None:
        """Each component's weighted z-score of the (users[i], papers[i, j]) pairs from the last
        scored block, or None if the pairs are not all in it."""
        memo = getattr(self, "_memo", None)
        if memo is None:
            return None
        m_users, m_cands, parts = memo
        u_pos, c_pos = _positions(m_users, users), _positions(m_cands, papers)
        if u_pos is None or c_pos is None:
            return None
        return {name: block[u_pos[:, None], c_pos] for name, block in parts.items()}

    def item_features(self, papers: np.ndarray) -> sp.csr_matrix:
        return self.state.content.items[np.asarray(papers, dtype=np.int64)]

    def _pair_z(self, name: str, users: np.ndarray, papers: np.ndarray) -> np.ndarray | None:
        """One component's standardised score of each (users[i], papers[i]) pair (a vector, not a block)."""
        st = self.state
        if name == "content":
            c = st.content
            raw = np.asarray(c.profiles[users].multiply(c.items[papers]).sum(axis=1), dtype=np.float32).ravel()
        elif name == "lsa" and st.lsa_items is not None:
            raw = np.einsum("ij,ij->i", st.lsa_profiles[users], st.lsa_items[papers])
        elif name == "cf" and st.U is not None:
            raw = np.einsum("ij,ij->i", st.U[users], st.V[papers])
        elif name == "trend":
            mean, std = st.stats[name]
            return (st.trend[papers] - mean[0]) / std[0] if len(mean) else st.trend[papers] * 0
        elif name == "emb" and st.emb_profiles is not None:
            raw = np.einsum("ij,ij->i", st.emb_profiles[users], _unit(self.embeddings[papers]))
        else:
            return None
        mean, std = st.stats[name]
        return (raw - mean[users]) / std[users]

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return self.explain_many(np.array([user]), np.asarray(papers, dtype=np.int64)[None, :])[0]

    def explain_many(self, users: np.ndarray, papers: np.ndarray) -> list[list[str]]:
        """Each paper's reason is the one of the component that contributed most to its score.

        Vectorised: every component's weighted, standardised contribution of all (user, paper) pairs
        at once; the text reasons come from `ContentRanker.explain_many` for the pairs that need them.
        """
        users = np.asarray(users, dtype=np.int64)
        papers = paper_rows(users, papers)
        n, m = papers.shape
        if n == 0 or m == 0:
            return [[] for _ in range(n)]
        names, parts = [], []
        memo = self._memo_parts(users, papers)
        if memo is not None:
            names = [name for name in COMPONENTS if name in memo]
            parts = [memo[name].ravel() for name in names]
        else:
            flat_u, flat_p = np.repeat(users, m), papers.ravel()
            for name in COMPONENTS:
                w = self.weights.get(name, 0.0)
                if w == 0:
                    continue
                z = self._pair_z(name, flat_u, flat_p)
                if z is not None:
                    names.append(name)
                    parts.append(w * np.asarray(z, dtype=np.float32))
        if not parts:
            return [["new in your window"] * m for _ in range(n)]
        best = np.argmax(np.stack(parts), axis=0).reshape(n, m)
        textual = np.isin(np.array(names)[best], ("content", "lsa", "emb"))
        pi, pj = np.nonzero(textual)  # only the pairs a text reason is wanted for
        said = (
            self.state.content.explain_pairs(users[pi], papers[pi, pj], dense=self.state.lsa_items) if len(pi) else []
        )
        content = dict(zip(zip(pi.tolist(), pj.tolist()), said))
        out = []
        for i in range(n):
            reasons = []
            for j, p in enumerate(papers[i]):
                name = names[best[i, j]]
                if name in ("content", "lsa", "emb"):
                    reasons.append(content[i, j])
                elif name == "cf":
                    reasons.append(CF_REASON)
                elif self._trend_counts[p] > 0:
                    reasons.append(trending_reason(self._trend_counts[p]))
                else:
                    k = int(self._like_counts[p])
                    reasons.append(f"popular: liked by {k} reader" + ("" if k == 1 else "s"))
            out.append(reasons)
        return out

    # -- validation tuning ---------------------------------------------------------------------

    def _tune(self, data: TrainData) -> None:
        rng = np.random.default_rng(self.seed + 1)
        likes = data.likes.tocsr()
        if self.tune == "cold":
            liked_items = np.flatnonzero(np.asarray(likes.getnnz(axis=0)) > 0)
            val_items = (
                rng.choice(liked_items, size=len(liked_items) // 5, replace=False)
                if len(liked_items) >= 10
                else liked_items[:0]
            )
            mask = np.zeros(likes.shape[1], dtype=bool)
            mask[val_items] = True
            coo = likes.tocoo()
            held = mask[coo.col]
            k = 100
        else:
            coo = likes.tocoo()
            held = np.zeros(coo.nnz, dtype=bool)
            order = np.lexsort((rng.random(coo.nnz), coo.row))
            rows = coo.row[order]
            starts = np.searchsorted(rows, np.arange(likes.shape[0]))
            counts = np.diff(likes.indptr)
            rank_in_user = np.arange(coo.nnz) - starts[rows]
            n_hold = np.where(counts >= 3, np.ceil(counts * 0.2), 0).astype(np.int64)
            held[order[rank_in_user < n_hold[rows]]] = True
            k = 300
        shape = likes.shape
        fit_likes = sp.csr_matrix((np.ones((~held).sum(), np.float32), (coo.row[~held], coo.col[~held])), shape=shape)
        val = sp.csr_matrix((np.ones(held.sum(), np.float32), (coo.row[held], coo.col[held])), shape=shape)
        users = np.flatnonzero((np.diff(val.indptr) > 0) & (np.diff(fit_likes.indptr) > 0))
        self.tuning = {"mode": self.tune, "val_users": len(users), "chosen": None}
        if len(users) < 30:
            return  # too little to tune on: keep the given/default weights
        if len(users) > self.val_users:
            users = np.sort(rng.choice(users, size=self.val_users, replace=False))
        sub = TrainData(data.corpus, data.users, fit_likes, data.dislikes, data.keywords, data.counts)
        saved = dict(self.weights)
        self.weights = {n: 1.0 for n in COMPONENTS}  # compute every component while tuning
        state = self._fit_components(sub)
        self.weights = saved
        cands = np.flatnonzero(mask) if self.tune == "cold" else np.arange(shape[1])
        blocks = {n: self._z(state, n, users, cands) for n in COMPONENTS}
        blocks = {n: np.asarray(b, dtype=np.float32) for n, b in blocks.items() if b is not None}
        exclude = fit_likes[users][:, cands].toarray() > 0
        truth = val[users][:, cands].toarray() > 0
        n_true = np.maximum(truth.sum(axis=1), 1)
        names = [n for n in ("lsa", "cf", "trend", "emb") if n in blocks]
        disc = 1.0 / np.log2(np.arange(2, 12))
        idcg = np.cumsum(disc)[np.clip(truth.sum(axis=1), 1, 10) - 1]

        def measure(total: np.ndarray) -> tuple[float, float]:
            total[exclude] = -np.inf
            hits = np.take_along_axis(truth, top_k_rows(total, k), axis=1)
            rec = float((hits.sum(axis=1) / n_true).mean())
            ndcg = float(((hits[:, :10] * disc[: min(10, hits.shape[1])]).sum(axis=1) / idcg).mean())
            return rec, ndcg

        base = measure(blocks["content"].copy())  # content alone: the scale of each metric

        def objective(w: dict[str, float]) -> tuple[float, float, float]:
            total = blocks["content"].copy()
            for n in names:
                if w[n]:
                    total += w[n] * blocks[n]
            rec, ndcg = measure(total)
            # recall@k and nDCG@10, each relative to content alone, so neither dominates
            obj = (
                rec / max(base[0], 1e-9) + ndcg / max(base[1], 1e-9)
                if self.objective == "both"
                else rec
                if self.objective == "recall"
                else ndcg
            )
            return obj, rec, ndcg

        # coordinate ascent over the grid (a few dozen blends instead of every combination), two rounds
        w = {n: min(GRID[n], key=lambda g, n=n: abs(g - DEFAULT_WEIGHTS[n])) for n in names}
        seen: dict[tuple, tuple[float, float, float]] = {}
        best = None
        for _ in range(2):
            changed = False
            for n in names:
                for g in GRID[n]:
                    trial = {**w, n: g}
                    key = tuple(trial[m] for m in names)
                    if key not in seen:
                        seen[key] = objective(trial)
                    if best is None or seen[key][0] > best[0] + 1e-6:
                        best = (seen[key][0], dict(trial), seen[key][1], seen[key][2])
                        changed = changed or trial != w
                        w = dict(trial)
            if not changed:
                break
        if best is None:  # no component besides content
            obj, rec, ndcg = objective(w)
            best = (obj, dict(w), rec, ndcg)
        chosen = {"content": 1.0, **{n: 0.0 for n in ("lsa", "cf", "trend")}, **best[1]}
        if "emb" not in best[1]:
            chosen["emb"] = self.weights.get("emb", DEFAULT_WEIGHTS["emb"])
        self.weights.update(chosen)
        if self.embeddings is None:
            chosen.pop("emb")  # not a component of this fit: keep it out of the report
        self.tuning.update(
            {
                "val_users": len(users),
                "blends_tried": len(seen),
                "objective": f"recall@{k}/content + ndcg@10/content" if self.objective == "both" else self.objective,
                f"val_recall@{k}": round(best[2], 4),
                "val_ndcg@10": round(best[3], 4),
                "content_alone": [round(base[0], 4), round(base[1], 4)],
                "chosen": dict(chosen),
            }
        )


def _positions(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray | None:
    """Where each of `wanted` is in `keys` (same shape as `wanted`), or None if any is missing."""
    if not len(keys):
        return None
    order = np.argsort(keys, kind="stable")
    pos = order[np.searchsorted(keys, wanted, sorter=order).clip(0, len(keys) - 1)]
    return pos if np.array_equal(keys[pos], wanted) else None


def _trend(data: TrainData) -> np.ndarray:
    """log(1 + likes + community counts) of every paper."""
    raw = np.asarray(data.likes.sum(axis=0), dtype=np.float32).ravel() + np.maximum(np.nan_to_num(data.counts), 0)
    return np.log1p(raw).astype(np.float32)


def _changed_users(
    data: TrainData,
    prow: np.ndarray,
    urow: np.ndarray,
    n_old_papers: int,
    old_likes: sp.csr_matrix,
    old_dislikes: sp.csr_matrix | None,
    old_keywords: list[list[str]],
) -> np.ndarray:
    """Rows (in `data`) of readers who are new or whose likes, dislikes or keywords differ from the fit's."""
    inv_p = np.full(n_old_papers, -1, dtype=np.int64)
    inv_p[prow[prow >= 0]] = np.flatnonzero(prow >= 0)
    inv_u = np.full(old_likes.shape[0], -1, dtype=np.int64)
    inv_u[urow[urow >= 0]] = np.flatnonzero(urow >= 0)
    shape = data.likes.shape

    def moved(m: sp.csr_matrix | None) -> sp.csr_matrix:
        if m is None:
            return sp.csr_matrix(shape, dtype=np.float32)
        c = m.tocoo()
        r, k = inv_u[c.row], inv_p[c.col]
        keep = (r >= 0) & (k >= 0)
        return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (r[keep], k[keep])), shape=shape)

    changed = urow < 0
    for new, old in ((data.likes, old_likes), (data.dislikes, old_dislikes)):
        new = sp.csr_matrix(shape, dtype=np.float32) if new is None else new
        diff = (new != moved(old)).tocsr()
        changed |= np.diff(diff.indptr) > 0
    known = np.flatnonzero(~changed)
    changed[known] = [list(data.keywords[u]) != old_keywords[urow[u]] for u in known]
    return np.flatnonzero(changed)


def _take_dense(old: np.ndarray, rows: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """Row i is old[rows[i]], or, where rows[i] is -1, the next row of `fresh`."""
    out = np.empty((len(rows), *old.shape[1:]), dtype=old.dtype)
    out[rows >= 0] = old[rows[rows >= 0]]
    out[rows < 0] = fresh
    return out


def _take_users(old: np.ndarray, urow: np.ndarray, changed: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Per-user rows: `block` for the changed users (in order), the old row for everyone else."""
    out = np.empty((len(urow), *old.shape[1:]), dtype=old.dtype)
    keep = np.ones(len(urow), dtype=bool)
    keep[changed] = False
    out[keep] = old[urow[keep]]
    out[changed] = block
    return out


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return a / n


def _row_mean(m: sp.csr_matrix) -> sp.csr_matrix:
    counts = np.diff(m.indptr).astype(np.float32)
    counts[counts == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / counts) @ m, dtype=np.float32)


def _can_fit_cf(likes: sp.csr_matrix, min_likes: int) -> bool:
    """Whether the likes have co-occurrence for ALS to learn from (some reader with two likes)."""
    return bool(likes.nnz >= min_likes and (np.diff(likes.indptr) >= 2).any() and min(likes.shape) >= 3)


def smooth_embeddings(
    E: np.ndarray, beta: float, k: int = 20, *, rows: np.ndarray | None = None, pool: int = NEIGHBOUR_POOL
) -> np.ndarray:
    """unit(e_i + beta * mean of the unit vectors of the k most similar other papers) for `rows` (all by default).

    Pulls each paper toward its neighbourhood in the corpus (uses no likes): about 7 s for 17k papers x
    384 dimensions on one core, in row chunks.  Neighbours are looked for among at most `pool` papers
    (a fixed sample: the same in a fit and in later updates), so a large corpus costs linear time.
    """
    E = _unit(E)
    rows = np.arange(len(E)) if rows is None else np.asarray(rows, dtype=np.int64)
    cand = _pool(len(E), pool)
    k = min(k, len(cand) - 1)
    if k < 1 or not beta:
        return E[rows]
    P = E[cand]
    out = np.empty((len(rows), E.shape[1]), dtype=np.float32)
    chunk = max(64, min(2000, 50_000_000 // max(len(P), 1)))  # similarity blocks of at most ~200 MB
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        S = E[r] @ P.T
        self_col = np.searchsorted(cand, r).clip(0, len(cand) - 1)
        mine = cand[self_col] == r
        S[np.flatnonzero(mine), self_col[mine]] = -np.inf  # not itself
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        out[s : s + chunk] = E[r] + beta * P[top].mean(axis=1)
    return _unit(out)


def _pool(n: int, size: int) -> np.ndarray:
    """Sorted rows of a fixed pseudo-random sample of `size` of `n` rows (all of them if n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


def _factor_knn(Vc: np.ndarray, Vw: np.ndarray, k: int) -> sp.csr_matrix:
    """len(Vc) x len(Vw): each row's k nearest rows of Vw by cosine, weights max(cos, 0) summing to 1."""
    keep = _pool(len(Vw), NEIGHBOUR_POOL)
    Cn, Wn = _unit(Vc), _unit(Vw[keep])
    chunk = max(64, min(1024, 50_000_000 // max(len(Wn), 1)))
    rows, cols, vals = [], [], []
    for s in range(0, len(Cn), chunk):
        S = Cn[s : s + chunk] @ Wn.T
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(np.arange(s, s + len(S)), k))
        cols.append(top.ravel())
        vals.append(np.maximum(np.take_along_axis(S, top, axis=1), 0).ravel())
    m = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), keep[np.concatenate(cols)])),
        shape=(len(Cn), len(Vw)),
        dtype=np.float32,
    )
    tot = np.asarray(m.sum(axis=1)).ravel()
    tot[tot == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / tot) @ m, dtype=np.float32)
