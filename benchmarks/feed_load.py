"""The personal Atom feed under 200 polling clients: what a poll costs the server, 304 and 200.

    python benchmarks/feed_load.py                 # 200 readers and clients, 10 s per phase, a text report
    python benchmarks/feed_load.py --json          # the same figures as one JSON object
    python benchmarks/feed_load.py --seconds 20 --clients 100

A temporary data folder with a SQLite file: --readers readers (benchmarks/scale.py's synthetic
population), each with --days delivered daily digests of 10 papers (reasons and highlights
filled), so each feed is as long as a daily reader's gets (300 entries).  A real `digest serve`
process on a free localhost port; --clients concurrent clients (httpx, asyncio, each its own
connection and X-Forwarded-For address), each polling one reader's feed with no pause, in three
bounded phases of --seconds each:

    304     every poll conditional (If-None-Match with the ETag it holds): a feed reader's usual poll
    200     every poll unconditional: the whole feed built and sent each time
    mixed   9 polls in 10 conditional, 1 unconditional (readers whose feed changed, or new readers)

Per phase: requests/s, latency p50/p95 per status, and the server process's CPU time (user +
system, from /proc) per response, which is the cost that matters when readers poll every 15
minutes.  web.link_limit is at its maximum so the limiter counts every poll (a row written per
poll, as in production) but refuses none.  A bad status or a transport error counts as an error.
The clients run on the same machine and share its cores with the server: their CPU is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from web_load import KEY, _free_port, _percentiles, cpu_seconds, machine, serve  # noqa: E402

TIMEOUT = 60.0
PER_DIGEST = 10

CONFIG = """
data_dir = "{data}"

[delivery]
method = "outbox"

