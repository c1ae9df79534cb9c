"""The one contract every ranker keeps, so the daily digest and `digest eval` share them.

A ranker is fitted once on a `TrainData` (the corpus, who liked what, keywords, community
counts) and then scores a block of users against a block of candidate papers, returning a dense
`(len(users), len(candidates))` float32 matrix where higher is better.  Ranking, filtering,
blending and diversity are separate steps built on that matrix (see `top_k`), and each ranker can
say in a few words why it scored a paper highly for a user (`explain`).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp


class IdMap:
    """Maps our string ids (paper ids, subscriber emails, benchmark user ids) to matrix rows."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        for item in ids:
            if item not in self._index:
                self._index[item] = len(self.ids)
                self.ids.append(item)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def index(self, item: str) -> int:
        return self._index[item]

    def get(self, item: str) -> int | None:
        return self._index.get(item)

    def rows(self, items: Sequence[str]) -> np.ndarray:
        """Row of each item, -1 for unknown ones (one C-level pass: millions of ids at scale)."""
        return np.fromiter(map(self._index.get, items, itertools.repeat(-1)), dtype=np.int64, count=len(items))

    def indices(self, items: Iterable[str]) -> np.ndarray:
        """Rows of the known items, in order; unknown items are left out."""
        return np.fromiter((self._index[i] for i in items if i in self._index), dtype=np.int64)


@dataclass
class Corpus:
    """The papers a ranker knows: text by row, with the id map to find rows."""

    ids: IdMap
    titles: list[str]
    abstracts: list[str]

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, str]]) -> Corpus:
        """Build from (id, title, abstract) triples; the first record of a repeated id wins."""
        ids, titles, abstracts = [], [], []
        seen: set[str] = set()
        for pid, title, abstract in records:
            if pid in seen:
                continue
            seen.add(pid)
            ids.append(pid)
            titles.append(title or "")
            abstracts.append(abstract or "")
        return cls(IdMap(ids), titles, abstracts)

    def __len__(self) -> int:
        return len(self.ids)

    def texts(self) -> list[str]:
        return [f"{t}. {a}" if a else t for t, a in zip(self.titles, self.abstracts)]


@dataclass
class TrainData:
    """Everything a ranker may learn from.

    `likes` and `dislikes` are users x papers CSR matrices of 0/1 over `corpus` rows.
    `keywords[u]` are the topics user u asked for.  `counts[p]` is the community signal of paper p
    (upvotes on the source site, or likes across all our subscribers).  `readers`: see below.
    """

    @property
    def reader_likes(self) -> sp.csr_matrix:
        """The likes of the readers themselves (without the interest rows, `readers`)."""
        return self.likes if self.readers is None else self.likes[: self.readers]

    corpus: Corpus
    users: IdMap
    likes: sp.csr_matrix
    dislikes: sp.csr_matrix | None = None
    keywords: list[list[str]] = field(default_factory=list)
    counts: np.ndarray | None = None
    # users before this row are readers; the rows after it are readers' interests (`rank.interests`),
    # ranked like readers but counted in nothing about readers (a trend's "liked by N readers")
    readers: int | None = None

    def __post_init__(self) -> None:
        shape = (len(self.users), len(self.corpus))
        self.likes = sp.csr_matrix(self.likes, dtype=np.float32)
        if self.likes.shape != shape:
            raise ValueError(f"likes has shape {self.likes.shape}, expected {shape}")
        if self.dislikes is not None:
            self.dislikes = sp.csr_matrix(self.dislikes, dtype=np.float32)
            if self.dislikes.shape != shape:
                raise ValueError(f"dislikes has shape {self.dislikes.shape}, expected {shape}")
        if not self.keywords:
            self.keywords = [[] for _ in range(shape[0])]
        if len(self.keywords) != shape[0]:
            raise ValueError("keywords must have one list per user")
        if self.counts is None:
            self.counts = np.zeros(shape[1], dtype=np.float32)

    @classmethod
    def from_pairs(
        cls,
        corpus: Corpus,
        users: IdMap,
        likes: Iterable[tuple[str, str]],
        *,
        dislikes: Iterable[tuple[str, str]] = (),
        keywords: Sequence[Sequence[str]] | None = None,
        counts: np.ndarray | None = None,
    ) -> TrainData:
        """Build from (user id, paper id) pairs; pairs naming an unknown paper or user are dropped."""
        return cls(
            corpus,
            users,
            pairs_to_matrix(likes, users, corpus.ids),
            pairs_to_matrix(dislikes, users, corpus.ids),
            [list(k) for k in keywords] if keywords else [],
            counts,
        )


