"""The `ridge` component: each reader's own linear scorer over the paper vectors, learned against every paper.

The `emb` profile is the mean of a reader's papers: it knows what they like, not what sets it apart
from everything else, so a direction every paper of the field shares counts as much as the one
only their papers have.  Here each reader gets weights w over the (centred, smoothed) paper vectors
E by weighted least squares against the whole corpus, as implicit ALS solves a reader's factors
with the item factors held fixed, but with the papers' own vectors as the factors, so a brand-new
paper is scored like any other:

    w = argmin  sum_i c_i (r_i - w . e_i)^2 + lam |w|^2,   r_i = 1 for a liked paper (c_i = 1 + alpha), else 0 (c_i = 1)
      = (1 + alpha) (E'E + lam I + alpha E_u'E_u)^-1 E_u' 1

computed through the Woodbury identity with B = (E'E + lam I)^-1 shared by everyone, so a reader with
n likes costs O(n d^2 + n^2 d + n^3) (d = 384) and nobody's solve touches the corpus:

    w  is proportional to  (E_u B)' K^-1 1,   K = I / alpha + E_u B E_u'.

`lam` is `lam_scale` x trace(E'E) / d.  CiteULike, titles only, on validation splits of train.csv
(the blend's weights tuned inside `fit` as usual): cold recall@100 0.723 -> 0.721 with nDCG@10
0.270 -> 0.284, p10 recall@300 0.574 -> 0.586; on the test files cold 0.683 -> 0.698 and p10
0.607 -> 0.616 (BENCHMARKS.md, "Round 2 of issue 16").  For a reader with one like it is their paper's vector
whitened against the corpus, which ranked worse than the plain profile (single-like validation),
so the weights without co-occurrence leave it out.  Explained by the text reason.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from digest.rank.base import TrainData
from digest.rank.hybrid.component import Component, Day, Text, take_users, unit


class RidgeComponent(Component):
    name = "ridge"
    textual = True

    def __init__(self, *, alpha: float = 20.0, lam_scale: float = 0.1, chunk: int = 2048) -> None:
        self.alpha = alpha
        self.lam_scale = lam_scale
        self.chunk = chunk

    def fit(self, data: TrainData, text: Text) -> bool:
        if text.embeddings is None or not data.likes.nnz:
            return False
        self.text = text
        n, d = text.embeddings.shape
        gram = np.zeros((d, d))
        for start in range(0, n, 20_000):  # in float64, a block at a time (no copy of every vector)
            block = self._papers(np.arange(start, min(start + 20_000, n))).astype(np.float64)
            gram += block.T @ block
        lam = self.lam_scale * float(np.trace(gram)) / len(gram)
        # fixed at the fit, like the ALS item factors
        self.B = np.linalg.inv(gram + lam * np.eye(len(gram))).astype(np.float32)
        self.W = self._weights(data.likes)
        return True

    def update(self, day: Day) -> None:
        block = self._weights(day.data.likes[day.changed])
        self.W = take_users(self.W, day.user_rows, day.changed, block)

    def raw(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.W[users] @ self._papers(candidates).T

    def raw_pairs(self, users: np.ndarray, papers: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.W[users], self._papers(papers))

    def _papers(self, rows: np.ndarray) -> np.ndarray:
        E = self.text.embeddings
        if E is None:
            raise ValueError("the ridge component needs embeddings")
        return unit(E[rows])

    def _weights(self, likes: sp.csr_matrix) -> np.ndarray:
        """Each reader's scorer (unit length: the blend standardises per reader), zero without likes."""
        likes = likes.tocsr()
        d = len(self.B)
        W = np.zeros((likes.shape[0], d), dtype=np.float32)
        for start in range(0, likes.shape[0], self.chunk):
            rows = np.arange(start, min(start + self.chunk, likes.shape[0]))
            liked = np.unique(likes[rows].indices)
            if not len(liked):
                continue
            E = self._papers(liked)
            P = E @ self.B  # each liked paper's row of E B, once per chunk of readers (not all papers': memory)
            for u in rows:
                mine = np.searchsorted(liked, likes.indices[likes.indptr[u] : likes.indptr[u + 1]])
                if not len(mine):
                    continue
                Pu = P[mine]
                K = (Pu @ E[mine].T).astype(np.float64)
                K[np.diag_indices_from(K)] += 1.0 / self.alpha
                W[u] = Pu.T @ np.linalg.solve(K, np.ones(len(mine))).astype(np.float32)
        return unit(W)
