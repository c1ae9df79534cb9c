"""A real `digest serve` keeps answering while another process holds the SQLite write lock.

The store is synchronous and SQLite waits up to 30 s for a lock; a handler that called it on the
event loop stalled every other request with it.  Here a separate sqlite3 connection holds the
write lock (BEGIN IMMEDIATE) for a few seconds while a feedback page waits for it (the rate limit
writes a row): the sign-up form, which needs no database, still answers at once, and the feedback
page answers as soon as the lock is released.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from digest import links
from digest.db import Kind, Store
from digest.settings import Settings, load_settings
from digest.sources.base import PaperRecord

from .conftest import digest_serve, free_port

KEY = "loop-test-key-not-a-secret"
HOLD = 2.5  # seconds the other connection keeps the write lock
CONFIG = """
data_dir = "{data}"

[delivery]
method = "outbox"

[web]
base_url = "http://127.0.0.1:{port}"

[[subscribers]]
email = "vera@example.org"
name = "Vera"
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Settings, Store]]:
    """`digest serve` in its own process on a SQLite file with one reader and one paper."""
    port = free_port()
    config = tmp_path / "digest.toml"
    config.write_text(CONFIG.format(data=(tmp_path / "data").as_posix(), port=port), encoding="utf-8")
    settings = load_settings(config, env={"DIGEST_SECRET_KEY": KEY})
    store = Store(settings.database_url)
    now = datetime.now(UTC)
    store.upsert_papers([PaperRecord(id="2411.00001", title="Locks and loops", abstract="About waiting.")], now)
    store.sync_subscribers(settings.subscribers, now)
    try:
        with digest_serve(config, port, key=KEY, data=tmp_path / "data", log=tmp_path / "serve.log") as base:
            yield base, settings, store
    finally:
        store.close()


def test_a_locked_database_stalls_only_the_requests_that_wait_for_it(served: tuple[str, Settings, Store]) -> None:
    base, settings, store = served
    vera = store.subscriber(email="vera@example.org")
    assert vera is not None and store.path is not None
    feedback = links.feedback_url(settings, KEY, vera.id, "2411.00001", Kind.LIKE).removeprefix(base)
    answers: list[tuple[int, float]] = []

    def open_feedback() -> None:
        t = time.monotonic()
        try:
            answers.append((httpx.get(base + feedback, timeout=20).status_code, time.monotonic() - t))
        except httpx.TransportError as e:
            answers.append((repr(e), time.monotonic() - t))  # type: ignore[arg-type]

    lock = sqlite3.connect(store.path, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the write lock, as a long `digest send` transaction holds it
        locked_at = time.monotonic()
        waiting = threading.Thread(target=open_feedback)
        waiting.start()
        time.sleep(0.5)  # the feedback request is in the server now, waiting for the lock
        try:
            form = httpx.get(base + "/subscribe", timeout=1.0)  # a few ms when the loop is free
        except httpx.TimeoutException:
            form = None
        still_locked = time.monotonic() - locked_at < HOLD
        time.sleep(max(0.0, HOLD - (time.monotonic() - locked_at)))
    finally:
        lock.rollback()
        lock.close()
    waiting.join(20)
    assert still_locked, "the machine is too slow for this test's timing"
    assert form is not None, "GET /subscribe got no answer within 1 s while another request waited for the database"
    assert form.status_code == 200 and "Subscribe" in form.text
    [(status, seconds)] = answers
    assert status == 200 and seconds >= HOLD - 0.5 - 0.2, (status, seconds)  # it did wait for the lock, then answered
