"""Hybrid ranker: text, collaborative signal carried to new papers through text, and the trend.

Components, each standardised per user (z-score against the user's scores over a fixed sample of
the corpus, so a pair's score does not depend on the rest of the candidate block) and blended with
weights:

- ``content``: the TF-IDF profile (liked papers + keywords - dislikes) against each paper (the
  `ContentRanker`); explained "close to <liked title>" / "matches keyword X";
- ``lsa``: the same profile in a 200-dimension LSA space of the TF-IDF (catches related words);
- ``cf``: `implicit` ALS user factors against item factors; a paper nobody liked (a brand-new one)
  gets its factors from a ridge regression TF-IDF -> ALS item factors fitted on the liked papers,
  so collaborative signal reaches it through its text; explained "liked by readers with similar
  libraries".  Skipped when the likes have no co-occurrence to learn from (no user with two likes,
  or fewer than `min_likes` likes);
- ``trend``: log(1 + likes + community counts); explained "trending: N upvotes";
- ``emb`` (optional extra): a sentence-embedding profile, when `embeddings` are given.

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

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from digest.rank._linalg import finite32, ridge_cg, zstats
from digest.rank.base import Ranker, TrainData, paper_rows, top_k_rows
from digest.rank.collaborative import CF_REASON, fit_factors
from digest.rank.content import ContentRanker
from digest.rank.trending import trending_reason

COMPONENTS = ("content", "lsa", "cf", "trend", "emb")
DEFAULT_WEIGHTS: dict[str, float] = {"content": 1.0, "lsa": 0.25, "cf": 2.0, "trend": 0.0, "emb": 8.0}
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


class HybridRanker(Ranker):
    name = "hybrid"

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
        seed: int = 0,
        val_users: int = 1500,
        objective: str = "both",
    ) -> None:
        if tune not in (None, "cold", "warm"):
            raise ValueError("tune must be None, 'cold' or 'warm'")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.tune = tune
        self.als = dict(factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, seed=seed)
        self.map_lambda = map_lambda
        self.lsa_dims = lsa_dims
        self.min_likes = min_likes
        self.embeddings = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        self.emb_map_weight = emb_map_weight
        self.keyword_weight = keyword_weight
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
        if self.embeddings is not None and len(self.embeddings) != len(data.corpus):
            raise ValueError("embeddings must have one row per corpus paper")
        if self.tune is not None:
            self._tune(data)
        self.state = self._fit_components(data)
        # per-fit facts the explanations use
        self._trend_counts = np.maximum(np.nan_to_num(np.asarray(data.counts, dtype=np.float64)), 0)
        self._like_counts = np.asarray(data.likes.getnnz(axis=0)).ravel()
        return self

    def _fit_components(self, data: TrainData) -> _State:
        n_items = len(data.corpus)
        content = ContentRanker(
            keyword_weight=self.keyword_weight, dislike_weight=self.dislike_weight, ngram_max=2,
            min_df=2 if n_items >= 1000 else 1,
        ).fit(data)
        X = content.items
        # LSA space of the TF-IDF
        lsa_items = lsa_profiles = None
        k = min(self.lsa_dims, X.shape[1] - 1, n_items - 1)
        if k >= 8 and self.weights.get("lsa", 0) != 0:
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(k, random_state=self.seed, algorithm="randomized", n_iter=4)
            lsa_items = _unit(svd.fit_transform(X).astype(np.float32))
            comp = svd.components_.astype(np.float32)
            lsa_profiles = _unit(np.asarray(content.profiles @ comp.T, dtype=np.float32))
        # collaborative factors, carried to unliked papers through text
        U = V = None
        likes = data.likes
        per_user = np.diff(likes.indptr)
        if likes.nnz >= self.min_likes and (per_user >= 2).any() and min(likes.shape) >= 3:
            U, V = fit_factors(likes, **self.als)
            liked = np.asarray(likes.getnnz(axis=0)) > 0
            cold = ~liked
            if cold.any():
                D = None
                if self.embeddings is not None and self.emb_map_weight:
                    # [TF-IDF | w * embeddings] -> factors: the embeddings carry meaning TF-IDF misses
                    D = self.emb_map_weight * _unit(self.embeddings)
                M = ridge_cg(X[liked], V[liked], self.map_lambda, dense=None if D is None else D[liked])
                V[cold] = np.asarray(X[cold] @ M[: X.shape[1]], dtype=np.float32)
                if D is not None:
                    V[cold] += D[cold] @ M[X.shape[1]:]
            if data.dislikes is not None and data.dislikes.nnz:
                # a disliked paper's factors push the user away from similar papers
                U = U - 0.5 * np.asarray(_row_mean(data.dislikes) @ V, dtype=np.float32) * (np.diff(data.dislikes.indptr) > 0)[:, None]
            U, V = finite32(U), finite32(V)
        # trend: likes plus community counts
        trend_raw = np.asarray(likes.sum(axis=0), dtype=np.float32).ravel() + np.maximum(np.nan_to_num(data.counts), 0)
        trend = np.log1p(trend_raw).astype(np.float32)
        # optional sentence embeddings
        emb_profiles = None
        if self.embeddings is not None:
            E = _unit(self.embeddings)
            prof = _row_mean(likes) @ E
            if data.dislikes is not None and data.dislikes.nnz:
                prof = prof - self.dislike_weight * (_row_mean(data.dislikes) @ E)
            emb_profiles = _unit(np.asarray(prof, dtype=np.float32))
        state = _State(content, lsa_items, lsa_profiles, U, V, trend, emb_profiles, {})
        # per-user standardisation against a fixed sample of the corpus
        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(n_items, size=min(n_items, 2000), replace=False)) if n_items else np.zeros(0, np.int64)
        users = np.arange(len(data.users))
        for name in COMPONENTS:
            raw = self._raw(state, name, users, sample)
            if raw is not None:
                state.stats[name] = zstats(raw) if raw.shape[1] else (np.zeros(len(users), np.float32), np.ones(len(users), np.float32))
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
        total = np.zeros((len(users), len(candidates)), dtype=np.float32)
        for block in self.components(users, candidates).values():
            total += block
        return finite32(total)

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
        flat_u, flat_p = np.repeat(users, m), papers.ravel()
        names, parts = [], []
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
        need = np.flatnonzero(textual.any(axis=1))
        content = dict(zip(need.tolist(), self.state.content.explain_many(users[need], papers[need]))) if len(need) else {}
        out = []
        for i in range(n):
            reasons = []
            for j, p in enumerate(papers[i]):
                name = names[best[i, j]]
                if name in ("content", "lsa", "emb"):
                    reasons.append(content[i][j])
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
            val_items = rng.choice(liked_items, size=len(liked_items) // 5, replace=False) if len(liked_items) >= 10 else liked_items[:0]
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
        self.tuning = {"mode": self.tune, "val_users": int(len(users)), "chosen": None}
        if len(users) < 30:
            return  # too little to tune on: keep the given/default weights
        if len(users) > self.val_users:
            users = np.sort(rng.choice(users, size=self.val_users, replace=False))
        sub = TrainData(data.corpus, data.users, fit_likes, data.dislikes, data.keywords, data.counts)
        saved = dict(self.weights)
        self.weights = {n: 1.0 for n in COMPONENTS}  # compute every component while tuning
        state = self._fit_components(sub)
        self.weights = saved
        if self.tune == "cold":
            cands = np.flatnonzero(mask)
        else:
            cands = np.arange(shape[1])
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
            obj = rec / max(base[0], 1e-9) + ndcg / max(base[1], 1e-9) if self.objective == "both" else rec if self.objective == "recall" else ndcg
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
        self.tuning.update({"val_users": int(len(users)), "blends_tried": len(seen), "objective": f"recall@{k}/content + ndcg@10/content" if self.objective == "both" else self.objective,
                            f"val_recall@{k}": round(best[2], 4), "val_ndcg@10": round(best[3], 4),
                            "content_alone": [round(base[0], 4), round(base[1], 4)], "chosen": dict(chosen)})


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return a / n


def _row_mean(m: sp.csr_matrix) -> sp.csr_matrix:
    counts = np.diff(m.indptr).astype(np.float32)
    counts[counts == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / counts) @ m, dtype=np.float32)
