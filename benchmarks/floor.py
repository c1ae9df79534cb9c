"""What the relevance floor keeps and what it costs, on CiteULike: the README's floor table.

    python benchmarks/floor.py [BENCH_DIR] [--splits citeulike-a-cold,citeulike-a-p1] [--floors 0.3,0.5]
                               [--users 800] [--json]

One fit per split of the hybrid as `digest eval` fits it (tuned on train.csv, the built-in
embeddings); then, for a fixed random sample of `--users` readers and each floor, the share of
the candidates at or above it (what a day keeps), the share of the held-out likes below it (good
papers a thin day would not send) and the share of the top-10 hits below it (hits a full day would
lose).  The floor only acts in the daily digest; `digest eval` never applies it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from digest.embeddings import embed_texts  # noqa: E402
from digest.evaluate import default_cache_dir, load_bench, ranker_options  # noqa: E402
from digest.rank import make_ranker  # noqa: E402


def measure(path: Path, floors: list[float], n_users: int, seed: int = 0) -> dict:
    bench = load_bench(path)
    emb = embed_texts(bench.data.corpus.texts(), default_cache_dir())
    ranker = make_ranker("hybrid", **ranker_options("hybrid", bench, emb)).fit(bench.data)
    users = bench.eval_users
    if len(users) > n_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=n_users, replace=False))
    cands = bench.candidates if bench.candidates is not None else np.arange(len(bench.data.corpus))
    scores = np.asarray(ranker.score(users, cands), dtype=np.float32).copy()
    liked = bench.data.likes[users][:, cands].toarray() > 0
    truth = bench.test[users][:, cands].toarray() > 0
    scores[liked] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    top_scores = np.take_along_axis(scores, top, axis=1)
    top_hits = np.take_along_axis(truth, top, axis=1)
    rows = []
    for floor in floors:
        rows.append(
            {
                "floor": floor,
                "candidates_left": float((scores >= floor)[~liked].mean()),
                "held_out_below": float((scores < floor)[truth].mean()),
                "top10_hits_lost": float((top_scores < floor)[top_hits].mean()) if top_hits.any() else 0.0,
            }
        )
    return {"split": bench.name, "users": len(users), "weights": ranker.weights, "floors": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="?", default=str(REPO.parent / "shared" / "bench"))
    parser.add_argument("--splits", default="citeulike-a-cold,citeulike-a-p1")
    parser.add_argument("--floors", default="0.3,0.4,0.5,0.75,1.0")
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    floors = [float(f) for f in args.floors.split(",")]
    results = [measure(Path(args.bench) / s, floors, args.users) for s in args.splits.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'split':<18} {'floor':>6} {'candidates left':>16} {'held-out below':>15} {'top-10 hits lost':>17}")
    for res in results:
        for row in res["floors"]:
            print(
                f"{res['split']:<18} {row['floor']:>6.2f} {row['candidates_left']:>16.1%} "
                f"{row['held_out_below']:>15.1%} {row['top10_hits_lost']:>17.1%}"
            )


if __name__ == "__main__":
    main()
