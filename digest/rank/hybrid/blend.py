"""The hybrid ranker itself: its components standardised per reader, weighed and summed; the fold-in; reasons.

Each active component's raw scores are standardised per user (z-score against the user's scores
over a fixed sample of 2,000 corpus papers, so a pair's score does not depend on the rest of the
candidate block; the trend on one scale for everyone) and summed with `weights`.  A paper's reason
is the one of the component that contributed most to its score.

Fit weekly, fold each day in: `update(data)` carries a fit over to a day with new papers, new
readers and changed likes without refitting (see `update`; `digest.rank.saved` keeps the fit on
disk), and `score` remembers its last block so that explaining the picks of that block is a lookup.

Weights: `tune="cold"` or `tune="warm"` chooses them inside `fit` (`tuning`).  Without tuning,
`DEFAULT_WEIGHTS` are used (`weights={...}` overrides any of them).  They sit between what
validation chose on CiteULike (BENCHMARKS.md, "Quality"): cold start picked content 1, cf 8 (with
embeddings: cf 15, emb 8); the dense warm split (p10) picked content 1, cf 2 (with embeddings: cf
3, trend 0.25, emb 8); the sparse split (p1, one like per user: no validation possible, cf
skipped) gains from lsa 0.25.  Daily use ranks brand-new papers with few likes in the community,
hence cf 2 rather than 8 until the community is large; emb 8 is what both validations chose, and
ridge 4 what the validations of cold and p10 chose once it was there (cold: cf 8, emb 8, ridge 4;
p10: cf 5, trend 0.25, emb 8, ridge 4); both only matter when embeddings are given.  With enough
likes but no co-occurrence (no reader with two likes: cf skipped, no validation possible) the
weights are `NO_CF_WEIGHTS[_EMB]`, what a single-like validation chose (see there; ridge 0: for a
single like it ranked below the plain profile).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from digest.rank._linalg import finite32, zstats
from digest.rank.base import Ranker, TextSpace, TrainData, paper_rows
from digest.rank.content import ContentRanker
from digest.rank.hybrid.cf import CfComponent, can_fit_cf
from digest.rank.hybrid.component import Component, Day, Text, take_dense, take_users, unit
from digest.rank.hybrid.content import ContentComponent
from digest.rank.hybrid.emb import EmbComponent, smooth_embeddings
from digest.rank.hybrid.lsa import LsaComponent
from digest.rank.hybrid.ridge import RidgeComponent
from digest.rank.hybrid.trend import TrendComponent
from digest.rank.hybrid.tuning import tune_weights

COMPONENTS = ("content", "lsa", "cf", "trend", "emb", "ridge")
DEFAULT_WEIGHTS: dict[str, float] = {"content": 1.0, "lsa": 0.25, "cf": 2.0, "trend": 0.0, "emb": 8.0, "ridge": 4.0}
# Enough likes for a popularity but no co-occurrence (no reader with two likes, e.g. CiteULike p1): the
# collaborative part is skipped and nothing can be validated.  These are what a single-like validation
# chose for the remaining components: keep one random like per reader of p10's and of cold's train.csv,
# hold out the rest, k = 300; both chose content 1, emb 16, trend 4 with embeddings (trend 1-2 and lsa
# 0-0.5 without).
NO_CF_WEIGHTS: dict[str, float] = {"content": 1.0, "lsa": 0.25, "cf": 0.0, "trend": 1.0, "emb": 0.0, "ridge": 0.0}
NO_CF_WEIGHTS_EMB: dict[str, float] = {"content": 1.0, "lsa": 0.0, "cf": 0.0, "trend": 4.0, "emb": 16.0, "ridge": 0.0}

Stats = dict[str, tuple[np.ndarray, np.ndarray]]  # component -> per-user (mean, std)


@dataclass
class Fitted:
    """One fit of the components and each one's per-reader scale (fitted twice when tuning)."""

    text: Text
    parts: dict[str, Component]  # the active components, in `COMPONENTS` order
    stats: Stats = field(default_factory=dict)
    sample_ids: list[str] = field(default_factory=list)  # the papers every reader's statistics are measured on

    def z(self, name: str, users: np.ndarray, candidates: np.ndarray) -> np.ndarray | None:
        """One component's standardised users x candidates block, or None if it is off."""
        part = self.parts.get(name)
        if part is None:
            return None
        raw = part.raw(users, candidates)
        mean, std = self.stats[name]
        if part.global_scale and not len(mean):
            return np.zeros(raw.shape, dtype=np.float32)
        at = slice(0, 1) if part.global_scale else users  # one scale for every user, or each user's own
        # in place on a block made for this call (five 1024 x 2,000 temporaries a block before)
        fresh = raw.dtype in (np.float32, np.float64) and raw.flags.writeable and raw.base is None
        z = raw if fresh else np.array(raw, dtype=np.result_type(raw.dtype, np.float32))
        z -= mean[at, None]
        z /= std[at, None]
        return z

    def pair_z(self, name: str, users: np.ndarray, papers: np.ndarray) -> np.ndarray | None:
        """One component's standardised score of each (users[i], papers[i]) pair (a vector, not a block)."""
        part = self.parts.get(name)
        if part is None:
            return None
        raw = part.raw_pairs(users, papers)
        mean, std = self.stats[name]
        if part.global_scale:
            return (raw - mean[0]) / std[0] if len(mean) else raw * 0
        return (raw - mean[users]) / std[users]

    def measure(self, users: np.ndarray, sample: np.ndarray, *, chunk: int = 8192) -> Stats:
        """Each active component's per-user (mean, std) over the sample papers, `chunk` users at a time
        (100k readers x 2,000 sample papers would be 0.8 GB per component block)."""
        got: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for start in range(0, max(len(users), 1), chunk):
            block = users[start : start + chunk]
            for name, part in self.parts.items():
                raw = part.raw(block, sample)
                got.setdefault(name, []).append(
                    zstats(raw) if raw.shape[1] else (np.zeros(len(block), np.float32), np.ones(len(block), np.float32))
                )
        return {
            name: (np.concatenate([m for m, _ in pairs]), np.concatenate([s for _, s in pairs]))
            for name, pairs in got.items()
        }


