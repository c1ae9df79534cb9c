"""The daily run at scale: time each stage for 10k, 30k and 100k subscribers on this machine.

    python benchmarks/scale.py                       # 10000, 30000, 100000 subscribers, a table
    python benchmarks/scale.py --users 10000 --json  # one JSON object per size

Each size runs in its own process (so peak memory is that size's alone) on a fresh SQLite file:
a synthetic but realistic population, built untimed, with a corpus of 2 papers per subscriber
(200,000 for 100k) whose text recombines real titles (the bundled sample and the CiteULike titles
in ../shared/bench) and real abstract sentences, grouped into a few hundred interest clusters;
each subscriber likes 5 to 200 papers (log-uniform) from one to three clusters.  Then last
week's full fit of the ranker in a process of its own, as `digest fit` runs it (timed and
measured apart: it runs every `refit_days`), a day of feedback (2% of readers like 1-3 recent
papers), and the daily run, the planner in a fresh process timed stage by stage as
`digest worker --plan` runs it: ingest the day's 2,000 new papers, load the papers and likes,
fold the day into the saved fit, rank (block-scored, with reasons, in forked processes), write
the planned deliveries in bulk, render every digest (HTML + text, one process, measured on its
own), and deliver through worker processes to a local SMTP sink (aiosmtpd, discarding), each
with one reused connection, recording outcomes in bulk.
The arxiv-sanity-style baseline (a LinearSVC per user over the same TF-IDF, C=0.01, balanced) is
timed on a sample of the same users, for the per-user ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "bench" / "citeulike-a-cold" / "papers.jsonl"
SAMPLE = REPO / "digest" / "data" / "sample_papers.jsonl"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CLUSTERS = 300


# -- the synthetic population -------------------------------------------------------------------


def _texts() -> tuple[list[str], list[str]]:
    """Real titles and real abstract sentences to recombine."""
    titles, sentences = [], []
    for path in (SAMPLE, BENCH):
        if not path.exists():
            continue
        for line in path.open(encoding="utf-8"):
            rec = json.loads(line)
            if rec.get("title"):
                titles.append(rec["title"].strip())
            for s in re.split(r"(?<=[.!?])\s+", rec.get("abstract") or ""):
                if len(s) > 40:
                    sentences.append(s.strip())
    return titles, sentences


def make_papers(count: int, rng: random.Random, *, start: int = 0, day: datetime | None = None) -> list:
    """`count` PaperRecords, each in one interest cluster (its id says which: s<cluster>-<n>)."""
    from digest.sources.base import PaperRecord

    titles, sentences = _texts()
    t_pool = [titles[c::CLUSTERS] for c in range(CLUSTERS)]
    s_pool = [sentences[c::CLUSTERS] for c in range(CLUSTERS)]
    surnames = [
        "Chen",
        "Smith",
        "Garcia",
        "Müller",
        "Ivanova",
        "Kim",
        "Okafor",
        "Rossi",
        "Tanaka",
        "Novak",
        "Silva",
        "Dubois",
    ]
    records = []
    for n in range(start, start + count):
        c = rng.randrange(CLUSTERS)
        a, b = rng.sample(t_pool[c], 2)
        wa, wb = a.split(), b.split()
        title = " ".join(wa[: max(1, len(wa) // 2)] + wb[len(wb) // 2 :])
        abstract = " ".join([*rng.sample(s_pool[c], min(4, len(s_pool[c]))), rng.choice(sentences)])
        published = (day or NOW - timedelta(days=30 + n % 3000)).replace(tzinfo=UTC)
        records.append(
            PaperRecord(
                id=f"s{c}-{n}",
                title=title,
                abstract=abstract,
                authors=[
                    f"{rng.choice('ABCDEFGHJKLMNPRSTVW')}. {rng.choice(surnames)}" for _ in range(rng.randint(1, 8))
                ],
                categories=["cs.LG"],
                url="",
                pdf_url="",
                published=published,
                updated=published,
                source="bench",
            )
        )
    return records


def populate(store, users: int, papers: int, rng: random.Random) -> None:
    """The corpus, the subscribers and their likes (untimed set-up)."""
    from digest.db import Kind

    corpus = make_papers(papers, rng)
    past = NOW - timedelta(days=60)
    for start in range(0, len(corpus), 20_000):
        store.upsert_papers(corpus[start : start + 20_000], past)
    by_cluster: dict[int, list[str]] = {}
    for rec in corpus:
        by_cluster.setdefault(int(rec.id[1:].split("-")[0]), []).append(rec.id)
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
    rows = [
        {
            "email": f"u{i}@example.org",
            "name": f"Reader {i}",
            "timezone": rng.choice(zones),
            "send_at": "00:00",
            "max_papers": 10,
            "keywords": ["neural networks"] if i % 10 == 0 else [],
        }
        for i in range(users)
    ]
    ids = store.add_subscribers(rows, past)
    pairs = []
    for sid in ids.values():
        likes = int(math.exp(rng.uniform(math.log(5), math.log(200))))
        clusters = rng.sample(range(CLUSTERS), rng.randint(1, 3))
        pool = [pid for c in clusters for pid in by_cluster.get(c, [])]
        pairs.extend((sid, pid) for pid in rng.sample(pool, min(likes, len(pool))))
    store.add_interactions_many(pairs, Kind.LIKE, past, origin="import")


# -- an SMTP sink -------------------------------------------------------------------------------


def _sink(port: int, ready: multiprocessing.Event, stop: multiprocessing.Event) -> None:
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server, session, envelope) -> str:
            return "250 OK"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


# -- one size -----------------------------------------------------------------------------------


def run_size(users: int, *, new: int, workers: int, svm_sample: int, seed: int = 7) -> dict:
    """One size: the population (untimed), last week's fit, a day of feedback, then the daily run.

    The weekly fit and the planner each run in a process of their own, as `digest fit` and
    `digest worker --plan` do, so each peak is that step's own (not this set-up's leftovers)."""
    from digest.db import Kind, Store
    from digest.settings import load_settings

    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="digest-scale-"))
    url = f"sqlite:///{folder / 'digest.db'}"
    port = 20000 + os.getpid() % 20000
    config = folder / "digest.toml"
    config.write_text(
        f'data_dir = "{folder.as_posix()}"\n[database]\nurl = "{url}"\n[delivery]\nmethod = "smtp"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsender = "Digest <digest@example.org>"\ntimeout = 30\n'
        f'[[sources]]\nkind = "sample"\n',
        encoding="utf-8",
    )
    os.environ.setdefault("DIGEST_SECRET_KEY", "benchmark-secret")
    settings = load_settings(config)
    store = Store(url)
    t = time.perf_counter()
    populate(store, users, 2 * users, rng)
    result: dict = {
        "users": users,
        "corpus": 2 * users,
        "new_papers": new,
        "setup_s": round(time.perf_counter() - t, 1),
    }
    ctx = multiprocessing.get_context("spawn")

    # Last week's full fit (the ranker is refitted every `refit_days`, 7 by default, and saved),
    # as `digest fit` runs it: timed and measured on its own; the daily run starts from the saved fit.
    result.update(_in_own_process(ctx, _weekly_fit, config))
    # a day of feedback: 2% of readers like 1-3 recent papers (their profiles change)
    past = [row[0] for row in store.corpus_rows()[-3 * new :]]
    liked = [
        (sid, p) for sid in rng.sample(range(1, users + 1), users // 50) for p in rng.sample(past, rng.randint(1, 3))
    ]
    store.add_interactions_many(liked, Kind.LIKE, NOW - timedelta(hours=12), origin="web")
    del past, liked
    store.close()

    # The daily run: the planner (what `digest worker --plan` does, stage by stage), then the workers.
    planned = _in_own_process(ctx, _plan, config, new, seed, svm_sample)
    stages = planned.pop("stages")
    result.update(planned)
    ready, stop = ctx.Event(), ctx.Event()
    sink = ctx.Process(target=_sink, args=(port, ready, stop), daemon=True)
    sink.start()
    ready.wait(30)
    from digest.workers import run_workers

    t = time.perf_counter()
    reports = run_workers(settings, NOW, workers)
    stages["deliver_s"] = round(time.perf_counter() - t, 2)
    result["sink_alone_msgs_per_s"] = _sink_ceiling(settings, port, Store(url).subscribers()[:2000], NOW)
    stop.set()
    sink.join(10)
    sent = sum(r.sent for r in reports)
    result["sent"] = sent
    result["deliver_msgs_per_s"] = round(sent / stages["deliver_s"], 1)
    result["workers"] = workers
    result["worker_peak_rss_mb"] = round(max(r.peak_rss_mb for r in reports))
    result.update(stages)
    result["total_s"] = round(sum(v for k, v in stages.items() if k != "render_s"), 1)
    result["svm_ratio"] = round(result["svm_s_per_user"] / (stages["rank_s"] / users))
    result["rank_ms_per_user"] = round(1000 * stages["rank_s"] / users, 3)
    result["peak_rss_mb"] = max(
        result["planner_peak_rss_mb"], result["worker_peak_rss_mb"], result["rank_children_peak_rss_mb"]
    )
    return result


def _in_own_process(ctx, fn, *args):
    """fn(*args) in a fresh (spawned, non-daemonic: it may fork) process; its result or its error."""
    here, there = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(there, fn, args))
    child.start()
    there.close()
    ok, value = here.recv()
    child.join()
    if not ok:
        raise RuntimeError(f"{fn.__name__} failed in its process:\n{value}")
    return value


def _child(conn, fn, args) -> None:
    import traceback

    try:
        conn.send((True, fn(*args)))
    except BaseException:
        conn.send((False, traceback.format_exc()))
        raise


def _weekly_fit(config: Path) -> dict:
    """`digest fit`: a full fit of the ranker, saved; its time and its process's peak."""
    from digest.db import Store
    from digest.pipeline import day_ranker, train_data
    from digest.settings import load_settings
    from digest.workers import peak_rss_mb

    settings = load_settings(config)
    store = Store(settings.database_url)
    t = time.perf_counter()
    _, report = day_ranker(settings, train_data(store, store.subscribers()), NOW - timedelta(days=1))
    assert report.refit
    store.close()
    return {"weekly_fit_s": round(time.perf_counter() - t, 1), "weekly_fit_peak_rss_mb": round(peak_rss_mb())}


