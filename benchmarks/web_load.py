"""The web front under load while a daily send writes to the same SQLite file.

    python benchmarks/web_load.py                  # 2,000 readers, 50 clients, a text report
    python benchmarks/web_load.py --json           # the same figures as one JSON object
    python benchmarks/web_load.py --baseline 20    # first 20 s of the same load without a send
    python benchmarks/web_load.py --clients 0      # the send alone, for its duration

A temporary data folder with a SQLite file: 2,000 readers, a corpus of 2 papers per reader with
their likes (benchmarks/scale.py's synthetic population) and the day's new papers.  A real
`digest serve` process on a free localhost port; then a real `digest send --force` of every reader
(delivery to the outbox, so no mail server is needed) in its own process, and, for as long as the
send runs (at most --max-seconds), 50 concurrent clients (httpx, asyncio, each with its own cookie
jar and its own X-Forwarded-For address, so each is its own client to the rate limiter) that
each open a fresh signed "more / fewer like this" link (GET, the question page) and press its
button (POST with the page's CSRF cookie and token), over and over with no pause.

Every request counts: an error is a transport error, a timeout (60 s) or an answer that is not
the expected page (the question with its form; "Thanks, noted").  The report gives p50, p95, p99
and max latency of all requests (and of GET and POST apart), the request count, the errors by
kind, and the send's duration and exit code.  web.link_limit is set to its maximum, so the limiter
counts (writes a row for) every hit but refuses none: this measures the database, not the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from digest.settings import Settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
KEY = "web-load-benchmark-key-not-a-secret"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TIMEOUT = 60.0  # seconds a client waits for an answer (SQLite alone may wait 30 s for a lock)

CONFIG = """
data_dir = "{data}"

[delivery]
method = "outbox"

[web]
base_url = "http://127.0.0.1:{port}"
link_limit = 100000

[[sources]]
kind = "sample"
"""


# -- the world ------------------------------------------------------------------------------------


def build(folder: Path, readers: int, new_papers: int, seed: int) -> tuple[Path, list[int], list[str]]:
    """Config, database and population; returns (config path, reader ids, today's paper ids)."""
    from scale import make_papers, populate

    from digest.db import Store
    from digest.settings import load_settings

    port = _free_port()
    config = folder / "digest.toml"
    config.write_text(CONFIG.format(data=(folder / "data").as_posix(), port=port), encoding="utf-8")
    settings = load_settings(config, env={"DIGEST_SECRET_KEY": KEY})
    rng = random.Random(seed)
    store = Store(settings.database_url)
    try:
        populate(store, readers, 2 * readers, rng)
        now = datetime.now(UTC)
        today = make_papers(new_papers, rng, start=10**7, day=now - timedelta(hours=6))
        store.upsert_papers(today, now)
        ids = [s.id for s in store.subscribers() if s.id is not None]
    finally:
        store.close()
    return config, ids, [p.id for p in today]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one by default) so far."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return env | {"DIGEST_SECRET_KEY": KEY, "DIGEST_DATA_DIR": str(folder / "data"), "OPENBLAS_NUM_THREADS": "1"}


