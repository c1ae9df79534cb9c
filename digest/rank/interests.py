"""A section per interest: a reader's interests, each ranked as a reader of its own, sharing one budget.

An interest is named by the reader (a topic: keywords and liked papers) or found by clustering the
reader's liked papers in the ranker's TF-IDF space (`found_interests`: average-linkage clustering in
its LSA space, cut at 2 to 5 clusters, kept only when the clusters are clearly apart, each named by its most distinctive
terms).  Each interest is ranked by the same ranker as everyone: it joins the training data as a
reader of its own (`with_interests`: its liked papers, its keywords, the owner's dislikes), which a
folding ranker (the hybrid) takes in without a refit.  The day's `max_papers` are then shared by
how much each interest has to offer today (`split_budget`: candidates above the relevance floor),
and a paper goes to one section only (`share`).

`InterestRanker` is the same idea as a ranker for `digest eval`: each user's training likes are
clustered, and the per-interest rankings are merged in proportion to the clusters' sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from digest.rank.base import IdMap, Ranker, TextSpace, TrainData

# words of any abstract, which name no interest ("speech, end" for end-to-end speech papers)
_GENERIC = frozenset(
    [
        "end",
        "based",
        "using",
        "use",
        "new",
        "model",
        "models",
        "method",
        "methods",
        "approach",
        "approaches",
        "paper",
        "propose",
        "proposed",
        "results",
        "show",
        "shows",
        "work",
        "task",
        "tasks",
        "performance",
        "state",
        "art",
        "data",
        "learning",
        "study",
        "framework",
    ]
)
MIN_LIKES = 10  # liked papers before interests are looked for
MAX_CLUSTERS = 5
MIN_CLUSTER = 3  # liked papers in each found interest
EXTRA_CLUSTER = 0.02  # silhouette one more cluster must add to be preferred (fewer, broader sections)
MIN_SEPARATION = (
    0.15  # the clustering's silhouette (cosine, in the LSA space) below which the likes count as one interest
)


@dataclass
class Interest:
    """One interest of a reader: a name, keywords, and liked papers as corpus rows."""

    name: str
    keywords: list[str] = field(default_factory=list)
    liked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    own: bool = False  # ranked by the reader's own (whole) profile, not a profile of its own


def named_interests(topics: Sequence[dict[str, Any]], data: TrainData) -> list[Interest]:
    """The reader's own topics ({name, keywords, liked paper ids}), liked papers as corpus rows."""
    out = []
    for t in topics:
        liked = data.corpus.ids.indices(str(p) for p in t.get("liked") or [])
        out.append(Interest(str(t.get("name") or ""), [str(k) for k in t.get("keywords") or []], liked))
    return [i for i in out if i.name and (i.keywords or len(i.liked))]


