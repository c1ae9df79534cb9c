"""Content ranker: a reader's TF-IDF profile (liked papers and keywords) against each paper.

This is what makes a brand-new paper rankable on its first day: it needs text, not likes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from digest.features import fit_tfidf, normalize_rows
from digest.rank.base import Ranker, TrainData, paper_rows


class ContentRanker(Ranker):
    """Cosine similarity between a user profile and each paper in TF-IDF space.

    The profile is the mean of the user's liked papers, plus their keywords as a query (weight
    `keyword_weight`), minus their disliked papers (weight `dislike_weight`).
    """

    name = "content"

    def __init__(self, *, keyword_weight: float = 0.35, dislike_weight: float = 0.5, ngram_max: int = 2, min_df: int = 1) -> None:
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

    def make_profiles(self, likes: sp.csr_matrix, dislikes: sp.csr_matrix | None, keywords: list[list[str]]) -> sp.csr_matrix:
        """Profile rows for these users: mean liked row + keyword query - disliked rows, unit length."""
        profile = normalize_rows(normalize_rows(likes) @ self.items) + self.keyword_weight * self._keyword_vectors(keywords)
        if dislikes is not None and dislikes.nnz:
            profile = normalize_rows(profile) - self.dislike_weight * normalize_rows(normalize_rows(dislikes) @ self.items)
        return sp.csr_matrix(normalize_rows(sp.csr_matrix(profile)), dtype=np.float32)

    def fold_in(self, data: TrainData, paper_rows_old: np.ndarray, user_rows_old: np.ndarray, changed: np.ndarray) -> sp.csr_matrix:
        """Carry the fit over to `data` without refitting the vocabulary: papers new since the fit
        (`paper_rows_old` -1) are transformed with the fitted vectorizer, users in `changed` get new
        profiles, everyone else keeps theirs (`user_rows_old`: each user's row in the fit, -1 if new).
        Returns the new papers' TF-IDF rows (in the order they appear in `data`)."""
        new = np.flatnonzero(paper_rows_old < 0)
        texts = data.corpus.texts()
        fresh = (sp.csr_matrix(self.vectorizer.transform([texts[i] for i in new]), dtype=np.float32) if len(new)
                 else sp.csr_matrix((0, self.items.shape[1]), dtype=np.float32))
        self.items = _take_rows(self.items, paper_rows_old, fresh)
        self.data = data
        block = self.make_profiles(data.likes[changed], None if data.dislikes is None else data.dislikes[changed],
                                   [data.keywords[u] for u in changed])
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

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        """"close to <liked title>" or "matches keyword X", whichever explains the paper better."""
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
        reasons = []
        for i in range(len(papers)):
            best_like = liked_sim[i].max() if liked_sim.shape[1] else 0.0
            best_kw = kw_sim[i].max() if kw_sim.shape[1] else 0.0
            literal = [k for k in keywords if k.casefold() in texts[i]]
            reasons.append(_reason(
                self.keyword_weight, literal, best_kw, best_like,
                lambda: self.data.corpus.titles[liked[int(liked_sim[i].argmax())]],
                lambda: keywords[int(kw_sim[i].argmax())],
            ))
        return reasons

    def explain_many(self, users: np.ndarray, papers: np.ndarray, *, block: int = 64) -> list[list[str]]:
        """`explain` for a block of users (papers 2-D, one row per user), vectorised: one sparse product
        per block of users gives every paper's similarity to every liked paper of its reader."""
        users = np.asarray(users, dtype=np.int64)
        papers = paper_rows(users, papers)
        out: list[list[str]] = []
        for s in range(0, len(users), block):
            out.extend(self._explain_block(users[s : s + block], papers[s : s + block]))
        return out

    def _explain_block(self, users: np.ndarray, papers: np.ndarray) -> list[list[str]]:
        n, m = papers.shape
        if n == 0 or m == 0:
            return [[] for _ in range(n)]
        flat = papers.ravel()
        owner = np.repeat(np.arange(n), m)  # user slot of each (user, paper) row
        likes = self.data.likes[users]
        liked_all = likes.indices.astype(np.int64)
        liked_owner = np.repeat(np.arange(n), np.diff(likes.indptr))
        best_like = np.zeros(n * m)
        best_liked = np.full(n * m, -1, dtype=np.int64)
        if len(liked_all):
            sim = (self.items[flat] @ self.items[liked_all].T).tocoo()
            keep = (owner[sim.row] == liked_owner[sim.col]) & (sim.data > 0)
            r, c, v = sim.row[keep], sim.col[keep], sim.data[keep]
            # per row, the first liked paper (in the user's order) with the highest similarity, as argmax does
            order = np.lexsort((c, -v, r))
            r, c, v = r[order], c[order], v[order]
            if len(r):
                first = np.r_[True, r[1:] != r[:-1]]
                best_like[r[first]] = v[first]
                best_liked[r[first]] = liked_all[c[first]]
        corpus = self.data.corpus
        keywords = self.data.keywords
        out = []
        for i, u in enumerate(users):
            kws = keywords[u]
            row = slice(i * m, (i + 1) * m)
            if kws:
                kw_sim = (self.items[papers[i]] @ normalize_rows(self.vectorizer.transform(kws)).T).toarray()
                texts = [f"{corpus.titles[p]} {corpus.abstracts[p]}".casefold() for p in papers[i]]
            reasons = []
            for j, (bl, li) in enumerate(zip(best_like[row], best_liked[row])):
                best_kw = kw_sim[j].max() if kws else 0.0
                literal = [k for k in kws if k.casefold() in texts[j]] if kws else []
                reasons.append(_reason(
                    self.keyword_weight, literal, best_kw, bl,
                    lambda: corpus.titles[li],
                    lambda: kws[int(kw_sim[j].argmax())],
                ))
            out.append(reasons)
        return out


def _reason(
    keyword_weight: float,
    literal: list[str],
    best_kw: float,
    best_like: float,
    liked_title: Callable[[], str],
    top_keyword: Callable[[], str],
) -> str:
    """The one rule for a content reason: a literal keyword match that outweighs the closest liked
    paper, else that paper, else the keyword the paper is nearest to, else a plain "new"."""
    if literal and keyword_weight * best_kw >= best_like:
        return f"matches keyword {literal[0]}"
    if best_like > 0:
        return f"close to {liked_title()}"
    if best_kw > 0:
        return f"matches keyword {top_keyword()}"
    if literal:
        return f"matches keyword {literal[0]}"
    return "new in your window"


def _take_rows(old: sp.csr_matrix, rows: np.ndarray, fresh: sp.csr_matrix, order: np.ndarray | None = None) -> sp.csr_matrix:
    """Row i of the result is old[rows[i]], or, where rows[i] is -1, the next row of `fresh`
    (or fresh[order[i]] when `order` is given)."""
    rows = np.asarray(rows, dtype=np.int64)
    if order is None:
        order = np.full(len(rows), -1, dtype=np.int64)
        order[rows < 0] = np.arange(int((rows < 0).sum()))
    pick = np.where(rows >= 0, rows, old.shape[0] + order)
    return sp.csr_matrix(sp.vstack([old, fresh], format="csr")[pick], dtype=np.float32)
