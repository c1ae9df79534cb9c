"""Offline evaluation: the benchmark-folder loader and the `digest eval` driver, with the metrics.

A benchmark folder holds `papers.jsonl` ({"id", "title", "abstract"} a line), `train.csv` and
`test.csv` (`user,paper` with a header line) and optionally `candidates.txt` (one paper id a line:
the pool to rank; without it every paper the user did not like in training is ranked).

recall@k for one user = held-out papers in the top k / all held-out papers of that user, with the
user's training papers excluded from the ranking; averaged over users with at least one held-out
paper.  nDCG@10 uses binary relevance.  The metric functions live in `digest.rank.metrics` (the
hybrid's weight tuning computes its validation figures with them) and are re-exported here.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from digest.errors import DataError
from digest.rank.base import Corpus, IdMap, Ranker, TrainData, pairs_to_matrix
from digest.rank.metrics import block_metrics, hits_metrics, ndcg_at_k, recall_at_k

DEFAULT_KS = (10, 20, 50, 100, 300)
DEFAULT_METHODS = ("popularity", "random", "content", "svm", "collaborative", "hybrid")

__all__ = [  # the metric functions are re-exported from `digest.rank.metrics`
    "ANCHORS",
    "DEFAULT_KS",
    "DEFAULT_METHODS",
    "Bench",
    "block_metrics",
    "default_cache_dir",
    "embedding_choice",
    "evaluate",
    "hits_metrics",
    "load_bench",
    "ndcg_at_k",
    "parse_list",
    "plot_labels",
    "plot_recall",
    "ranker_options",
    "recall_at_k",
    "run_eval",
]


# -- loading -------------------------------------------------------------------------------------


@dataclass
class Bench:
    """A benchmark folder loaded: training data for the rankers, the held-out likes, the pool."""

    name: str
    data: TrainData
    test: sp.csr_matrix  # users x corpus, 0/1
    candidates: np.ndarray | None  # corpus rows of candidates.txt, or None: rank everything

    @property
    def eval_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["user", "paper"] or len(header) != 2:
                raise DataError(f"{path}:1: expected the header line 'user,paper', got {','.join(header or [])!r}")
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(f"{path}:{reader.line_num}: expected 'user,paper', got {','.join(row)!r}")
                pairs.append((row[0].strip(), row[1].strip()))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    return pairs


def _read_papers(path: Path) -> list[tuple[str, str, str]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from e
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("id"), (str, int))
                or str(rec.get("id")).strip() == ""
            ):
                raise DataError(f'{path}:{n}: each line needs a non-empty "id"')
            title, abstract = rec.get("title") or "", rec.get("abstract") or ""
            if not isinstance(title, str) or not isinstance(abstract, str):
                raise DataError(f'{path}:{n}: "title" and "abstract" must be strings')
            records.append((str(rec["id"]).strip(), title, abstract))
    return records


def load_bench(path: str | Path) -> Bench:
    """Load a benchmark folder; papers or users seen only in test (or candidates) are added, untitled if unknown."""
    path = Path(path)
    for required in ("papers.jsonl", "train.csv", "test.csv"):
        if not (path / required).is_file():
            raise DataError(f"{path / required}: missing (a benchmark folder needs papers.jsonl, train.csv, test.csv)")
    records = _read_papers(path / "papers.jsonl")
    train = _read_pairs(path / "train.csv")
    test = _read_pairs(path / "test.csv")
    cand_ids = None
    if (path / "candidates.txt").is_file():
        cand_ids = [
            line.strip() for line in (path / "candidates.txt").read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    known = {r[0] for r in records}
    extra = []
    for pid in [p for _, p in train] + [p for _, p in test] + (cand_ids or []):
        if pid not in known:
            known.add(pid)
            extra.append((pid, "", ""))
    corpus = Corpus.from_records(records + extra)
    users = IdMap([u for u, _ in train] + [u for u, _ in test])
    data = TrainData.from_pairs(corpus, users, train)
    data.counts = np.zeros(len(corpus), dtype=np.float32)  # no community signal in a benchmark
    test_m = pairs_to_matrix(test, users, corpus.ids)
    candidates = corpus.ids.indices(dict.fromkeys(cand_ids)) if cand_ids is not None else None
    return Bench(path.name, data, test_m, candidates)


# -- evaluation ----------------------------------------------------------------------------------


def evaluate(
    ranker: Ranker,
    bench: Bench,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    users: np.ndarray | None = None,
    fit: bool = True,
    block: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    per_user: bool = False,
) -> dict:
    """Fit `ranker` on the bench's training data (unless fit=False) and measure it on test.csv.

    Returns {"recall@k": ..., "ndcg@10": ..., "users": n, "seconds": s}; `users` restricts (samples) the
    evaluated users; `per_user` adds {"per_user": {metric: one value per evaluated user}} (for paired
    comparisons of two rankers on the same users).
    """
    start = time.perf_counter()
    if fit:
        ranker.fit(bench.data)
    users = bench.eval_users if users is None else np.asarray(users, dtype=np.int64)
    cands = bench.candidates if bench.candidates is not None else np.arange(len(bench.data.corpus))
    likes, test = bench.data.likes, bench.test
    n_relevant = np.diff(test.indptr)[users]
    values: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(users), block):
        ub = users[s : s + block]
        scores = np.asarray(ranker.score(ub, cands), dtype=np.float32).copy()
        scores[likes[ub][:, cands].toarray() > 0] = -np.inf
        truth = test[ub][:, cands].toarray() > 0
        for name, vals in block_metrics(scores, truth, ks, n_relevant=n_relevant[s : s + block]).items():
            values.setdefault(name, []).append(vals)
        if progress:
            progress(min(s + block, len(users)), len(users))
    out: dict = {name: float(np.concatenate(v).mean()) if v else 0.0 for name, v in values.items()}
    if per_user:
        out["per_user"] = {name: np.concatenate(v) for name, v in values.items()}
    out["users"] = len(users)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def ranker_options(method: str, bench: Bench, embeddings: np.ndarray | None = None) -> dict:
    """Options `run_eval` gives a method: the hybrid tunes its weights on a split of train.csv (and gets the embeddings)."""
    if method in ("hybrid", "interests"):  # interests: the hybrid per interest, with the hybrid's options
        return {"tune": "cold" if bench.candidates is not None else "warm", "embeddings": embeddings}
    return {}


def embedding_choice(value: str | bool) -> str:
    """`run_eval`'s `embeddings`: a model of `digest.embeddings.MODELS` or "none" (True / False: "minilm" / "none")."""
    from digest.embeddings import MODELS

    if isinstance(value, bool):
        return "minilm" if value else "none"
    if value not in (*MODELS, "none"):
        raise DataError(f"unknown embeddings {value!r}; choose from {', '.join((*MODELS, 'none'))}")
    return value