def serve(folder: Path, config: Path, base: str) -> subprocess.Popen[bytes]:
    """`digest serve` in its own process, once it answers."""
    port = base.rsplit(":", 1)[1]
    with (folder / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", "serve", "--host", "127.0.0.1", "--port", port, "--config", str(config)],
            env=_env(folder),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError("digest serve exited: " + (folder / "serve.log").read_text(errors="replace"))
        try:
            if httpx.get(base + "/subscribe", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("digest serve did not start: " + (folder / "serve.log").read_text(errors="replace"))
        time.sleep(0.1)


# -- the clients ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Latencies (seconds) by method and errors by kind, for one phase."""

    get: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def report(self, seconds: float, cpu: dict[str, float]) -> dict:
        every = self.get + self.post
        return {
            "seconds": round(seconds, 1),
            "cpu_share": {name: round(used / seconds, 2) for name, used in cpu.items()},  # 1.0: one core busy
            "requests": len(every) + sum(self.errors.values()),
            "requests_per_s": round((len(every) + sum(self.errors.values())) / seconds, 1) if seconds else 0.0,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "all_ms": _percentiles(every),
            "get_ms": _percentiles(self.get),
            "post_ms": _percentiles(self.post),
        }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(1000 * ordered[-1], 1),
        "mean": round(1000 * statistics.fmean(ordered), 1),
    }


def browser(n: int, base: str) -> httpx.AsyncClient:
    """Client `n`'s own connection, cookie jar and address (made before any clock starts: making
    one costs ~20 ms of CPU for its TLS context, which would stall the other clients' timers)."""
    return httpx.AsyncClient(
        base_url=base, timeout=TIMEOUT, headers={"X-Forwarded-For": f"10.0.{n // 250}.{n % 250 + 1}"}
    )


async def client(
    http: httpx.AsyncClient,
    base: str,
    settings: Settings,
    readers: list[int],
    papers: list[str],
    stop: asyncio.Event,
    tally: Tally,
    rng: random.Random,
) -> None:
    """One reader's browser: open a fresh feedback link, press its button, again until `stop`."""
    from digest import links

    async with http:
        while not stop.is_set():
            kind = rng.choice(("like", "dislike"))
            path = links.feedback_url(settings, KEY, rng.choice(readers), rng.choice(papers), kind).removeprefix(base)
            t = time.perf_counter()
            try:
                page = await http.get(path)
            except httpx.HTTPError as e:
                tally.error(f"GET {type(e).__name__}")
                continue
            tally.get.append(time.perf_counter() - t)
            token = CSRF.search(page.text)
            if page.status_code != 200 or token is None:
                tally.error(f"GET {page.status_code}")
                continue
            t = time.perf_counter()
            try:
                done = await http.post(path, data={"csrf": token.group(1)})
            except httpx.HTTPError as e:
                tally.error(f"POST {type(e).__name__}")
                continue
            tally.post.append(time.perf_counter() - t)
            if done.status_code != 200 or "Thanks, noted" not in done.text:
                tally.error(f"POST {done.status_code}")


async def load(
    base: str,
    settings: Settings,
    readers: list[int],
    papers: list[str],
    clients: int,
    until: asyncio.Future | None,
    seconds: float,
    seed: int,
    server: int,
) -> dict:
    """`clients` clients until `until` is done (the send ended) or `seconds` have passed: the phase's report."""
    stop, tally = asyncio.Event(), Tally()
    cpu = {"server": cpu_seconds(server), "clients": cpu_seconds()}
    rng = random.Random(seed)
    browsers = [browser(n, base) for n in range(clients)]
    tasks = [
        asyncio.create_task(client(http, base, settings, readers, papers, stop, tally, random.Random(rng.random())))
        for http in browsers
    ]
    t = time.perf_counter()
    try:
        if until is None:
            await asyncio.sleep(seconds)
        else:
            await asyncio.wait_for(asyncio.shield(until), seconds)
    except TimeoutError:
        pass
    stop.set()
    elapsed = time.perf_counter() - t
    used = {"server": cpu_seconds(server) - cpu["server"], "clients": cpu_seconds() - cpu["clients"]}
    await asyncio.gather(*tasks)  # each finishes the request it is in
    return tally.report(elapsed, used)


async def send_and_load(
    folder: Path,
    config: Path,
    base: str,
    settings: Settings,
    readers: list[int],
    papers: list[str],
    server: int,
    args: argparse.Namespace,
) -> dict:
    result: dict = {}
    if args.baseline:
        result["baseline"] = await load(
            base, settings, readers, papers, args.clients, None, args.baseline, args.seed, server
        )
    log = (folder / "send.log").open("wb")
    started = time.perf_counter()
    send = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "digest",
        "send",
        "--force",
        "--config",
        str(config),
        env=_env(folder),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ended = asyncio.ensure_future(send.wait())
    result["during_send"] = await load(
        base, settings, readers, papers, args.clients, ended, args.max_seconds, args.seed + 1, server
    )
    finished = ended.done()
    if not finished:
        send.terminate()
    code = await ended
    log.close()
    result["send"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "exit_code": code,
        "finished": finished,
        "outbox_messages": sum(1 for _ in (folder / "data" / "outbox").rglob("*.eml")),
    }
    return result


# -- the report -----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def _server_faults(folder: Path) -> int:
    """5xx answers and tracebacks in the server's log."""
    text = (folder / "serve.log").read_text(errors="replace")
    return len(re.findall(r'HTTP/1\.[01]" 5\d\d|Traceback', text))


def text_report(res: dict) -> str:
    m = res["machine"]
    lines = [
        (
            f"{res['readers']} readers, {res['clients']} clients, {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, "
            f"SQLite {m['sqlite']}, load average before {m['load_average_before']}"
        )
    ]
    for phase in ("baseline", "during_send"):
        if phase not in res:
            continue
        p = res[phase]
        lines.append(
            f"{phase}: {p['requests']} requests in {p['seconds']} s ({p['requests_per_s']}/s), "
            f"{p['errors']} errors {p['errors_by_kind'] or ''}; CPU (cores) server {p['cpu_share']['server']}, "
            f"clients {p['cpu_share']['clients']}"
        )
        for name in ("all_ms", "get_ms", "post_ms"):
            q = p[name]
            if q:
                lines.append(f"  {name[:-3]:>4} ms: p50 {q['p50']}  p95 {q['p95']}  p99 {q['p99']}  max {q['max']}")
    s = res["send"]
    lines.append(
        f"digest send --force: {s['seconds']} s, exit code {s['exit_code']}, {s['outbox_messages']} messages "
        f"in the outbox{'' if s['finished'] else ' (stopped at --max-seconds)'}"
    )
    lines.append(f"server log: {res['server_faults']} 5xx answers or tracebacks")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=2000, help="Readers in the database (all get the send).")
    parser.add_argument("--clients", type=int, default=50, help="Concurrent web clients.")
    parser.add_argument("--new-papers", type=int, default=500, help="Today's new papers (the send's candidates).")
    parser.add_argument(
        "--max-seconds", type=float, default=600, help="The load stops after this even if the send has not."
    )
    parser.add_argument("--baseline", type=float, default=0, help="Seconds of the same load without a send, first.")
    parser.add_argument("--seed", type=int, default=7, help="Random seed of the population and the clients.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary data folder (its path is printed).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    args = parser.parse_args()

    from digest.settings import load_settings

    folder = Path(tempfile.mkdtemp(prefix="digest-web-load-"))
    result: dict = {"readers": args.readers, "clients": args.clients, "machine": machine()}
    t = time.perf_counter()
    config, readers, papers = build(folder, args.readers, args.new_papers, args.seed)
    result["setup_s"] = round(time.perf_counter() - t, 1)
    settings = load_settings(config, env={"DIGEST_SECRET_KEY": KEY})
    base = settings.web.base_url
    server = serve(folder, config, base)
    try:
        result |= asyncio.run(send_and_load(folder, config, base, settings, readers, papers, server.pid, args))
    finally:
        server.terminate()
        server.wait(10)
    result["server_faults"] = _server_faults(folder)
    if args.keep:
        result["folder"] = str(folder)
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result) if args.json else text_report(result))


if __name__ == "__main__":
    main()
