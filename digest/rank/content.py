"""Content ranker: a reader's TF-IDF profile (liked papers and keywords) against each paper.

This is what makes a brand-new paper rankable on its first day: it needs text, not likes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from digest.features import fit_tfidf, normalize_rows
from digest.rank.base import Ranker, TextSpace, TrainData, paper_rows


class ContentRanker(Ranker):
    """Cosine similarity between a user profile and each paper in TF-IDF space.

    The profile is the mean of the user's liked papers, plus their keywords as a query (weight
    `keyword_weight`), minus their disliked papers (weight `dislike_weight`).
    """

    name = "content"
    floor = 0.03  # a cosine: passes 3-6% of the papers, no held-out top-10 hit below it (CiteULike, README)

    def __init__(
        self,
        *,
        keyword_weight: float = 0.35,
        dislike_weight: float = 0.5,
        ngram_max: int = 2,
        min_df: int = 1,
        profile_terms: int | None = None,
    ) -> None:
        self.profile_terms = profile_terms
        self.keyword_weight = keyword_weight
        self.dislike_weight = dislike_weight
        self.ngram_max = ngram_max
        self.min_df = min_df

    def fit(self, data: TrainData) -> ContentRanker:
        self.data = data
        self.vectorizer, self.items = fit_tfidf(data.corpus.texts(), ngram_max=self.ngram_max, min_df=self.min_df)
        # the terms min_df/max_features cut (often millions of bigrams): not needed to transform
        self.vectorizer.stop_words_ = None
        self.profiles = self.make_profiles(data.likes, data.dislikes, data.keywords)
        return self

    def make_profiles(
        self, likes: sp.csr_matrix, dislikes: sp.csr_matrix | None, keywords: list[list[str]], *, chunk: int = 4096
    ) -> sp.csr_matrix:
        """Profile rows for these users: mean liked row + keyword query - disliked rows, unit length;
        with `profile_terms`, only each profile's heaviest terms are kept (built in chunks of users,
        so the full profiles never sit in memory at once)."""
        parts = []
        for s in range(0, max(likes.shape[0], 1), chunk):
            rows = slice(s, s + chunk)
            profile = normalize_rows(
                normalize_rows(likes[rows]) @ self.items
            ) + self.keyword_weight * self._keyword_vectors(keywords[rows])
            if dislikes is not None and dislikes.nnz:
                profile = normalize_rows(profile) - self.dislike_weight * normalize_rows(
                    normalize_rows(dislikes[rows]) @ self.items
                )
            profile = sp.csr_matrix(profile, dtype=np.float32)
            if self.profile_terms:
                profile = _heaviest(profile, self.profile_terms)
            parts.append(sp.csr_matrix(normalize_rows(profile), dtype=np.float32))
        return sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)

    def fold_in(
        self, data: TrainData, paper_rows_old: np.ndarray, user_rows_old: np.ndarray, changed: np.ndarray
    ) -> sp.csr_matrix:
        """Carry the fit over to `data` without refitting the vocabulary: papers new since the fit
        (`paper_rows_old` -1) are transformed with the fitted vectorizer, users in `changed` get new
        profiles, everyone else keeps theirs (`user_rows_old`: each user's row in the fit, -1 if new).
        Returns the new papers' TF-IDF rows (in the order they appear in `data`)."""
        new = np.flatnonzero(paper_rows_old < 0)
        texts = data.corpus.texts()
        fresh = (
            sp.csr_matrix(self.vectorizer.transform([texts[i] for i in new]), dtype=np.float32)
            if len(new)
            else sp.csr_matrix((0, self.items.shape[1]), dtype=np.float32)
        )
        self.items = _take_rows(self.items, paper_rows_old, fresh)
        self.data = data
        block = self.make_profiles(
            data.likes[changed],
            None if data.dislikes is None else data.dislikes[changed],
            [data.keywords[u] for u in changed],
        )
        rows = user_rows_old.copy()
        rows[changed] = -1
        order = np.full(len(rows), -1, dtype=np.int64)
        order[changed] = np.arange(len(changed))
        self.profiles = _take_rows(self.profiles, rows, block, order)
        return fresh

    def __getstate__(self) -> dict:
        """Pickled without the training data (a saved fit, `rank.saved`): `fit`/`fold_in` bring it back."""
        state = dict(self.__dict__)
        state.pop("data", None)
        state.pop("_words_cache", None)
        return state

    def _keyword_vectors(self, keywords: list[list[str]]) -> sp.csr_matrix:
        queries = [" ".join(k) for k in keywords]
        if not queries:
            return sp.csr_matrix((0, self.items.shape[1]), dtype=np.float32)
        return sp.csr_matrix(normalize_rows(self.vectorizer.transform(queries)), dtype=np.float32)

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        block = self.profiles[users] @ self.items[candidates].T
        return np.asarray(block.toarray(), dtype=np.float32)

    def item_features(self, papers: np.ndarray) -> sp.csr_matrix:
        return self.items[papers]

    def text_space(self) -> TextSpace:
        return TextSpace(self.vectorizer, self.items, self.profiles)

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        """ "close to <liked title>" or "matches keyword X", whichever explains the paper better."""
        liked = self.data.likes[user].indices
        keywords = self.data.keywords[user]
        items = self.items[papers]
        liked_sim = (items @ self.items[liked].T).toarray() if len(liked) else np.zeros((len(papers), 0))
        if keywords:
            kw_vectors = normalize_rows(self.vectorizer.transform(keywords))
            kw_sim = (items @ kw_vectors.T).toarray()
        else:
            kw_sim = np.zeros((len(papers), 0))
        corpus = self.data.corpus
        texts = [f"{corpus.titles[p]} {corpus.abstracts[p]}".casefold() for p in papers]
        liked_titles = [corpus.titles[p] for p in liked]
        reasons = []
        for i in range(len(papers)):
            best_like = liked_sim[i].max() if liked_sim.shape[1] else 0.0
            best_kw = kw_sim[i].max() if kw_sim.shape[1] else 0.0
            literal = keyword_hits(keywords, texts[i])
            reasons.append(
                _reason(
                    self.keyword_weight,
                    literal,
                    best_kw,
                    best_like,
                    partial(_nearest, liked_titles, liked_sim[i]),
                )
            )
        return reasons

    def explain_many(self, users: np.ndarray, papers: np.ndarray) -> list[list[str]]:
        """`explain` for a block of users (papers 2-D, one row per user), vectorised (`explain_pairs`)."""
        users = np.asarray(users, dtype=np.int64)
        papers = paper_rows(users, papers)
        n, m = papers.shape
        flat = self.explain_pairs(np.repeat(users, m), papers.ravel())
        return [flat[i * m : (i + 1) * m] for i in range(n)]

    def explain_pairs(
        self, users: np.ndarray, papers: np.ndarray, *, block: int = 64, dense: np.ndarray | None = None
    ) -> list[str]:
        """The reason for each (users[i], papers[i]) pair, pairs grouped by user: one sparse product
        per `block` users gives every paper's similarity to every liked paper of its reader.

        With `dense` (unit vectors of every paper, e.g. the hybrid's LSA space) the closest liked
        paper is found there instead (batched dense products, several times faster at scale), and
        only its TF-IDF similarity is computed, for the keyword-or-liked-paper rule."""
        users = np.asarray(users, dtype=np.int64)
        papers = np.asarray(papers, dtype=np.int64)
        if not len(users):
            return []
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        out: list[str] = []
        block = block if dense is None else 4 * block
        for s in range(0, len(starts), block):
            a, b = starts[s], (starts[s + block] if s + block < len(starts) else len(users))
            out.extend(self._explain_pairs(users[a:b], papers[a:b], dense))
        return out

    def _words(self, text: str) -> frozenset[str]:
        """`text_words(text)`, cached by the text (a day's readers share its few thousand candidates;
        keyed by the text, not a corpus row, so a fold-in that moves rows cannot mismatch it)."""
        cache = self.__dict__.setdefault("_words_cache", {})
        if text not in cache:
            if len(cache) > 20_000:
                cache.clear()
            cache[text] = text_words(text)
        return cache[text]

    def _explain_pairs(self, users: np.ndarray, papers: np.ndarray, dense: np.ndarray | None = None) -> list[str]:
        starts = np.r_[True, users[1:] != users[:-1]]
        owner = np.cumsum(starts) - 1  # user slot of each pair
        slots = users[starts]
        likes = self.data.likes[slots]
        liked_all = likes.indices.astype(np.int64)
        liked_owner = np.repeat(np.arange(len(slots)), np.diff(likes.indptr))
        P = len(papers)
        best_like = np.zeros(P)
        best_liked = np.full(P, -1, dtype=np.int64)
        if len(liked_all) and dense is not None:
            best_liked = _nearest_liked(dense, papers, owner, likes)
            has = best_liked >= 0
            rows = np.flatnonzero(has)
            dots = self.items[papers[rows]].multiply(self.items[best_liked[rows]]).sum(axis=1)
            best_like[rows] = np.maximum(np.asarray(dots, dtype=np.float64).ravel(), 0.0)
        elif len(liked_all):
            sim = (self.items[papers] @ self.items[liked_all].T).tocoo()
            keep = (owner[sim.row] == liked_owner[sim.col]) & (sim.data > 0)
            r, c, v = sim.row[keep], sim.col[keep], sim.data[keep]
            # per pair, the first liked paper (in the user's order) with the highest similarity, as argmax does
            order = np.lexsort((c, -v, r))
            r, c, v = r[order], c[order], v[order]
            if len(r):
                first = np.r_[True, r[1:] != r[:-1]]
                best_like[r[first]] = v[first]
                best_liked[r[first]] = liked_all[c[first]]
        corpus = self.data.corpus
        keywords = self.data.keywords
        bounds = np.r_[np.flatnonzero(starts), P]
        literal: list[list[str]] = [[] for _ in range(P)]
        for k, u in enumerate(slots):
            kws = keywords[u]
            if kws:
                for i in range(int(bounds[k]), int(bounds[k + 1])):
                    p = papers[i]
                    literal[i] = keyword_hits(kws, self._words(f"{corpus.titles[p]} {corpus.abstracts[p]}"))
        best_kw = self._best_keyword(papers, [keywords[u] for u in slots[owner]], literal).tolist()
        return [
            _reason(self.keyword_weight, hits, kw, like, partial(corpus.titles.__getitem__, liked))
            for hits, kw, like, liked in zip(literal, best_kw, best_like.tolist(), best_liked.tolist())
        ]

    def _best_keyword(self, papers: np.ndarray, keywords: list[list[str]], literal: list[list[str]]) -> np.ndarray:
        """Each paper's highest TF-IDF similarity to one of its reader's keywords (`keywords[i]`),
        worked out only where the paper really mentions one (`literal[i]`: elsewhere `_reason`
        never weighs it), for the whole block in one sparse product: one unit row per distinct
        keyword, each pair masked to its own reader's keywords (a product per reader cost
        ~1.5 ms each, mostly overhead)."""
        best = np.zeros(len(papers))
        wanted = [i for i, hits in enumerate(literal) if hits]
        if not wanted:
            return best
        column: dict[str, int] = {}
        rows, cols = [], []
        for r, i in enumerate(wanted):
            for kw in keywords[i]:
                rows.append(r)
                cols.append(column.setdefault(kw, len(column)))
        K = sp.csr_matrix(normalize_rows(self.vectorizer.transform(list(column))), dtype=np.float32)
        mine = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(wanted), len(column)))
        mine.data[:] = 1  # a keyword a reader lists twice still counts once
        sims = (self.items[papers[wanted]] @ K.T).multiply(mine)
        best[wanted] = np.asarray(sp.csr_matrix(sims).max(axis=1).toarray(), dtype=np.float64).ravel()
        return best