def _unit_dense(m: sp.csr_matrix) -> np.ndarray:
    """The rows of a sparse matrix as dense unit vectors over the columns they use."""
    cols = np.unique(m.indices)
    dense = np.asarray(m[:, cols].toarray(), dtype=np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return dense / norms


def _silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    """The mean silhouette of a labelling, given the pairwise distances."""
    ks = np.unique(labels)
    if len(ks) < 2:
        return -1.0
    mean_to = np.stack([dist[:, labels == j].mean(axis=1) for j in ks], axis=1)  # n x k
    own = np.searchsorted(ks, labels)
    sizes = np.array([(labels == j).sum() for j in ks])
    a = mean_to[np.arange(len(dist)), own] * sizes[own] / np.maximum(sizes[own] - 1, 1)  # without itself
    others = mean_to.copy()
    others[np.arange(len(dist)), own] = np.inf
    b = others.min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    s[sizes[own] == 1] = 0.0
    return float(s.mean())


def cluster_likes(vectors: np.ndarray) -> np.ndarray | None:
    """Labels 0..k-1 of the liked papers (their unit vectors) in 2-5 clear clusters, or None when
    they are too few or form one interest (no cut of the average-linkage tree separates them by a
    cosine silhouette of MIN_SEPARATION, with MIN_CLUSTER papers in each cluster)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x = np.nan_to_num(np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(x, axis=1)
    known = norms > 0  # a paper with no text (an empty title) has no direction: it joins the largest cluster
    n = int(known.sum())
    if n < MIN_LIKES:
        return None
    x = x[known] / norms[known, None]
    dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), "average")
    best, best_score = None, MIN_SEPARATION
    for k in range(2, min(MAX_CLUSTERS, n // MIN_CLUSTER) + 1):
        labels = fcluster(tree, k, "maxclust") - 1
        sizes = np.bincount(labels)
        if len(sizes) != k or sizes.min() < MIN_CLUSTER:
            continue
        score = _silhouette(dist, labels) - EXTRA_CLUSTER * (k - 2)
        if score > best_score:
            best, best_score = labels, score
    if best is None:
        return None
    out = np.full(len(known), int(np.bincount(best).argmax()), dtype=np.int64)
    out[known] = best
    return out


def _names(space: TextSpace, items: sp.csr_matrix, labels: np.ndarray, terms: int = 2) -> list[str]:
    """Each cluster's name: its most distinctive terms (weight here minus the others' mean)."""
    vocab = space.terms()
    k = int(labels.max()) + 1
    centres = np.vstack([np.asarray(items[labels == j].mean(axis=0)).ravel() for j in range(k)])
    names = []
    for j in range(k):
        others = np.delete(centres, j, axis=0).mean(axis=0) if k > 1 else 0
        order = np.argsort(-(centres[j] - others), kind="stable")
        chosen: list[str] = []
        for t in order[:50]:
            word = str(vocab[t])
            if set(word.split()) <= _GENERIC or any(word in c or c in word for c in chosen):
                continue
            chosen.append(word)
            if len(chosen) == terms:
                break
        names.append(", ".join(chosen) or f"interest {j + 1}")
    return names


def found_interests(space: TextSpace, liked: np.ndarray) -> list[Interest]:
    """The reader's interests found in their liked papers (corpus rows): 2-5, largest first, or []."""
    liked = np.asarray(liked, dtype=np.int64)
    if len(liked) < MIN_LIKES:
        return []
    items = space.items[liked]
    labels = cluster_likes(space.dense[liked] if space.dense is not None else _unit_dense(items))
    if labels is None:
        return []
    names = _names(space, items, labels)
    out = [Interest(names[j], [], liked[labels == j]) for j in range(len(names))]
    return sorted(out, key=lambda i: -len(i.liked))


def with_interests(
    data: TrainData, owners: Sequence[int], interests: Sequence[Sequence[Interest]]
) -> tuple[TrainData, list[list[int]]]:
    """`data` with each interest as a reader of its own after the real ones (whose rows stay as
    they are): its liked papers, its keywords and its owner's dislikes.  Returns the new data and,
    per owner, the rows of their interests (the owner's own row for an interest that is `own`)."""
    ids = list(data.users.ids)
    like_rows: list[np.ndarray] = []
    dislike_rows: list[int] = []
    keywords = [list(k) for k in data.keywords]
    rows: list[list[int]] = []
    for owner, found in zip(owners, interests):
        mine = []
        for n, interest in enumerate(found):
            if interest.own:
                mine.append(owner)
                continue
            mine.append(len(ids))
            ids.append(f"{data.users.ids[owner]}\x00interest {n}")
            like_rows.append(np.asarray(interest.liked, dtype=np.int64))
            dislike_rows.append(owner)
            keywords.append(list(interest.keywords))
        rows.append(mine)
    n_new = len(like_rows)
    r = np.repeat(np.arange(n_new), [len(x) for x in like_rows])
    c = np.concatenate(like_rows) if like_rows else np.zeros(0, np.int64)
    extra = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_new, len(data.corpus)))
    likes = sp.vstack([data.likes, extra], format="csr")
    dislikes = None
    if data.dislikes is not None:
        dislikes = sp.vstack([data.dislikes, data.dislikes[dislike_rows]], format="csr")
    readers = data.readers if data.readers is not None else len(data.users)
    return TrainData(data.corpus, IdMap(ids), likes, dislikes, keywords, data.counts, readers), rows


def fold_in_interests(ranker: Ranker, augmented: TrainData) -> None:
    """Bring a fitted ranker to `augmented` (`with_interests`: the same papers, the same readers,
    interests after them): a folding ranker takes only the new rows in; the embeddings of a fit
    made with them go along unchanged (the papers are the same)."""
    embeddings = getattr(ranker, "raw_embeddings", None)
    if embeddings is not None and len(embeddings) == len(augmented.corpus):
        ranker.update(augmented, embeddings=embeddings)
    else:
        ranker.update(augmented)


def split_budget(offers: Sequence[int], budget: int) -> list[int]:
    """How many of `budget` picks each interest gets: one each first (the largest offers first, if
    the budget is short), the rest in proportion to what each has to offer (each offer counted up
    to the budget, so one big interest does not crowd out the others), never more than it offers."""
    offers = [max(0, min(int(o), budget)) for o in offers]
    total = min(budget, sum(offers))
    quotas = [0] * len(offers)
    for i in sorted((i for i, o in enumerate(offers) if o), key=lambda i: -offers[i])[:total]:
        quotas[i] = 1
    for _ in range(total - sum(quotas)):  # highest averages (D'Hondt): proportional, in whole picks
        open_ = [i for i, o in enumerate(offers) if quotas[i] < o]
        i = max(open_, key=lambda i: (offers[i] / (quotas[i] + 1), -i))
        quotas[i] += 1
    return quotas


