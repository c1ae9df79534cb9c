"""The contract the hybrid's six components keep, and the row bookkeeping they share.

Each component (`content`, `lsa`, `cf`, `trend`, `emb`, `ridge`: one module each) is fitted on the
training data, folds a day's changes in (`update`), and gives raw, unstandardised scores: a users x
candidates block for ranking and a vector of (user, paper) pairs for explanations.  The blend
(`blend.HybridRanker`) standardises and weighs them, so a component knows nothing of the others'
scales or weights.  They read the papers through one shared `Text`; a day's changes reach them as
one `Day`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from digest.rank.base import TrainData
from digest.rank.content import ContentRanker

NEIGHBOUR_POOL = 20_000  # neighbours (embedding smoothing, factor kNN) are looked for among at most this many papers


@dataclass
class Text:
    """The papers as every component of one fit reads them (one object, shared by all of them).

    `tfidf` is the fitted TF-IDF space (vocabulary, a row per paper, a profile per reader: the
    `ContentRanker`, folded in by the blend before the components update); `embeddings` the
    smoothed sentence embeddings, a row per paper, or None when the fit has none; `keywords` the
    same model's vector of each reader keyword (for the embedding profile), or None.
    """

    tfidf: ContentRanker
    embeddings: np.ndarray | None
    keywords: dict[str, np.ndarray] | None = None


@dataclass
class Day:
    """A day's data against the last fit, as `HybridRanker.update` hands it to each component."""

    data: TrainData
    paper_rows: np.ndarray  # each paper's row in the last fit, -1 if new
    user_rows: np.ndarray  # each reader's row in the last fit, -1 if new
    changed: np.ndarray  # rows (in `data`) of the readers who are new or whose likes, dislikes or keywords changed
    new_tfidf: sp.csr_matrix  # TF-IDF rows of the new papers (paper_rows -1), in order, from the fitted vocabulary

    @property
    def new_papers(self) -> np.ndarray:
        return np.flatnonzero(self.paper_rows < 0)

    def changed_rows(self, m: sp.csr_matrix | None) -> sp.csr_matrix | None:
        """The changed readers' rows of a users x papers matrix of `data` (None stays None)."""
        return None if m is None else m[self.changed]


class Component(ABC):
    """One scoring signal of the hybrid."""

    name: ClassVar[str]
    global_scale: ClassVar[bool] = False  # standardised on one scale for every reader, not per reader
    textual: ClassVar[bool] = False  # explained by the text reason ("close to <liked title>", "matches keyword X")

    @abstractmethod
    def fit(self, data: TrainData, text: Text) -> bool:
        """Learn from `data`; False if the component has nothing to score with (the blend leaves it out)."""

    @abstractmethod
    def update(self, day: Day) -> None:
        """Carry the fit over to `day.data` (`text` is already today's)."""

    def prepare_update(self) -> None:  # noqa: B027 - a hook: most components have nothing to finish
        """Finish anything `update` needs before the fit is saved (nothing by default)."""

    @abstractmethod
    def raw(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Unstandardised scores, users x candidates: a new array, which the blend standardises in
        place (a component that returns an array it keeps must return a read-only view of it, which
        the blend copies)."""

    @abstractmethod
    def raw_pairs(self, users: np.ndarray, papers: np.ndarray) -> np.ndarray:
        """Unstandardised score of each (users[i], papers[i]) pair."""

    def reason(self, paper: int) -> str:
        """Why a paper this component decided was picked (a `textual` component gives the text's reason)."""
        raise NotImplementedError(f"the {self.name} component is explained by the text reason")


def unit(a: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32; `inplace`: scale `a` itself (a
    float32 array of the caller's own), so a corpus-sized matrix is not copied once more."""
    a = np.asarray(a, dtype=np.float32)
    n = np.empty((len(a), 1), dtype=np.float32)
    for s in range(0, len(a), 65_536):  # the norms a block at a time: no squared copy of a large matrix
        n[s : s + 65_536] = np.linalg.norm(a[s : s + 65_536], axis=1, keepdims=True)
    n[n == 0] = 1.0
    if inplace:
        a /= n
        return a
    return a / n


def row_mean(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its number of entries: times a paper matrix, the mean of the row's papers."""
    counts = np.diff(m.indptr).astype(np.float32)
    counts[counts == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / counts) @ m, dtype=np.float32)


def fixed_sample(n: int, size: int) -> np.ndarray:
    """Sorted rows of a fixed pseudo-random sample of `size` of `n` rows (all of them if n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


def take_dense(old: np.ndarray, rows: np.ndarray, fresh: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Row i is old[rows[i]], or, where rows[i] is -1, the next row of `fresh`; written into `out`
    (a caller's own array of the right shape, not `old`) when given, so a corpus-sized result
    needs no new corpus-sized array."""
    if out is None:
        out = np.empty((len(rows), *old.shape[1:]), dtype=old.dtype)
    out[rows >= 0] = old[rows[rows >= 0]]
    out[rows < 0] = fresh
    return out


def take_users(old: np.ndarray, urow: np.ndarray, changed: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Per-user rows: `block` for the changed users (in order), the old row for everyone else."""
    out = np.empty((len(urow), *old.shape[1:]), dtype=old.dtype)
    keep = np.ones(len(urow), dtype=bool)
    keep[changed] = False
    out[keep] = old[urow[keep]]
    out[changed] = block
    return out