[web]
base_url = "http://127.0.0.1:{port}"
link_limit = 100000
"""


def build(folder: Path, readers: int, days: int, seed: int) -> tuple[Path, list[str]]:
    """Config, database, readers and their delivered digests; returns (config path, feed paths)."""
    from scale import make_papers

    from digest import links
    from digest.db import DeliveryStatus, Store
    from digest.settings import load_settings

    port = _free_port()
    config = folder / "digest.toml"
    config.write_text(CONFIG.format(data=(folder / "data").as_posix(), port=port), encoding="utf-8")
    settings = load_settings(config, env={"DIGEST_SECRET_KEY": KEY})
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    store = Store(settings.database_url)
    try:
        corpus = make_papers(readers * days * PER_DIGEST // 4 + 100, rng, day=now - timedelta(days=days + 1))
        store.upsert_papers(corpus, now - timedelta(days=days + 1))
        ids = list(
            store.add_subscribers(
                [{"email": f"reader{i}@example.org", "name": f"Reader {i}"} for i in range(readers)],
                now - timedelta(days=days + 1),
            ).values()
        )
        pids = [p.id for p in corpus]
        plans = []
        for sid in ids:
            for d in range(days):
                day = (now - timedelta(days=d)).date()
                picks = rng.sample(pids, PER_DIGEST)
                plans.append(
                    {
                        "subscriber_id": sid,
                        "digest_date": day,
                        "papers": picks,
                        "reasons": [f"similar to {rng.choice(pids)} you liked" for _ in picks],
                        "highlights": ["We show that the method matters on every benchmark we tried." for _ in picks],
                        "message_id": f"<{sid}.{day}@bench>",
                        "status": str(DeliveryStatus.SENT),
                        "sent_at": datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=7),
                    }
                )
        store.plan_deliveries(plans, now)
        feeds = [
            "/feed?t=" + links.feed_url(settings, KEY, sid, "").split("t=", 1)[1] for sid in ids
        ]  # the reader's own link, as the email footer carries it
    finally:
        store.close()
    return config, feeds


@dataclass
class Tally:
    """Latencies (seconds) by status, and errors, of one phase."""

    by_status: dict[int, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, status: int, seconds: float) -> None:
        self.by_status.setdefault(status, []).append(seconds)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def poller(
    http: httpx.AsyncClient, path: str, etag: str, share_200: float, until: float, tally: Tally, rng: random.Random
) -> None:
    """One client polling one feed with no pause until `until`: conditional, or with `share_200`
    odds unconditional (the whole feed)."""
    while time.monotonic() < until:
        fresh = rng.random() < share_200
        headers = {} if fresh else {"If-None-Match": etag}
        start = time.perf_counter()
        try:
            response = await http.get(path, headers=headers)
        except httpx.HTTPError as e:
            tally.error(type(e).__name__)
            continue
        took = time.perf_counter() - start
        expected = 200 if fresh else 304
        if response.status_code != expected or (fresh and not response.content.startswith(b"<?xml")):
            tally.error(f"status {response.status_code}")
            continue
        tally.add(response.status_code, took)


async def phase(
    clients: list[httpx.AsyncClient], feeds: list[str], etags: list[str], share_200: float, seconds: float, pid: int
) -> dict:
    tally = Tally()
    rng = random.Random(len(feeds))
    server0, here0, wall0 = cpu_seconds(pid), cpu_seconds(), time.monotonic()
    until = wall0 + seconds
    await asyncio.gather(
        *(
            poller(c, feeds[i % len(feeds)], etags[i % len(feeds)], share_200, until, tally, rng)
            for i, c in enumerate(clients)
        )
    )
    wall = time.monotonic() - wall0
    server, here = cpu_seconds(pid) - server0, cpu_seconds() - here0
    answered = sum(len(v) for v in tally.by_status.values())
    out: dict = {
        "seconds": round(wall, 1),
        "requests": answered + sum(tally.errors.values()),
        "requests_per_s": round(answered / wall, 1),
        "errors": dict(tally.errors),
        "server_cpu_share": round(server / wall, 2),  # 1.0: one core busy all the time
        "clients_cpu_share": round(here / wall, 2),
        "server_cpu_ms_per_request": round(1000 * server / answered, 3) if answered else None,
    }
    for status, values in sorted(tally.by_status.items()):
        out[str(status)] = {"count": len(values), **_percentiles(values)}
    return out


async def run(base: str, feeds: list[str], n_clients: int, seconds: float, pid: int) -> dict:
    clients = [
        httpx.AsyncClient(
            base_url=base,
            timeout=TIMEOUT,
            headers={"X-Forwarded-For": f"10.1.{n // 250}.{n % 250 + 1}"},
            limits=httpx.Limits(max_connections=1),
        )
        for n in range(n_clients)
    ]
    try:
        etags, sizes = [], []
        for path in feeds:  # each reader's first poll: the whole feed, and its ETag
            first = await clients[0].get(path)
            first.raise_for_status()
            etags.append(first.headers["etag"])
            sizes.append(len(first.content))
        return {
            "feed_bytes": {"min": min(sizes), "max": max(sizes)},
            "304": await phase(clients, feeds, etags, 0.0, seconds, pid),
            "200": await phase(clients, feeds, etags, 1.0, seconds, pid),
            "mixed": await phase(clients, feeds, etags, 0.1, seconds, pid),
        }
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def text_report(res: dict) -> str:
    lines = [
        f"{res['readers']} readers x {res['days']} digests of {PER_DIGEST} papers; feed {res['feed_bytes']['max']:,} bytes; "
        f"{res['clients']} clients, {res['seconds_per_phase']:g} s per phase",
        f"machine: {res['machine']['cpus']} x {res['machine']['cpu']}, load before {res['machine']['load_average_before']}",
    ]
    for name in ("304", "200", "mixed"):
        p = res[name]
        lines.append(
            f"{name:>5}: {p['requests_per_s']:7.1f} req/s, server CPU {p['server_cpu_ms_per_request']} ms/request "
            f"(server {p['server_cpu_share']:.2f} cores, clients {p['clients_cpu_share']:.2f}), errors {p['errors'] or 0}"
        )
        for status in ("200", "304"):
            if status in p:
                s = p[status]
                lines.append(
                    f"       {status}: n={s['count']}, p50 {s['p50']} ms, p95 {s['p95']} ms, max {s['max']} ms"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=200, help="readers, each with their own feed")
    parser.add_argument("--days", type=int, default=30, help="delivered daily digests per reader")
    parser.add_argument("--clients", type=int, default=200, help="concurrent polling clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (304, 200, mixed)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="digest-feed-load-"))
    try:
        config, feeds = build(folder, args.readers, args.days, args.seed)
        base = "http://127.0.0.1:" + config.read_text().split("127.0.0.1:", 1)[1].split('"', 1)[0]
        info = machine()
        server = serve(folder, config, base)
        try:
            res = asyncio.run(run(base, feeds, args.clients, args.seconds, server.pid))
        finally:
            server.terminate()
            server.wait(10)
        res |= {
            "readers": args.readers,
            "days": args.days,
            "clients": args.clients,
            "seconds_per_phase": args.seconds,
            "machine": info,
        }
        print(json.dumps(res, indent=2) if args.json else text_report(res))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