def share(scores: np.ndarray, budget: int, *, taken: Sequence[int] = ()) -> list[np.ndarray]:
    """Each interest's picks (column positions, best first) from its row of `scores` (-inf: not
    allowed), `split_budget` by the allowed columns of each, no column twice (a column two interests
    want goes to the one whose turn comes first; an interest left short passes its picks on)."""
    scores = np.array(scores, dtype=np.float64)
    if taken:
        scores[:, list(taken)] = -np.inf
    quotas = split_budget([int(np.isfinite(row).sum()) for row in scores], budget)
    orders = [np.argsort(-row, kind="stable") for row in scores]
    picked: list[list[int]] = [[] for _ in scores]
    used: set[int] = set()
    cursor = [0] * len(scores)

    def take(i: int) -> bool:
        order, row = orders[i], scores[i]
        while cursor[i] < len(order):
            col = int(order[cursor[i]])
            cursor[i] += 1
            if not np.isfinite(row[col]):
                return False
            if col not in used:
                used.add(col)
                picked[i].append(col)
                return True
        return False

    left = 0
    for _ in range(max(quotas, default=0)):  # in turns, so no interest takes all the shared papers
        for i, q in enumerate(quotas):
            if len(picked[i]) < q and not take(i):
                left += q - len(picked[i])
                quotas[i] = len(picked[i])
    while left > 0:  # what a short interest could not fill goes to the others, in turns
        moved = False
        for i in range(len(scores)):
            if left and take(i):
                left -= 1
                moved = True
        if not moved:
            break
    return [np.array(p, dtype=np.int64) for p in picked]


class InterestRanker(Ranker):
    """For `digest eval`: the base ranker's per-interest rankings merged, against its blended list.

    Each user's training likes are clustered (`found_interests`); a user with two or more
    interests is scored as `share` would fill a long digest: each interest's own ranking, taken in
    turns in proportion to the interest's size.  Users with one interest keep the base ranking."""

    name = "interests"

    def __init__(self, *, base: str = "hybrid", **options: Any) -> None:
        self.base_name = base
        self.options = options

    def fit(self, data: TrainData) -> InterestRanker:
        from digest.rank import make_ranker

        self.base = make_ranker(self.base_name, **self.options).fit(data)
        space = self.base.text_space()
        self.rows: dict[int, list[int]] = {}
        self.sizes: dict[int, list[int]] = {}
        if space is None:
            return self
        owners, found = [], []
        for u in range(len(data.users)):
            interests = found_interests(space, data.likes[u].indices)
            if len(interests) > 1:
                owners.append(u)
                found.append(interests)
        if owners:
            augmented, rows = with_interests(data, owners, found)
            fold_in_interests(self.base, augmented)
            self.rows = dict(zip(owners, rows))
            self.sizes = {u: [len(i.liked) for i in f] for u, f in zip(owners, found)}
        return self

    def score(self, users: np.ndarray, candidates: np.ndarray, *, chunk: int = 256) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.array(self.base.score(users, candidates), dtype=np.float32)
        owners = [(i, u) for i, u in enumerate(users.tolist()) if u in self.rows]
        for s in range(0, len(owners), chunk):
            part = owners[s : s + chunk]
            rows = np.array([r for _, u in part for r in self.rows[u]], dtype=np.int64)
            block = np.asarray(self.base.score(rows, candidates), dtype=np.float32)
            # each interest's rank of every candidate (1 = its best)
            ranks = np.empty(block.shape, dtype=np.float32)
            order = np.argsort(-block, axis=1, kind="stable")
            np.put_along_axis(ranks, order, np.arange(1, block.shape[1] + 1, dtype=np.float32)[None, :], axis=1)
            at = 0
            for i, u in part:
                n = len(self.rows[u])
                weights = np.array(self.sizes[u], dtype=np.float32)
                weights /= weights.sum()
                # the position in a merge taking each interest in turn, in proportion to its size
                out[i] = -np.min(ranks[at : at + n] / weights[:, None], axis=0)
                at += n
        return out

    def explain(self, user: int, papers: np.ndarray) -> list[str]:
        return self.base.explain(user, papers)

    def text_space(self) -> TextSpace | None:
        return self.base.text_space()
