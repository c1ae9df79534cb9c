"""Per-interest ranking against the blended list on CiteULike: does a section per interest lose recall?

    python benchmarks/interests.py [BENCH_DIR] [--splits citeulike-a-p10,citeulike-a-cold] [--json]

One fit per split of `interests` (digest.rank.interests.InterestRanker: the hybrid, tuned as
`digest eval` tunes it, with each user's training likes clustered as the daily digest clusters a
reader's likes, and one profile per cluster folded in); the blended list is the same fit's hybrid
(`ranker.base`, whose real users the fold-in leaves unchanged), so both are measured on one fit.
Reported for every user and for the users the clustering split into two or more interests (the
only ones whose ranking differs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from digest.evaluate import evaluate, load_bench, ranker_options  # noqa: E402
from digest.rank.interests import InterestRanker  # noqa: E402

KS = (10, 20, 50, 100, 300)


def measure(path: Path) -> dict:
    bench = load_bench(path)
    start = time.perf_counter()
    ranker = InterestRanker(**ranker_options("interests", bench)).fit(bench.data)
    fit_seconds = time.perf_counter() - start
    split = np.array(sorted(u for u in ranker.rows if u in set(bench.eval_users.tolist())), dtype=np.int64)
    sizes = [len(ranker.rows[u]) for u in split.tolist()]
    out: dict = {
        "bench": bench.name,
        "users": len(bench.eval_users),
        "users_with_interests": len(split),
        "interests_per_such_user": round(float(np.mean(sizes)), 2) if sizes else 0.0,
        "fit_seconds": round(fit_seconds, 1),
    }
    for label, users in (("all", None), ("with_interests", split)):
        if users is not None and not len(users):
            continue
        out[f"blended_{label}"] = evaluate(ranker.base, bench, KS, users=users, fit=False)
        out[f"interests_{label}"] = evaluate(ranker, bench, KS, users=users, fit=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="?", default=str(REPO.parent / "shared" / "bench"))
    ap.add_argument("--splits", default="citeulike-a-p10,citeulike-a-cold")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--min-separation",
        type=float,
        default=None,
        help="the clustering's silhouette threshold (default: the daily digest's, interests.MIN_SEPARATION)",
    )
    args = ap.parse_args()
    if args.min_separation is not None:
        from digest.rank import interests

        interests.MIN_SEPARATION = args.min_separation
    results = [measure(Path(args.bench) / s) for s in args.splits.split(",") if s]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(
            f"{r['bench']}: {r['users']} users, {r['users_with_interests']} with 2+ interests "
            f"({r['interests_per_such_user']} each), fit {r['fit_seconds']} s"
        )
        for label in ("all", "with_interests"):
            for method in ("blended", "interests"):
                res = r.get(f"{method}_{label}")
                if res:
                    cells = "  ".join(f"r@{k} {res[f'recall@{k}']:.4f}" for k in KS)
                    print(f"  {label:15s} {method:10s} {cells}  nDCG@10 {res['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