def _plan(config: Path, new: int, seed: int, svm_sample: int) -> dict:
    """The planner's day in a fresh process, stage by stage: ingest the day's papers, load the papers
    and likes, fold the day into the saved fit, rank (block-scored, with reasons, in forked
    processes), write the planned deliveries; its peak memory; then (not part of the daily run)
    every digest rendered in this process, and the per-user SVM baseline on a sample."""
    import resource

    import numpy as np

    from digest.compose import compose
    from digest.db import Kind, Store
    from digest.due import local_date
    from digest.links import secret_key
    from digest.pipeline import Due, candidate_papers, day_ranker, rank_subscribers, relevance_floor, train_data
    from digest.settings import load_settings
    from digest.workers import peak_rss_mb, trending_lists, write_plans

    rng = random.Random(seed + 1)
    settings = load_settings(config)
    store = Store(settings.database_url)
    result: dict = {}
    stages: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        stages[name] = round(time.perf_counter() - started, 2)

    t = time.perf_counter()
    store.upsert_papers(make_papers(new, rng, start=10**7, day=NOW - timedelta(hours=6)), NOW)
    stage("ingest_s", t)
    t = time.perf_counter()
    subscribers = store.subscribers()
    data = train_data(store, subscribers)
    stage("load_s", t)
    t = time.perf_counter()
    ranker, day_report = day_ranker(settings, data, NOW)
    assert not day_report.refit, day_report.reason
    stage("update_s", t)
    result["changed_readers"] = day_report.changed_readers
    t = time.perf_counter()
    candidates = candidate_papers(store, data, NOW - timedelta(days=settings.ranking.window_days))
    seen = store.papers_seen(
        [s.id for s in subscribers], [p.id for p in candidates], [Kind.SENT, Kind.LIKE, Kind.DISLIKE, Kind.CLICKED]
    )
    picks = rank_subscribers(
        ranker,
        data,
        subscribers,
        candidates,
        seen,
        diversity=settings.ranking.diversity,
        min_score=relevance_floor(settings, ranker),
        processes=settings.ranking.processes or os.cpu_count() or 1,
    )
    due = [Due(s, local_date(NOW, s.timezone), None, picks[s.id], set(seen.get(s.id, ()))) for s in subscribers]
    trend = trending_lists(data, candidates, due)
    stage("rank_s", t)
    result["rank_children_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    result["candidates"] = len(candidates)
    t = time.perf_counter()
    write_plans(store, settings, due, trend, NOW)
    stage("plan_write_s", t)
    result["planner_peak_rss_mb"] = round(peak_rss_mb())

    # Render on its own: every digest, HTML and text, in this one process (not part of total_s;
    # the workers render again as they send).
    by_id = {p.id: p for p in candidates}
    key = secret_key(settings)
    t = time.perf_counter()
    size = 0
    for sub in subscribers:
        tr = [(by_id[pid], c) for pid, c in trend[sub.id]]
        _, text, html, _ = compose(
            settings, key, sub, local_date(NOW, sub.timezone), picks[sub.id], tr, len(candidates), NOW
        )
        size += len(text) + len(html)
    stage("render_s", t)
    result["mean_digest_kb"] = round(size / max(1, len(subscribers)) / 1024, 1)
    result["render_peak_rss_mb"] = round(peak_rss_mb())  # with every digest rendered in this process
    del picks, trend

    # The per-user SVM baseline, on a sample of the same users.
    from sklearn.svm import LinearSVC

    sample = rng.sample(range(len(data.users)), min(svm_sample, len(data.users)))
    items = ranker.item_features(np.arange(len(data.corpus)))  # the ranker's TF-IDF rows
    rows = data.corpus.ids.indices(p.id for p in candidates)
    t = time.perf_counter()
    for u in sample:
        y = np.zeros(len(data.corpus), dtype=np.int8)
        y[data.likes[u].indices] = 1
        clf = LinearSVC(C=0.01, class_weight="balanced", max_iter=1000, tol=1e-3)
        clf.fit(items, y)
        clf.decision_function(items[rows])
    result["svm_s_per_user"] = round((time.perf_counter() - t) / len(sample), 3)
    store.close()
    return {**result, "stages": stages}


def _sink_ceiling(settings, port: int, subscribers, now: datetime) -> float:
    """Messages per second the sink takes from one client sending ready-made wire bytes (no rendering)."""
    import smtplib

    from digest.deliver import Envelope, message_bytes, parse_sender, recipient

    sender = parse_sender(settings.smtp.sender)
    body = ("x" * 75 + "\n") * 150, ("<p>" + "y" * 150 + "é</p>\n") * 200  # a digest's size and line count
    msgs = [
        (
            s.email,
            message_bytes(
                Envelope(sender, recipient(s.name, s.email), "Digest", f"<{s.id}@x>", now, now.date()),
                *body,
                unsubscribe_url="https://x/u?t=a",
                unsubscribe_mailto="mailto:a@b",
                eight_bit=True,
            ),
        )
        for s in subscribers
    ]
    conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
    t = time.perf_counter()
    for to, data in msgs:
        conn.sendmail(sender.addr_spec, [to], data, mail_options=["BODY=8BITMIME"])
    rate = len(msgs) / (time.perf_counter() - t)
    conn.quit()
    return round(rate, 1)


COLUMNS = [
    "users",
    "corpus",
    "weekly_fit_s",
    "weekly_fit_peak_rss_mb",
    "ingest_s",
    "load_s",
    "update_s",
    "rank_s",
    "plan_write_s",
    "render_s",
    "deliver_s",
    "deliver_msgs_per_s",
    "sink_alone_msgs_per_s",
    "total_s",
    "peak_rss_mb",
    "svm_ratio",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="10000,30000,100000", help="Comma-separated subscriber counts.")
    parser.add_argument("--new", type=int, default=2000, help="New papers in the day.")
    parser.add_argument("--workers", type=int, default=2, help="Delivery worker processes.")
    parser.add_argument("--svm-sample", type=int, default=10, help="Users the SVM baseline is timed on.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object per size.")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_size(args.one, new=args.new, workers=args.workers, svm_sample=args.svm_sample)))
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    results = []
    for n in (int(x) for x in args.users.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--new",
                str(args.new),
                "--workers",
                str(args.workers),
                "--svm-sample",
                str(args.svm_sample),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        if args.json:
            print(json.dumps(res), flush=True)
    if not args.json:
        print(" | ".join(COLUMNS))
        print(" | ".join("---" for _ in COLUMNS))
        for res in results:
            print(" | ".join(str(res.get(c, "")) for c in COLUMNS))


if __name__ == "__main__":
    main()
