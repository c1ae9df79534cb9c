"""The daily run and the workers are one path over one delivery queue: the same promises, shown by
the same faults in both modes (one process; a planner and workers), against a real SMTP server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from digest.pipeline import RunReport, run_daily
from digest.settings import Settings, load_settings
from digest.store import Store
from digest.workers import plan_day, work

from .faulty_smtp import Server
from .test_delivery_faults import EMAILS, NOW, child_env, no_sleep, rows, send_cmd, write_config

Day = Callable[[Settings, datetime], object]


def daily(settings: Settings, now: datetime) -> RunReport:
    return run_daily(now, settings, sleep=no_sleep)


def planner_and_workers(settings: Settings, now: datetime) -> None:
    """`digest worker --plan` then four workers taking turns on the claimed rows (in-process)."""
    store = Store(settings.database_url)
    try:
        plan_day(store, settings, now)
        for i in range(4):
            work(store, settings, now, worker=f"test:w{i}", batch=2, clock=lambda: now, sleep=no_sleep)
    finally:
        store.close()


MODES = {"daily": daily, "workers": planner_and_workers}


@pytest.mark.parametrize("mode", MODES)
def test_server_down_then_up_the_same_promises(tmp_path: Path, server: Server, mode: str) -> None:
    """Down: every digest is recorded and waits (the retry time, not a claim lease); up after the
    wait: each reader gets exactly one, with the recorded Message-ID."""
    settings = load_settings(write_config(tmp_path, server.port))
    MODES[mode](settings, NOW)
    before = rows(settings)
    assert set(before) == set(EMAILS) and all(status == "pending" for status, _, _ in before.values()), before
    server.start()
    MODES[mode](settings, NOW + timedelta(minutes=5))  # retry_after_minutes = 10: not yet
    assert server.inbox.messages == []
    MODES[mode](settings, NOW + timedelta(minutes=11))
    assert server.inbox.count() == {e: 1 for e in EMAILS}
    after = rows(settings)
    assert all(after[e][0] == "sent" and after[e][2] == before[e][2] for e in EMAILS)
    MODES[mode](settings, NOW + timedelta(minutes=30))
    assert server.inbox.count() == {e: 1 for e in EMAILS}


@pytest.mark.parametrize("mode", MODES)
def test_550_for_one_address_the_others_arrive(tmp_path: Path, server: Server, mode: str) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[1]] = ["550 5.1.1 no such mailbox"]
    settings = load_settings(write_config(tmp_path, server.port))
    MODES[mode](settings, NOW)
    assert server.inbox.count() == {e: 1 for e in EMAILS if e != EMAILS[1]}
    assert rows(settings)[EMAILS[1]][0] == "failed"
    MODES[mode](settings, NOW + timedelta(hours=1))
    assert server.inbox.count() == {e: 1 for e in EMAILS if e != EMAILS[1]}  # a 5xx is not retried


@pytest.mark.parametrize("mode", MODES)
def test_a_refusing_server_is_not_hammered(tmp_path: Path, mode: str) -> None:
    """Nothing listens: the first digest's tries (attempts_per_run) and then the rest wait; no
    connection attempt per planned row."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(write_config(tmp_path, port))
    started = time.monotonic()
    MODES[mode](settings, NOW)
    assert time.monotonic() - started < 30
    recorded = rows(settings)
    tried = sum(attempts for _, attempts, _ in recorded.values())
    assert tried == 1 if mode == "daily" else tried <= 4, (
        tried,
        recorded,
    )  # one digest per sender tried, the rest wait untried
    assert all(status == "pending" for status, _, _ in recorded.values())


def test_weekly_readers_get_the_week_from_the_planner(tmp_path: Path, server: Server) -> None:
    """A weekly reader's planned digest picks from the whole week, as the daily run's does."""
    server.start()
    config = write_config(tmp_path, server.port, emails=["weekly@example.org"])
    text = config.read_text().replace(
        'send_at = "08:00"\n', 'send_at = "08:00"\nfrequency = "weekly"\nweekly_day = "monday"\n'
    )
    config.write_text(text.replace("max_papers = 3", "max_papers = 12"))
    import json

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
    planner_and_workers(settings, NOW)
    [msg] = server.inbox.messages
    assert "Five days old segmentation paper" in msg.get_body(("plain",)).get_content()


