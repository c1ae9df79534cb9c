"""The daily run and the workers are one path over one delivery queue.  The faults both modes meet
are in tests/test_delivery_faults.py (each parametrized over mode x backend); here are what only
the planner shows (the weekly window) and the two modes sending one day side by side (a cron
`digest send` beside running `digest worker`s), on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta
from pathlib import Path

from digest.db import DeliveryStatus
from digest.pipeline import run_daily
from digest.settings import load_settings
from digest.workers import plan_day

from .faulty_smtp import Server
from .test_delivery_faults import (
    NOW,
    deliveries,
    no_sleep,
    opened,
    planner_and_workers,
    started,
    worker_cmd,
    write_config,
)


def test_weekly_readers_get_the_week_from_the_planner(tmp_path: Path, server: Server, database_url: str) -> None:
    """A weekly reader's planned digest picks from the whole week, as the daily run's does."""
    server.start()
    config = write_config(tmp_path, server.port, emails=["weekly@example.org"], database_url=database_url)
    text = config.read_text().replace(
        'send_at = "08:00"\n', 'send_at = "08:00"\nfrequency = "weekly"\nweekly_day = "monday"\n'
    )
    config.write_text(text.replace("max_papers = 3", "max_papers = 12"))
    lines = (tmp_path / "papers.jsonl").read_text().splitlines()
    old = json.loads(lines[0]) | {
        "id": "2611.99999",
        "title": "Five days old segmentation paper",
        "published": (NOW - timedelta(days=5)).isoformat(),
    }
    (tmp_path / "papers.jsonl").write_text("\n".join([*lines, json.dumps(old)]) + "\n")
    settings = load_settings(config)
    assert NOW.strftime("%A") == "Monday"
    settings = settings.model_copy(update={"ranking": settings.ranking.model_copy(update={"window_days": 2})})
    assert planner_and_workers(settings, NOW).sent == 1
    [msg] = server.inbox.messages
    body = msg.get_body(("plain",))
    assert body is not None and "Five days old segmentation paper" in body.get_content()


def test_a_cron_send_beside_running_workers_sends_each_digest_once(
    tmp_path: Path, server: Server, database_url: str
) -> None:
    """Two `digest worker` processes are sending a planned day, each holding a claimed batch, when a
    cron `digest send` (the daily run, here in this process) starts: the send takes only the rows no
    worker holds, the workers go on, and every reader gets exactly one digest."""
    emails = [f"r{i}@example.org" for i in range(12)]
    cron_sent = threading.Event()

    async def hold_workers(connection: int, count: int) -> None:
        if connection >= 2:  # a third connection: the cron's
            cron_sent.set()
        elif count == 2:  # each worker's second message waits (its batch claimed) until the cron has sent one
            await server.inbox.wait_for(cron_sent, 15)

    server.inbox.on_message = hold_workers
    server.start()
    config = write_config(tmp_path, server.port, emails=emails, database_url=database_url)
    settings = load_settings(config)
    with opened(settings) as store:
        assert plan_day(store, settings, NOW).planned == 12
    with started(worker_cmd(config, batch=3), tmp_path) as one, started(worker_cmd(config, batch=3), tmp_path) as two:
        deadline = time.monotonic() + 60
        while len(server.inbox.sessions) < 2 and time.monotonic() < deadline:  # both workers are sending
            assert one.poll() is None and two.poll() is None, "a worker stopped before it sent"
            time.sleep(0.02)
        assert len(server.inbox.sessions) == 2, server.inbox.sessions
        cron = run_daily(NOW, settings, sleep=no_sleep)
        assert cron_sent.is_set() and one.poll() is None and two.poll() is None  # it sent beside them
        outputs = [one.communicate(timeout=120)[0], two.communicate(timeout=120)[0]]
    assert [one.returncode, two.returncode] == [0, 0], outputs
    twice = {e for e, n in server.inbox.count().items() if n > 1}
    assert not twice, [(o.email, o.status, o.detail) for o in cron.outcomes if o.email in twice]
    assert server.inbox.count() == {e: 1 for e in emails}
    assert {d.status for d in deliveries(settings).values()} == {DeliveryStatus.SENT}
    by_workers = sum(int(n) for out in outputs for n in re.findall(r": (\d+) sent,", out))
    assert by_workers >= 4 and cron.by_status()["sent"] >= 1, (by_workers, cron.by_status())
    assert by_workers + cron.by_status()["sent"] == 12, (by_workers, cron.by_status(), outputs)