def _nearest(options: Sequence[str], similarity: np.ndarray) -> str:
    """The option of the highest similarity (the first of equals)."""
    return options[int(similarity.argmax())]


def _reason(
    keyword_weight: float,
    literal: list[str],
    best_kw: float,
    best_like: float,
    liked_title: Callable[[], str],
) -> str:
    """The one rule for a content reason: a keyword the paper really mentions (`keyword_hits`) that
    outweighs the closest liked paper, else that paper, else the mentioned keyword, else a plain "new".
    A keyword the paper is merely near in TF-IDF space (one shared word, "neural") is never claimed."""
    if literal and keyword_weight * best_kw >= best_like:
        return f"matches keyword {literal[0]}"
    if best_like > 0:
        return f"close to {liked_title()}"
    if literal:
        return f"matches keyword {literal[0]}"
    return "new in your window"


_WORD = re.compile(r"\w+")


def _stem(word: str) -> str:
    """A light plural fold, so "networks" meets "network"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def text_words(text: str) -> frozenset[str]:
    """The stemmed words of `text` (casefolded title + abstract), as `keyword_hits` matches them."""
    return frozenset(_stem(w) for w in _WORD.findall(text.casefold()))


def keyword_hits(keywords: Sequence[str], text: str | frozenset[str]) -> list[str]:
    """The keywords whose phrase, or nearly all of whose terms (stop words aside; at most one in four
    missing), occur as words in `text` (casefolded title + abstract, or its `text_words`), in the
    reader's order."""
    words = text_words(text) if isinstance(text, str) else text
    hits = []
    for kw in keywords:
        terms = {_stem(w) for w in _WORD.findall(kw.casefold()) if w not in ENGLISH_STOP_WORDS}
        if not terms:
            terms = {_stem(w) for w in _WORD.findall(kw.casefold())}
        if terms and len(terms - words) <= len(terms) // 4:
            hits.append(kw)
    return hits