def test_a_cron_send_beside_running_workers_sends_each_digest_once(tmp_path: Path, server: Server) -> None:
    """Two `digest worker` processes are sending a planned day (slowly) when a cron `digest send`
    starts: the send never takes a row a worker holds, and every reader gets exactly one digest."""
    emails = [f"r{i}@example.org" for i in range(12)]
    server.inbox.delay = 0.3
    server.start()
    config = write_config(tmp_path, server.port, emails=emails)
    settings = load_settings(config)
    store = Store(settings.database_url)
    try:
        assert plan_day(store, settings, NOW).planned == 12
    finally:
        store.close()
    worker = [
        sys.executable,
        "-m",
        "digest",
        "worker",
        "--config",
        str(config),
        "--now",
        NOW.isoformat(),
        "--batch",
        "3",
    ]
    workers = [
        subprocess.Popen(worker, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 30
        while not server.inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        cron = subprocess.run(send_cmd(config), env=child_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert cron.returncode == 0, cron.stdout + cron.stderr
        for w in workers:
            out = w.communicate(timeout=120)[0]
            assert w.returncode == 0, out
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
    assert server.inbox.count() == {e: 1 for e in emails}
    assert all(status == "sent" for status, _, _ in rows(settings).values())


def test_a_worker_killed_mid_batch_has_recorded_what_it_sent(tmp_path: Path, server: Server) -> None:
    """SIGKILL after some digests of a claimed batch went out: those are recorded sent at once, and
    the next worker sends only the rest (the one in flight at most twice, same Message-ID)."""
    emails = [f"k{i}@example.org" for i in range(8)]
    server.inbox.hang_after = 3  # the fourth is accepted, then the server hangs: the worker is killed there
    server.start()
    config = write_config(tmp_path, server.port, emails=emails)
    settings = load_settings(config)
    store = Store(settings.database_url)
    try:
        plan_day(store, settings, NOW)
    finally:
        store.close()
    worker = [
        sys.executable,
        "-m",
        "digest",
        "worker",
        "--config",
        str(config),
        "--now",
        NOW.isoformat(),
        "--batch",
        "8",
    ]
    child = subprocess.Popen(worker, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert server.inbox.hanging.wait(30), child.communicate(timeout=5)[0]
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    server.inbox.hang_after = None
    server.inbox.release.set()
    assert sum(1 for status, _, _ in rows(settings).values() if status == "sent") == 3  # recorded as they went
    again = subprocess.run(worker, env=child_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout
    counts = server.inbox.count()
    assert set(counts) == set(emails) and sum(counts.values()) <= len(emails) + 1, counts
    for e in emails:
        assert len(set(server.inbox.ids(e))) == 1  # a second copy is the same message


@pytest.mark.parametrize("mode", MODES)
def test_a_server_slower_than_the_timeout_sends_at_most_two_copies(tmp_path: Path, server: Server, mode: str) -> None:
    """Each message is accepted after the client's timeout: the run records it unconfirmed and stops
    (no copy per retry, no try per reader); the next run sends it once more; then no more."""
    server.inbox.delay = 2.0
    server.start()
    config = write_config(tmp_path, server.port, emails=EMAILS[:3])
    config.write_text(config.read_text().replace("timeout = 20", "timeout = 1"))
    settings = load_settings(config)
    for minutes in (0, 11, 40, 90):
        MODES[mode](settings, NOW + timedelta(minutes=minutes))
    time.sleep(2.5)  # the last accepted message lands
    counts = server.inbox.count()
    assert counts and max(counts.values()) <= 2, counts
    statuses = {status for status, _, _ in rows(settings).values()}
    assert statuses <= {"failed", "unconfirmed", "pending"}, statuses