def default_cache_dir() -> Path:
    """Where `digest eval` caches the papers' vectors: $DIGEST_DATA_DIR/cache/embeddings, else ~/.cache/digest/embeddings."""
    import os

    base = os.environ.get("DIGEST_DATA_DIR")
    return (
        Path(base).expanduser() / "cache" / "embeddings" if base else Path.home() / ".cache" / "digest" / "embeddings"
    )


def run_eval(
    path: str | Path,
    ks: Sequence[int] = DEFAULT_KS,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    svm_users: int | None = 500,
    seed: int = 0,
    embeddings: str | bool = "minilm",
    cache_dir: str | Path | None = None,
) -> dict:
    """Evaluate each method on a benchmark folder.

    Returns {"bench": name, "users": N, "methods": {name: {"recall@k": ..., "ndcg@10": ..., "seconds": s,
    "users": n}}}.  `svm` fits one model per user, so it is measured on a random sample of `svm_users`
    users (None: all); its entry then says "sampled": true.  `embeddings` ("minilm", the built-in model,
    by default; "minilm-torch", the extra; "none") feeds sentence embeddings of the papers, cached in
    `cache_dir`, to the hybrid; the time spent getting them is reported as "embedding_seconds" (and
    added to the hybrid's "seconds").
    """
    from digest.rank import make_ranker

    bench = load_bench(path)
    all_users = bench.eval_users
    result: dict = {"bench": bench.name, "users": len(all_users), "methods": {}}
    emb = None
    model = embedding_choice(embeddings)
    if model != "none" and "hybrid" in methods:
        from digest.embeddings import embed_texts, make_encoder

        start = time.perf_counter()
        cb = (lambda done, total: progress("embeddings", done, total)) if progress else None
        emb = embed_texts(
            bench.data.corpus.texts(),
            cache_dir if cache_dir is not None else default_cache_dir(),
            encoder=make_encoder(model),
            progress=cb,
        )
        result["embedding_seconds"] = round(time.perf_counter() - start, 2)
        result["embeddings"] = model
    for method in methods:
        ranker = make_ranker(method, **ranker_options(method, bench, emb))
        users = None
        if method == "svm" and svm_users is not None and len(all_users) > svm_users:
            users = np.sort(np.random.default_rng(seed).choice(all_users, size=svm_users, replace=False))
        cb = (lambda done, total, m=method: progress(m, done, total)) if progress else None
        res = evaluate(ranker, bench, ks, users=users, progress=cb)
        if users is not None:
            res["sampled"] = True
        if method == "hybrid" and emb is not None:
            res["embeddings"] = model
            res["seconds"] = round(res["seconds"] + result["embedding_seconds"], 2)
        tuning = getattr(ranker, "tuning", None)
        if tuning:
            res["tuning"] = tuning
        result["methods"][method] = res
    return result