def _take_rows(
    old: sp.csr_matrix, rows: np.ndarray, fresh: sp.csr_matrix, order: np.ndarray | None = None
) -> sp.csr_matrix:
    """Row i of the result is old[rows[i]], or, where rows[i] is -1, the next row of `fresh`
    (or fresh[order[i]] when `order` is given)."""
    rows = np.asarray(rows, dtype=np.int64)
    n_old = int((rows >= 0).sum())
    if (
        order is None
        and n_old == old.shape[0]
        and np.array_equal(rows[:n_old], np.arange(n_old))
        and (rows[n_old:] < 0).all()
    ):
        return sp.csr_matrix(sp.vstack([old, fresh], format="csr"), dtype=np.float32)  # the usual day: papers appended
    if order is None:
        order = np.full(len(rows), -1, dtype=np.int64)
        order[rows < 0] = np.arange(int((rows < 0).sum()))
    pick = np.where(rows >= 0, rows, old.shape[0] + order)
    return sp.csr_matrix(sp.vstack([old, fresh], format="csr")[pick], dtype=np.float32)


def _nearest_liked(
    dense: np.ndarray, papers: np.ndarray, owner: np.ndarray, likes: sp.csr_matrix, *, group: int = 32
) -> np.ndarray:
    """For each pair (papers[i], user slot owner[i]; pairs grouped by slot), the liked paper of that
    user (a row of `likes`) whose dense vector is closest (the first of equals); -1 for a user with
    no likes.  Users go in groups of similar library size, so padding to the largest library of a
    group wastes little."""
    counts = np.diff(likes.indptr)
    out = np.full(len(papers), -1, dtype=np.int64)
    if not len(papers):
        return out
    starts = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1]
    ends = np.r_[starts[1:], len(papers)]
    slots = owner[starts]
    order = np.argsort(counts[slots], kind="stable")
    for g in range(0, len(order), group):
        sel = order[g : g + group]
        sel = sel[counts[slots[sel]] > 0]
        if not len(sel):
            continue
        n_liked = counts[slots[sel]]
        n_pairs = ends[sel] - starts[sel]
        valid = np.arange(n_liked.max())[None, :] < n_liked[:, None]
        liked = np.zeros(valid.shape, dtype=np.int64)
        liked[valid] = np.concatenate([likes.indices[likes.indptr[u] : likes.indptr[u + 1]] for u in slots[sel]])
        pvalid = np.arange(n_pairs.max())[None, :] < n_pairs[:, None]
        pairs = np.concatenate([np.arange(starts[k], ends[k]) for k in sel])
        picked = np.zeros(pvalid.shape, dtype=np.int64)
        picked[pvalid] = papers[pairs]
        sims = np.matmul(dense[picked], dense[liked].transpose(0, 2, 1))  # users x picks x liked
        sims[~np.broadcast_to(valid[:, None, :], sims.shape)] = -np.inf
        out[pairs] = np.take_along_axis(liked, sims.argmax(axis=2), axis=1)[pvalid]
    return out


def _heaviest(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's k entries of largest magnitude (the rest dropped; of equal ones, the first columns),
    columns in order.  A partition per long row: sorting every entry of 4,096 profiles (10M) took
    3.5 s of each chunk's 4 s at 100k readers."""
    m.sum_duplicates()
    counts = np.diff(m.indptr)
    if not len(counts) or counts.max() <= k:
        return m
    magnitude = np.abs(m.data)
    keep = np.ones(len(m.data), dtype=bool)
    for row in np.flatnonzero(counts > k):
        a, b = m.indptr[row], m.indptr[row + 1]
        seg = magnitude[a:b]
        threshold = np.partition(seg, len(seg) - k)[len(seg) - k]  # the k-th largest
        above = seg > threshold
        ties = np.flatnonzero(seg == threshold)[: k - int(above.sum())]
        above[ties] = True
        keep[a:b] = above
    return sp.csr_matrix((m.data[keep], m.indices[keep], np.r_[0, np.cumsum(np.minimum(counts, k))]), shape=m.shape)