def pairs_to_matrix(pairs: Iterable[tuple[str, str]], rows: IdMap, cols: IdMap) -> sp.csr_matrix:
    """A 0/1 CSR matrix from (row id, column id) pairs; unknown ids are skipped."""
    r, c = [], []
    for a, b in pairs:
        i, j = rows.get(a), cols.get(b)
        if i is not None and j is not None:
            r.append(i)
            c.append(j)
    m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(rows), len(cols)))
    m.data[:] = 1.0  # duplicates summed above: back to 0/1
    return m


@dataclass
class TextSpace:
    """A ranker's text space, for what is worked out beside the ranking (a pick's highlighted
    sentence, the clusters of a reader's likes): the fitted vectorizer, a TF-IDF row per corpus
    paper and a profile row per user, in the same terms."""

    vectorizer: Any  # a fitted sklearn TfidfVectorizer
    items: sp.csr_matrix
    profiles: sp.csr_matrix
    dense: np.ndarray | None = None  # a dense unit vector per paper (the hybrid's LSA space), if the ranker has one
    _terms: list[str] | None = field(default=None, repr=False)

    def terms(self) -> list[str]:
        """The vocabulary by column, built once (the vectorizer's own `get_feature_names_out`
        sorts the whole vocabulary on every call)."""
        if self._terms is None:
            terms = [""] * len(self.vectorizer.vocabulary_)
            for term, column in self.vectorizer.vocabulary_.items():
                terms[column] = term
            self._terms = terms
        return self._terms


class Ranker(ABC):
    """Fit once, then score users against candidate papers.

    Contract (checked once for every ranker by tests/test_rankers_contract.py):
    - `fit(data)` returns self and may be called again with new data;
    - `score(users, candidates)` takes row indices into `data.users` and `data.corpus` and returns
      a float32 array of shape (len(users), len(candidates)), finite, higher is better;
    - `explain(user, papers)` returns one short human reason per paper; `explain_many(users, papers)`
      the same for a block of users (papers 2-D, one row per user).
    """

    name: ClassVar[str]
    folds_in: ClassVar[bool] = False  # does `update` fold new data in (worth saving the fit, `rank.saved`)
    # the relevance floor of the daily digest on this ranker's scale (`ranking.min_score` unset): a
    # candidate scoring below it is not picked; measured per ranker (README "Honest picks"), none here
    floor: ClassVar[float] = float("-inf")

    @abstractmethod
    def fit(self, data: TrainData) -> Ranker: ...

    def update(self, data: TrainData, *, embeddings: np.ndarray | None = None) -> Ranker:
        """Bring a fitted ranker up to `data` (new papers, readers, likes; `embeddings`, a row per paper,
        for a ranker fitted with them); by default a new fit."""
        return self.fit(data)

    def prepare_update(self) -> None:  # noqa: B027 - a hook: most rankers have nothing to finish
        """Finish anything `update` needs before the fit is saved (nothing by default)."""

    @abstractmethod
    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return [f"ranked by {self.name}"] * len(papers)

    def explain_many(self, users: np.ndarray, papers: np.ndarray) -> list[list[str]]:
        """`explain` for many users at once: `papers` is 2-D, one row of paper rows per user.

        The default loops over `explain`; rankers override it with a vectorised version that must
        give the same reasons.
        """
        users = np.asarray(users, dtype=np.int64)
        papers = paper_rows(users, papers)
        return [self.explain(int(u), row) for u, row in zip(users, papers)]

    def item_features(self, papers: np.ndarray) -> sp.csr_matrix | np.ndarray | None:
        """Feature rows of these papers, for the diversity step (None: the ranker has no text space)."""
        return None

    def text_space(self) -> TextSpace | None:
        """The fitted TF-IDF space with every user's profile in it (None: the ranker has none)."""
        return None

    def recommend(
        self, user: int, candidates: np.ndarray, k: int, *, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(paper rows, scores) of the user's best k candidates, best first."""
        scores = self.score(np.array([user]), candidates)[0]
        return top_k(candidates, scores, k, exclude=exclude)


def paper_rows(users: np.ndarray, papers: np.ndarray) -> np.ndarray:
    """`explain_many`'s papers argument as a 2-D int array with one row per user."""
    papers = np.asarray(papers, dtype=np.int64)
    if papers.ndim == 2:
        return papers
    return papers.reshape(len(users), -1) if len(users) else papers.reshape(0, 0)


def top_k(
    candidates: np.ndarray, scores: np.ndarray, k: int, *, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (candidate, score) pairs, best first, leaving out rows in `exclude`."""
    scores = np.asarray(scores, dtype=np.float32)
    if exclude is not None and len(exclude):
        keep = ~np.isin(candidates, exclude)
        candidates, scores = candidates[keep], scores[keep]
    k = min(k, len(candidates))
    if k <= 0:
        return candidates[:0], scores[:0]
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    return candidates[order], scores[order]


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best entries of each row of a dense score block, best first."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.arange(scores.shape[0])[:, None]
    order = np.argsort(-scores[rows, part], axis=1, kind="stable")
    return part[rows, order]