# -- reporting -----------------------------------------------------------------------------------

# Published / measured figures from the bench README: {split: [(label, k, recall)]}
ANCHORS: dict[str, list[tuple[str, int, float]]] = {
    "citeulike-a-cold": [
        ("DropoutNet-WMF (abstracts)", 100, 0.645),
        ("shared_rep (abstracts)", 100, 0.671),
        ("TF-IDF titles centroid", 100, 0.49),
    ],
    "citeulike-a-p1": [
        ("CTR", 100, 0.095),
        ("CTR", 300, 0.223),
        ("CDL", 100, 0.147),
        ("CDL", 300, 0.244),
        ("CVAE", 100, 0.163),
        ("CVAE", 300, 0.291),
        ("CDL+BERT", 300, 0.315),
        ("TF-IDF titles", 300, 0.141),
    ],
    "citeulike-a-p10": [("TF-IDF titles", 300, 0.351), ("popularity", 300, 0.105)],
}


def parse_list(value: str, *, cast=str) -> list:
    """'10,20, 50' -> [10, 20, 50]; raises ValueError on an empty list or a bad item."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError("empty list")
    return [cast(v) for v in items]


def plot_recall(result: dict, path: str | Path, ks: Sequence[int]) -> Path:
    """Recall@k curves of every method, with the published anchors of the split in the legend; needs matplotlib.

    Each method has its own line style and marker, and a curve within 0.005 of an earlier one at every
    k says so in the legend ("= random"), so floors that coincide (popularity, random and collaborative
    on the cold split) are told apart.  Each anchor is its own marker, with its figure in the legend.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        from digest.errors import DigestError

        raise DigestError("--plot needs matplotlib: pip install 'digest[plot]' (or pip install matplotlib)") from e
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
    markers = ["o", "s", "^", "D", "v", "P", "X", "h"]
    fig, ax = plt.subplots(figsize=(8, 5))
    curves, anchor_labels = plot_labels(result, ks)
    for i, (name, label, overlaps) in enumerate(curves):
        res = result["methods"][name]
        xs = [k for k in ks if f"recall@{k}" in res]
        ax.plot(
            xs,
            [res[f"recall@{k}"] for k in xs],
            linestyle=styles[i % len(styles)],
            marker=markers[i % len(markers)],
            markersize=7 - 1.5 * min(overlaps, 3),  # a curve on top of another is drawn smaller, so both show
            linewidth=2.2 if name == "hybrid" else 1.4,
            label=label,
        )
    anchor_markers = ["*", "p", "<", ">", "d", "8", "H", "+"]
    for j, ((_, k, value), label) in enumerate(zip(ANCHORS.get(result.get("bench", ""), []), anchor_labels)):
        ax.scatter(
            [k],
            [value],
            marker=anchor_markers[j % len(anchor_markers)],
            s=110,
            color="black",
            facecolors="none" if "titles" in label else "black",  # hollow: measured here on titles
            zorder=5,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xticks(list(ks))
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_title(f"{result.get('bench', '')}: {result['users']} users (black: published / measured anchors)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_labels(result: dict, ks: Sequence[int]) -> tuple[list[tuple[str, str, int]], list[str]]:
    """The legend of `plot_recall`: (method, label, how many earlier curves it coincides with) per
    method, where a curve within 0.005 of an earlier one at every k is labelled "name (= other)";
    and one "label: value @k" per published anchor of the split."""
    drawn: list[tuple[str, list[float]]] = []
    curves = []
    for name, res in result["methods"].items():
        ys = [res[f"recall@{k}"] for k in ks if f"recall@{k}" in res]
        same = [other for other, oy in drawn if len(oy) == len(ys) and np.allclose(oy, ys, atol=0.005)]
        curves.append((name, name + (f" (= {', '.join(same)})" if same else ""), len(same)))
        drawn.append((name, ys))
    anchors = [f"{label}: {value:.3f} @{k}" for label, k, value in ANCHORS.get(result.get("bench", ""), [])]
    return curves, anchors
