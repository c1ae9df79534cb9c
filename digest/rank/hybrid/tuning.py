"""Choosing the hybrid's weights inside `fit`, on a validation split carved from the training likes only.

cold: hold out 20% of the liked papers with all their likes and rank them as brand-new papers,
k = 100; warm: hold out 20% of the likes of each user with at least three, k = 300.  The blend
maximises recall@k / recall@k(content alone) + nDCG@10 / nDCG@10(content alone), so it is judged
on the head of the list as well as on recall; coordinate ascent over `GRID` (a few dozen blends
instead of every combination), then the caller refits on everything.  The metrics are those of
`digest eval` (`digest.rank.metrics`), so a validation figure means what a benchmark figure means.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from digest.rank.base import TrainData
from digest.rank.metrics import block_metrics

GRID: dict[str, tuple[float, ...]] = {
    "lsa": (0.0, 0.25, 0.5),
    "cf": (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0, 60.0),
    "trend": (0.0, 0.1, 0.25),
    "emb": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "ridge": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0),
}
MIN_VAL_USERS = 30  # fewer validation users than this: too little to tune on, the weights stay

# (data, users, candidates) -> each component's standardised users x candidates block, every component fitted on data
Blocks = Callable[[TrainData, np.ndarray, np.ndarray], dict[str, np.ndarray]]


def tune_weights(
    data: TrainData,
    mode: str,
    blocks_of: Blocks,
    *,
    weights: dict[str, float],
    start: dict[str, float],
    has_embeddings: bool,
    seed: int = 0,
    val_users: int = 1500,
    objective: str = "both",
) -> tuple[dict[str, float] | None, dict]:
    """(the chosen weights, or None to keep `weights`; the tuning report for `HybridRanker.tuning`).

    `mode` is "cold" or "warm"; `blocks_of` fits every component on the split's training likes;
    the ascent starts from the grid values nearest `start`; `weights` (the current ones) give emb's
    weight when emb is not tuned; at most `val_users` validation users, sampled with `seed`;
    `objective` "both" (above), "recall" or "ndcg".
    """
    rng = np.random.default_rng(seed + 1)
    likes = data.likes.tocsr()
    fit_likes, val, cands, k = _split(likes, mode, rng)
    users = np.flatnonzero((np.diff(val.indptr) > 0) & (np.diff(fit_likes.indptr) > 0))
    report: dict = {"mode": mode, "val_users": len(users), "chosen": None}
    if len(users) < MIN_VAL_USERS:
        return None, report
    if len(users) > val_users:
        users = np.sort(rng.choice(users, size=val_users, replace=False))
    sub = TrainData(data.corpus, data.users, fit_likes, data.dislikes, data.keywords, data.counts)
    blocks = blocks_of(sub, users, cands)
    exclude = fit_likes[users][:, cands].toarray() > 0
    truth = val[users][:, cands].toarray() > 0
    names: list[str] = [n for n in GRID if n in blocks]  # every tunable component of this fit

    def measure(total: np.ndarray) -> tuple[float, float]:
        total[exclude] = -np.inf
        m = block_metrics(total, truth, [k])
        return float(m[f"recall@{k}"].mean()), float(m["ndcg@10"].mean())

    base = measure(blocks["content"].copy())  # content alone: the scale of each metric

    def score(w: dict[str, float]) -> tuple[float, float, float]:
        total = blocks["content"].copy()
        for n in names:
            if w[n]:
                total += w[n] * blocks[n]
        rec, ndcg = measure(total)
        # recall@k and nDCG@10, each relative to content alone, so neither dominates
        obj = (
            rec / max(base[0], 1e-9) + ndcg / max(base[1], 1e-9)
            if objective == "both"
            else rec
            if objective == "recall"
            else ndcg
        )
        return obj, rec, ndcg

    # coordinate ascent over the grid (a few dozen blends instead of every combination), two rounds
    w = {n: _nearest(GRID[n], start[n]) for n in names}
    seen: dict[tuple[float, ...], tuple[float, float, float]] = {}
    best: tuple[float, dict[str, float], float, float] | None = None
    for _ in range(2):
        changed = False
        for n in names:
            for g in GRID[n]:
                trial = {**w, n: g}
                key = tuple(trial[m] for m in names)
                if key not in seen:
                    seen[key] = score(trial)
                if best is None or seen[key][0] > best[0] + 1e-6:
                    best = (seen[key][0], dict(trial), seen[key][1], seen[key][2])
                    changed = changed or trial != w
                    w = dict(trial)
        if not changed:
            break
    if best is None:  # no component besides content
        obj, rec, ndcg = score(w)
        best = (obj, dict(w), rec, ndcg)
    chosen = {"content": 1.0, **{n: 0.0 for n in ("lsa", "cf", "trend")}, **best[1]}
    for n in ("emb", "ridge"):  # the embedding parts, when not tuned, keep their weights
        if n not in best[1]:
            chosen[n] = weights.get(n, start[n])
    new_weights = dict(chosen)
    for n in ("emb", "ridge"):
        if not has_embeddings or n not in blocks:
            chosen.pop(n)  # not a component of this fit: keep it out of the report
    report.update(
        {
            "val_users": len(users),
            "blends_tried": len(seen),
            "objective": f"recall@{k}/content + ndcg@10/content" if objective == "both" else objective,
            f"val_recall@{k}": round(best[2], 4),
            "val_ndcg@10": round(best[3], 4),
            "content_alone": [round(base[0], 4), round(base[1], 4)],
            "chosen": dict(chosen),
        }
    )
    return new_weights, report


def _nearest(grid: tuple[float, ...], value: float) -> float:
    """The grid value nearest `value` (the first of two as near)."""
    return min(grid, key=lambda g: abs(g - value))


def _split(
    likes: sp.csr_matrix, mode: str, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, int]:
    """(training likes, held-out likes, the candidate papers to rank, k) of the validation split."""
    coo = likes.tocoo()
    if mode == "cold":
        liked_items = np.flatnonzero(np.asarray(likes.getnnz(axis=0)) > 0)
        val_items = (
            rng.choice(liked_items, size=len(liked_items) // 5, replace=False)
            if len(liked_items) >= 10
            else liked_items[:0]
        )
        mask = np.zeros(likes.shape[1], dtype=bool)
        mask[val_items] = True
        held = mask[coo.col]
        cands, k = np.flatnonzero(mask), 100
    else:
        held = np.zeros(coo.nnz, dtype=bool)
        order = np.lexsort((rng.random(coo.nnz), coo.row))
        rows = coo.row[order]
        starts = np.searchsorted(rows, np.arange(likes.shape[0]))
        counts = np.diff(likes.indptr)
        rank_in_user = np.arange(coo.nnz) - starts[rows]
        n_hold = np.where(counts >= 3, np.ceil(counts * 0.2), 0).astype(np.int64)
        held[order[rank_in_user < n_hold[rows]]] = True
        cands, k = np.arange(likes.shape[1]), 300
    shape = likes.shape
    fit_likes = sp.csr_matrix((np.ones((~held).sum(), np.float32), (coo.row[~held], coo.col[~held])), shape=shape)
    val = sp.csr_matrix((np.ones(held.sum(), np.float32), (coo.row[held], coo.col[held])), shape=shape)
    return fit_likes, val, cands, k
