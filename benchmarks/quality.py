"""Ranking quality on CiteULike: every method on the three splits of the shared benchmark folder.

    python benchmarks/quality.py [BENCH_DIR] [--json] [--methods ...] [--k ...] [--svm-users N]
    python benchmarks/quality.py --encode 2000     # seconds to embed 2,000 new papers (title + abstract)

BENCH_DIR defaults to ../shared/bench relative to the repository (read-only data, never copied here).
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

from digest.evaluate import DEFAULT_METHODS, run_eval  # noqa: E402

SPLITS = ("citeulike-a-cold", "citeulike-a-p1", "citeulike-a-p10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="?", default=str(REPO.parent / "shared" / "bench"))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--k", default="10,20,50,100,300")
    ap.add_argument("--svm-users", type=int, default=500, help="users sampled for svm (0: all)")
    ap.add_argument("--splits", default=",".join(SPLITS))
    ap.add_argument(
        "--embeddings",
        default="minilm",
        help='sentence embeddings for the hybrid: "minilm" (built in), "minilm-torch" (the extra) or "none"',
    )
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="embedding cache (default $DIGEST_DATA_DIR/cache/embeddings or ~/.cache/digest/embeddings)",
    )
    ap.add_argument(
        "--encode",
        type=int,
        default=0,
        help="only time the embedding of this many title + abstract texts (the bundled sample papers, repeated)",
    )
    args = ap.parse_args()
    if args.encode:
        print(json.dumps(time_encoding(args.encode, args.embeddings)))
        return
    ks = [int(k) for k in args.k.split(",")]
    methods = args.methods.split(",")
    out = {"machine": {"cpus": os.cpu_count()}, "splits": {}}
    for split in args.splits.split(","):
        t = time.perf_counter()
        res = run_eval(
            Path(args.bench) / split,
            ks,
            methods,
            svm_users=args.svm_users or None,
            embeddings=args.embeddings,
            cache_dir=args.cache_dir,
        )
        res["seconds"] = round(time.perf_counter() - t, 1)
        out["splits"][split] = res
        if not args.json:
            print(
                f"\n{split}: {res['users']} users ({res['seconds']} s)"
                + (f", embeddings {res['embedding_seconds']} s" if "embedding_seconds" in res else "")
            )
            print(
                f"{'method':<14}" + "".join(f"{'R@' + str(k):>9}" for k in ks) + f"{'nDCG@10':>9}{'users':>7}{'sec':>8}"
            )
            for name, r in res["methods"].items():
                print(
                    f"{name:<14}"
                    + "".join(f"{r[f'recall@{k}']:>9.4f}" for k in ks)
                    + f"{r['ndcg@10']:>9.4f}{r['users']:>7}{r['seconds']:>8.1f}"
                    + (" (sampled)" if r.get("sampled") else "")
                )
                if r.get("tuning"):
                    print(f"{'':<14}tuning: {r['tuning']}")
            sys.stdout.flush()
    if args.json:
        print(json.dumps(out))


def time_encoding(n: int, model: str) -> dict:
    """Seconds to embed n new papers' title + abstract (the daily digest's job), without a cache."""
    from digest.embeddings import make_encoder
    from digest.resources import sample_corpus_path

    papers = [json.loads(line) for line in sample_corpus_path().read_text(encoding="utf-8").splitlines() if line]
    texts = [f"{p['title']}. {p.get('abstract') or ''}" for p in papers]
    texts = [f"{t} ({i // len(texts)})" if i >= len(texts) else t for i, t in enumerate(texts * (n // len(texts) + 1))][
        :n
    ]
    encoder = make_encoder(model)
    start = time.perf_counter()
    encoder.encode(texts[:1])  # loading the model
    loaded = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    encoder.encode(texts)
    return {
        "cpu_seconds": round(time.process_time() - cpu, 2),  # of both threads: about the wall time x 2 on idle cores
        "texts": n,
        "model": model,
        "load_seconds": round(loaded, 2),
        "encode_seconds": round(time.perf_counter() - start, 2),
        "loadavg": os.getloadavg(),
    }


if __name__ == "__main__":
    main()
