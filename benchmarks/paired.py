"""Paired comparison of hybrid settings on CiteULike: per-user differences on the same users and vectors.

    python benchmarks/paired.py [BENCH_DIR] [--splits citeulike-a-cold,citeulike-a-p1,citeulike-a-p10] [--json]

For each split, the hybrid is fitted as `digest eval` fits it (weights tuned inside `fit` on a
validation split of train.csv, the built-in embeddings from the cache `digest eval` uses) once per
setting, and each user's recall@k (k = 100 on cold, 300 otherwise) and nDCG@10 are compared with
the default's: the mean difference and t = mean / standard error over all evaluated users.

Settings: "default" (what `pip install -e .` ranks with), "previous default" (the default of the
previous round: `HybridRanker(emb_center=False, ridge=False)`), "no ridge" (centring alone), "TF-IDF only" (`embeddings = "none"`, the default before it).
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
from digest.evaluate import default_cache_dir, evaluate, load_bench, ranker_options  # noqa: E402
from digest.rank import make_ranker  # noqa: E402

SPLITS = ("citeulike-a-cold", "citeulike-a-p1", "citeulike-a-p10")
SETTINGS: dict[str, dict] = {
    "default": {},
    "previous default": {"emb_center": False, "ridge": False},
    "no ridge": {"ridge": False},
    "TF-IDF only": {"embeddings": None},
}


def compare(path: Path) -> dict:
    bench = load_bench(path)
    k = 100 if bench.candidates is not None else 300
    emb = embed_texts(bench.data.corpus.texts(), default_cache_dir())
    runs = {}
    for name, extra in SETTINGS.items():
        options = {**ranker_options("hybrid", bench, emb), **extra}
        ranker = make_ranker("hybrid", **options)
        res = evaluate(ranker, bench, (k, 10), per_user=True)
        runs[name] = {"res": res, "weights": (ranker.tuning or {}).get("chosen") or ranker.weights}
    base = runs["default"]["res"]["per_user"]
    out: dict = {"split": bench.name, "users": runs["default"]["res"]["users"], "k": k, "settings": {}}
    for name, run in runs.items():
        row: dict = {"weights": run["weights"], "seconds": run["res"]["seconds"]}
        for metric in (f"recall@{k}", "ndcg@10"):
            vals = run["res"]["per_user"][metric]
            row[metric] = round(float(vals.mean()), 4)
            if name != "default":
                d = base[metric] - vals
                row[f"{metric} default minus this"] = round(float(d.mean()), 4)
                row[f"{metric} t"] = round(float(d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))), 1)
        out["settings"][name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="?", default=str(REPO.parent / "shared" / "bench"))
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for split in args.splits.split(","):
        res = compare(Path(args.bench) / split)
        if args.json:
            print(json.dumps(res), flush=True)
            continue
        k = res["k"]
        print(f"{res['split']} ({res['users']} users)")
        for name, row in res["settings"].items():
            diff = (
                ""
                if name == "default"
                else f"  default - this: {row[f'recall@{k} default minus this']:+.4f} "
                f"(t = {row[f'recall@{k} t']}), nDCG {row['ndcg@10 default minus this']:+.4f} (t = {row['ndcg@10 t']})"
            )
            print(f"  {name:<30} recall@{k} {row[f'recall@{k}']:.4f}  nDCG@10 {row['ndcg@10']:.4f}{diff}", flush=True)


if __name__ == "__main__":
    main()
