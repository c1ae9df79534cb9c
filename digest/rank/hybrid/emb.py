"""The `emb` component (optional extra): a sentence-embedding profile, when the hybrid is given embeddings.

A reader's profile is the mean of their liked papers' vectors, plus (when the reader has keywords
and their vectors are given) `keyword_weight` x the unit mean of their keywords' vectors, as in the
TF-IDF profile, minus the disliked papers' mean; unit length.  A paper's score is the mean of its
similarity to that profile and its similarity to the nearest liked paper (`nearest_weight` 0.5,
for readers with at most NEAREST_MAX_LIKES likes: more have sections per interest): in
a dense space every paper is a little like every other, so a mean profile alone lets a reader's
biggest topic drown a smaller one ("more like this" on one retrieval paper beside vision likes
brought no retrieval paper the next day; with the nearest term it does).  CiteULike, titles only:
cold recall@100 0.683 -> 0.686, p10 recall@300 0.600 -> 0.600, p1 unchanged (one like each).  Each paper's vector is first smoothed over the corpus (`smooth_embeddings`): unit(e +
`emb_smooth` (2) * mean of its `emb_smooth_k` (20) nearest papers' vectors), no likes used
(CiteULike p1 recall@300 0.295 -> 0.324, cold recall@100 +0.011; ~8 s for 17k papers).  The blend
smooths once per fit (`HybridRanker._smooth`), and the smoothed vectors also feed the `cf` map.
Explained by the text reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from digest.rank._linalg import top_columns
from digest.rank.base import TrainData
from digest.rank.hybrid.component import NEIGHBOUR_POOL, Component, Day, Text, fixed_sample, row_mean, take_users, unit

NEAREST_MAX_LIKES = 16  # readers with at most this many likes also score by their nearest liked paper


class EmbComponent(Component):
    name = "emb"
    textual = True

    def __init__(
        self, *, dislike_weight: float = 0.5, keyword_weight: float = 0.35, nearest_weight: float = 0.5
    ) -> None:
        self.dislike_weight = dislike_weight
        self.keyword_weight = keyword_weight
        self.nearest_weight = nearest_weight

    def fit(self, data: TrainData, text: Text) -> bool:
        if text.embeddings is None:
            return False
        self.text = text
        self.likes = data.likes.tocsr()
        self.profiles = self._profiles(data.likes, data.dislikes, data.keywords)
        return True

    def update(self, day: Day) -> None:
        block = self._profiles(
            day.data.likes[day.changed],
            day.changed_rows(day.data.dislikes),
            [day.data.keywords[u] for u in day.changed] if day.data.keywords else [],
        )
        self.profiles = take_users(self.profiles, day.user_rows, day.changed, block)
        self.likes = day.data.likes.tocsr()

    def raw(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        C = unit(self._embeddings[candidates])
        scores = self.profiles[users] @ C.T
        for rows, liked, offsets in self._liked(users):
            near = np.maximum.reduceat(liked @ C.T, offsets, axis=0)
            scores[rows] = (1 - self.nearest_weight) * scores[rows] + self.nearest_weight * near
        return scores

    def raw_pairs(self, users: np.ndarray, papers: np.ndarray) -> np.ndarray:
        P = unit(self._embeddings[papers])
        scores = np.einsum("ij,ij->i", self.profiles[users], P)
        for rows, liked, offsets in self._liked(users):
            owner = np.repeat(rows, np.diff(offsets, append=len(liked)))
            near = np.maximum.reduceat(np.einsum("nd,nd->n", liked, P[owner]), offsets)
            scores[rows] = (1 - self.nearest_weight) * scores[rows] + self.nearest_weight * near
        return scores

    def _liked(self, users: np.ndarray, chunk: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(rows of `users`, their liked papers' unit vectors one after another, where each row's
        start) for the readers with 2 to NEAREST_MAX_LIKES likes, `chunk` readers at a time, for
        the nearest-liked term: a reader with more has the sections of their interests for a
        smaller topic, and the cost stays a small multiple of the profile's.  Only the liked rows
        are gathered and scaled, unpadded (scaling the whole corpus for each block of readers cost
        a corpus-sized copy per block, 300 MB and ~0.2 s at 200,000 papers; padding every reader
        to NEAREST_MAX_LIKES cost ~1.7 times the products)."""
        if not self.nearest_weight:
            return
        users = np.asarray(users, dtype=np.int64)
        indptr, indices = self.likes.indptr, self.likes.indices
        counts = np.diff(indptr)[users]
        rows = np.flatnonzero((counts > 1) & (counts <= NEAREST_MAX_LIKES))
        E = self._embeddings
        for s in range(0, len(rows), chunk):
            block = rows[s : s + chunk]
            n = counts[block]
            offsets = np.cumsum(n) - n
            at = np.repeat(indptr[users[block]] - offsets, n) + np.arange(int(n.sum()))
            yield block, unit(E[indices[at]]), offsets

    @property
    def _embeddings(self) -> np.ndarray:
        E = self.text.embeddings
        if E is None:
            raise ValueError("the emb component needs embeddings")
        return E

    def _profiles(self, likes: sp.csr_matrix, dislikes: sp.csr_matrix | None, keywords: list[list[str]]) -> np.ndarray:
        """Mean liked embedding (+ `keyword_weight` x the keywords' when there are any) - `dislike_weight`
        x mean disliked one, unit length."""
        E = unit(self._embeddings)
        prof = np.asarray(row_mean(likes) @ E, dtype=np.float32)
        vectors = self.text.keywords or {}
        for u, words in enumerate(keywords):
            found = [vectors[w] for w in words if w in vectors]
            if found:
                kw = unit(np.mean(found, axis=0, keepdims=True))[0]
                prof[u] = unit(prof[u : u + 1])[0] + self.keyword_weight * kw
        if dislikes is not None and dislikes.nnz:
            prof = prof - self.dislike_weight * (row_mean(dislikes) @ E)
        return unit(np.asarray(prof, dtype=np.float32))