class HybridRanker(Ranker):
    name = "hybrid"
    folds_in = True
    # a weighted mean of per-reader z-scores (each part against the reader's corpus sample): half a standard
    # deviation above the reader's average paper; `benchmarks/floor.py` measures what it keeps (README)
    floor = 0.5

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
        embedding_model: str = "",
        keyword_embeddings: dict[str, np.ndarray] | None = None,
        emb_map_weight: float = 1.0,
        keyword_weight: float = 0.35,
        emb_keyword_weight: float = 1.0,
        dislike_weight: float = 0.5,
        profile_terms: int | None = 200,
        seed: int = 0,
        val_users: int = 1500,
        objective: str = "both",
        emb_smooth: float = 2.0,
        emb_smooth_k: int = 20,
        emb_center: bool = True,
        ridge: bool = True,
        knn_mix: float = 0.6,
        knn_k: int = 500,
    ) -> None:
        if tune not in (None, "cold", "warm"):
            raise ValueError("tune must be None, 'cold' or 'warm'")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self._given_weights = dict(weights or {})
        self.emb_smooth = emb_smooth
        self.emb_smooth_k = emb_smooth_k
        self.emb_center = emb_center
        self.ridge = ridge  # fit the `ridge` component (when there are embeddings); False: the blend without it
        self.emb_mean: np.ndarray | None = None  # the fit's mean paper vector, taken off every vector (`_center`)
        self.knn_mix = knn_mix
        self.knn_k = knn_k
        self.tune = tune
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.map_lambda = map_lambda
        self.lsa_dims = lsa_dims
        self.min_likes = min_likes
        self.raw_embeddings = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        self.embeddings = self.raw_embeddings  # centred and smoothed in `fit`
        self.embedding_model = embedding_model  # which model made them (`digest.embeddings`): a saved fit's label
        self.keyword_embeddings = keyword_embeddings  # the same model's vector of each reader keyword
        self.emb_map_weight = emb_map_weight
        self.keyword_weight = keyword_weight
        # in the embedding profile a reader's keywords weigh as much as their liked papers together: at the
        # TF-IDF's 0.35 the demo reader's keyword never showed among her picks (CiteULike has no keywords)
        self.emb_keyword_weight = emb_keyword_weight
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
        self.emb_mean = self._corpus_mean(self.raw_embeddings)
        self.embeddings = self._smooth(self._center(self.raw_embeddings))
        self.weights = {**DEFAULT_WEIGHTS, **self._given_weights}
        if data.likes.nnz >= self.min_likes and not can_fit_cf(data.likes, self.min_likes):
            # a popularity but no co-occurrence: cf is skipped, nothing to validate on -> the single-like-validated weights
            base = NO_CF_WEIGHTS_EMB if self.embeddings is not None else NO_CF_WEIGHTS
            self.weights = {**DEFAULT_WEIGHTS, **base, **self._given_weights}
        if self.tune is not None:
            chosen, self.tuning = tune_weights(
                data,
                self.tune,
                self._tuning_blocks,
                weights=self.weights,
                start=DEFAULT_WEIGHTS,
                has_embeddings=self.embeddings is not None,
                seed=self.seed,
                val_users=self.val_users,
                objective=self.objective,
            )
            if chosen is not None:
                self.weights.update(chosen)
        self.state = self._fit(data)
        self._remember(data)
        return self

    def _remember(self, data: TrainData) -> None:
        """What the state was computed from (for `update`)."""
        self.data = data
        self._memo: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None  # scores of the previous state
        self._fitted = (
            list(data.corpus.ids.ids),
            list(data.users.ids),
            data.likes,
            data.dislikes,
            [list(k) for k in data.keywords],
        )

    def _components(self, *, every: bool) -> list[Component]:
        """Fresh components for a fit, in `COMPONENTS` order; lsa only when weighted (or `every`, to tune)."""
        parts: list[Component] = [ContentComponent()]
        if every or self.weights.get("lsa", 0) != 0:
            parts.append(LsaComponent(dims=self.lsa_dims, seed=self.seed))
        parts.append(
            CfComponent(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                seed=self.seed,
                min_likes=self.min_likes,
                map_lambda=self.map_lambda,
                emb_map_weight=self.emb_map_weight,
                knn_mix=self.knn_mix,
                knn_k=self.knn_k,
            )
        )
        parts += [
            TrendComponent(),
            EmbComponent(dislike_weight=self.dislike_weight, keyword_weight=self.emb_keyword_weight),
        ]
        if getattr(self, "ridge", False) and (every or self.weights.get("ridge", 0) != 0):
            parts.append(RidgeComponent())
        return parts

    def _fit(self, data: TrainData, *, every: bool = False) -> Fitted:
        """Fit the TF-IDF every component reads, then the components, then each one's per-reader scale."""
        n_items = len(data.corpus)
        tfidf = ContentRanker(
            keyword_weight=self.keyword_weight,
            dislike_weight=self.dislike_weight,
            ngram_max=2,
            min_df=2 if n_items >= 1000 else 1,
            profile_terms=self.profile_terms,
        ).fit(data)
        text = Text(tfidf, self.embeddings, self._centered_keywords())
        fitted = Fitted(text, {part.name: part for part in self._components(every=every) if part.fit(data, text)})
        # per-user standardisation against a fixed sample of the corpus
        rng = np.random.default_rng(self.seed)
        sample = (
            np.sort(rng.choice(n_items, size=min(n_items, 2000), replace=False)) if n_items else np.zeros(0, np.int64)
        )
        fitted.sample_ids = [data.corpus.ids.ids[i] for i in sample]
        fitted.stats = fitted.measure(np.arange(len(data.users)), sample)
        return fitted

    def _tuning_blocks(self, data: TrainData, users: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
        """Every component fitted on `data` (a validation split's), each one's standardised block (`tuning`)."""
        fitted = self._fit(data, every=True)
        blocks = {n: fitted.z(n, users, candidates) for n in COMPONENTS}
        return {n: np.asarray(b, dtype=np.float32) for n, b in blocks.items() if b is not None}

    def _corpus_mean(self, E: np.ndarray | None) -> np.ndarray | None:
        """The mean unit paper vector of the fit's corpus, or None (no embeddings, centring off, or a
        corpus under 1,000 papers, whose mean would be its own few topics rather than the field's)."""
        if E is None or not getattr(self, "emb_center", False) or len(E) < 1000:
            return None
        return unit(E).mean(axis=0).astype(np.float32)

    def _center(self, E: np.ndarray | None) -> np.ndarray | None:
        """Unit vectors with the fit's mean paper vector taken off, unit again.  A sentence model's
        vectors share one large common direction, so every paper is a little like every other; taking
        it off leaves the cosine to what tells papers apart (CiteULike, titles only: p1 recall@300
        0.324 -> 0.330, p10 0.600 -> 0.607; on its validation split of p10's train.csv with one like
        kept per reader, 0.328 -> 0.337).  Uses no likes.  Without a mean (centring off, a corpus under
        1,000 papers, a fit from before it) the vectors are only made unit length: every component,
        the `cf` map among them, reads them as unit rows."""
        mean = getattr(self, "emb_mean", None)
        if E is None:
            return None
        if mean is None:
            return unit(E)
        centred = unit(E)
        centred -= mean
        return unit(centred, inplace=True)

    def _centered_keywords(self) -> dict[str, np.ndarray] | None:
        """The readers' keyword vectors in the papers' (centred) space, or None without embeddings."""
        if self.embeddings is None or self.keyword_embeddings is None:
            return None
        words = list(self.keyword_embeddings)
        if not words:
            return {}
        centered = self._center(np.stack([np.asarray(self.keyword_embeddings[w], dtype=np.float32) for w in words]))
        return dict(zip(words, centered if centered is not None else []))

    def _smooth(
        self, E: np.ndarray | None, old: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Embeddings each pulled toward their corpus neighbourhood (`smooth_embeddings`); not in a tiny
        corpus, where the neighbours would be most of it.  With `old` (the fitted, smoothed vectors) and
        `rows` (each paper's row in the fit, -1 if new), only new papers are smoothed: old ones keep
        theirs, and the result is written over `E` (the caller's own array, `_center`'s), which is
        not read after the new papers' smoothing: at 200,000 papers no third 307 MB matrix."""
        if E is None or not self.emb_smooth or len(E) < 1000:
            return E
        if old is None or rows is None:
            return smooth_embeddings(E, self.emb_smooth, self.emb_smooth_k)
        fresh = smooth_embeddings(E, self.emb_smooth, self.emb_smooth_k, rows=np.flatnonzero(rows < 0))
        return take_dense(old, rows, fresh, out=E)

    # -- folding in --------------------------------------------------------------------------

    def update(
        self,
        data: TrainData,
        *,
        embeddings: np.ndarray | None = None,
        keyword_embeddings: dict[str, np.ndarray] | None = None,
    ) -> HybridRanker:
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
        if keyword_embeddings is not None:
            self.keyword_embeddings = keyword_embeddings
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
            self.embeddings = self._smooth(self._center(embeddings), self.embeddings, prow)
        st.text.embeddings = self.embeddings
        st.text.keywords = self._centered_keywords()
        day = Day(data, prow, urow, changed, st.text.tfidf.fold_in(data, prow, urow, changed))
        for part in st.parts.values():
            part.update(day)
        sample = data.corpus.ids.indices(st.sample_ids)
        fresh_stats = st.measure(changed, sample)
        for name, (mean, std) in list(st.stats.items()):
            if name in fresh_stats:
                st.stats[name] = (
                    take_users(mean, urow, changed, fresh_stats[name][0]),
                    take_users(std, urow, changed, fresh_stats[name][1]),
                )
        for name, part in st.parts.items():
            if part.global_scale:  # one scale for everyone, recomputed with today's scores
                mean, std = (
                    zstats(part.raw(np.zeros(1, np.int64), sample))
                    if len(sample)
                    else (np.zeros(1, np.float32), np.ones(1, np.float32))
                )
                st.stats[name] = (np.full(len(urow), mean[0], np.float32), np.full(len(urow), std[0], np.float32))
        self.last_update = {
            "new_papers": len(day.new_papers),
            "new_users": int((urow < 0).sum()),
            "changed_users": len(changed),
        }
        self._remember(data)
        return self

    def prepare_update(self) -> None:
        """Finish what the components' fold-in needs (the text -> factors map, when the fit did not
        need one because every paper had a like), so that a saved model folds new papers in quickly."""
        for part in self.state.parts.values():
            part.prepare_update()

    def __getstate__(self) -> dict:
        """Saved without the training data (texts, likes) and the raw vectors: `update` brings today's
        (the fitted, smoothed vectors stay: old papers keep theirs).  200,000 papers' raw vectors are
        307 MB on disk and again in the daily run beside today's."""
        state = dict(self.__dict__)
        state.pop("data", None)
        if "state" in state:
            state["raw_embeddings"] = None
        return state

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
            z = self.state.z(name, users, candidates)
            if z is not None:
                z *= w
                out[name] = z
        return out

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        parts = self.components(users, candidates)
        total = np.zeros((len(users), len(candidates)), dtype=np.float32)
        for block in parts.values():
            total += block
        # a weighted mean of the parts' z-scores, so the relevance floor means the same whatever the weights
        # (the emb part's weight 8 made the plain sum about four times as wide); the order is unchanged
        weight = sum(abs(self.weights.get(name, 0.0)) for name in parts)
        if weight > 0:
            total /= weight
        # the last block's parts, so that explaining its picks (the daily run's next step) is a lookup
        self._memo = (np.asarray(users, dtype=np.int64), np.asarray(candidates, dtype=np.int64), parts)
        return finite32(total, inplace=True)

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
        return self.state.text.tfidf.items[np.asarray(papers, dtype=np.int64)]

    def text_space(self) -> TextSpace:
        space = self.state.text.tfidf.text_space()
        lsa = self.state.parts.get("lsa")
        if isinstance(lsa, LsaComponent):
            space.dense = lsa.items
        return space

    # -- explaining ----------------------------------------------------------------------------

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return self.explain_many(np.array([user]), np.asarray(papers, dtype=np.int64)[None, :])[0]

    def explain_many(self, users: np.ndarray, papers: np.ndarray) -> list[list[str]]:
        """Each paper's reason is the one of the component that contributed most to its score.

        Vectorised: every component's weighted, standardised contribution of all (user, paper) pairs
        at once; the text reasons come from `ContentRanker.explain_pairs` for the pairs that need them,
        the others from the deciding component (`Component.reason`).
        """
        users = np.asarray(users, dtype=np.int64)
        papers = paper_rows(users, papers)
        n, m = papers.shape
        if n == 0 or m == 0:
            return [[] for _ in range(n)]
        st = self.state
        names: list[str] = []
        parts: list[np.ndarray] = []
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
                z = st.pair_z(name, flat_u, flat_p)
                if z is not None:
                    names.append(name)
                    parts.append(w * np.asarray(z, dtype=np.float32))
        if not parts:
            return [["new in your window"] * m for _ in range(n)]
        best = np.argmax(np.stack(parts), axis=0).reshape(n, m)
        deciding = [st.parts[name] for name in names]
        textual = np.array([part.textual for part in deciding])[best]
        pi, pj = np.nonzero(textual)  # only the pairs a text reason is wanted for
        lsa = st.parts.get("lsa")
        dense = lsa.items if isinstance(lsa, LsaComponent) else None
        said = st.text.tfidf.explain_pairs(users[pi], papers[pi, pj], dense=dense) if len(pi) else []
        text_reason = dict(zip(zip(pi.tolist(), pj.tolist()), said))
        out = []
        for i in range(n):
            reasons = []
            for j, p in enumerate(papers[i]):
                part = deciding[best[i, j]]
                reasons.append(text_reason[i, j] if part.textual else part.reason(int(p)))
            out.append(reasons)
        return out


def _positions(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray | None:
    """Where each of `wanted` is in `keys` (same shape as `wanted`), or None if any is missing."""
    if not len(keys):
        return None
    order = np.argsort(keys, kind="stable")
    pos = order[np.searchsorted(keys, wanted, sorter=order).clip(0, len(keys) - 1)]
    return pos if np.array_equal(keys[pos], wanted) else None


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