def smooth_embeddings(
    E: np.ndarray, beta: float, k: int = 20, *, rows: np.ndarray | None = None, pool: int = NEIGHBOUR_POOL
) -> np.ndarray:
    """unit(e_i + beta * mean of the unit vectors of the k most similar other papers) for `rows` (all by default).

    Pulls each paper toward its neighbourhood in the corpus (uses no likes): about 7 s for 17k papers x
    384 dimensions on one core, in row chunks.  Neighbours are looked for among at most `pool`
    papers (a fixed sample: the same in a fit and in later updates), so a large corpus costs linear time.
    Memory: for every paper, one unit copy of E, smoothed in place; for some `rows` (a day's new
    papers), only theirs and the pool's rows are read and made unit, never a copy of E.  The
    neighbours are read from a copy of the pool's rows, in similarity blocks of at most ~80 MB:
    200,000 papers need about 400 MB beside E.
    """
    everyone = rows is None
    rows = np.arange(len(E)) if rows is None else np.asarray(rows, dtype=np.int64)
    cand = fixed_sample(len(E), pool)
    k = min(k, len(cand) - 1)
    if everyone:
        E = unit(E)
        if k < 1 or not beta:
            return E
        P, out = E[cand], E
    else:
        if k < 1 or not beta:
            return unit(E[rows])
        P, out = unit(E[cand]), np.empty((len(rows), E.shape[1]), dtype=np.float32)
    chunk = max(64, min(2000, 20_000_000 // max(len(P), 1)))
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        vectors = E[r] if everyone else unit(E[r])
        S = vectors @ P.T
        self_col = np.searchsorted(cand, r).clip(0, len(cand) - 1)
        mine = cand[self_col] == r
        S[np.flatnonzero(mine), self_col[mine]] = -np.inf  # not itself
        top = top_columns(S, k)
        out[s : s + chunk] = vectors + beta * P[top].mean(axis=1)  # rows s.. of E are not read again
    return unit(out, inplace=True)
