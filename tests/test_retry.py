"""`digest retry`: a digest that failed for good (a 5xx) is queued again once the cause is fixed, and
goes out once, with the Message-ID it had; a digest that did not fail is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digest.cli import app
from digest.db import Delivery, DeliveryStatus, Store
from digest.errors import DigestError
from digest.settings import SubscriberSettings

from .conftest import free_port
from .faulty_smtp import Server
from .test_delivery_faults import write_config

EMAILS = ["ok@example.org", "broken@example.org"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_permanently_failed_digest_is_sent_again_once_with_the_same_message_id(tmp_path: Path) -> None:
    server = Server(free_port())
    server.inbox.rcpt_codes["broken@example.org"] = ["550 5.1.1 mailbox misconfigured", "250 OK"]  # fixed after one try
    config = str(write_config(tmp_path, server.port, emails=EMAILS))
    server.start()
    try:
        first = cli("send", "--config", config, "--force")
        assert "broken@example.org: failed" in first and "550" in first
        assert server.inbox.count() == {"ok@example.org": 1}
        status = cli("status", "--config", config)
        today = datetime.now(UTC).date()
        assert f"to send it again: digest retry broken@example.org --date {today}" in status

        store = Store(f"sqlite:///{tmp_path / 'data' / 'digest.db'}")
        broken = store.subscriber(email="broken@example.org")
        assert broken is not None and broken.id is not None
        failed = store.delivery(broken.id, today)
        assert failed is not None and failed.status == DeliveryStatus.FAILED and failed.attempts == 1

        again = cli("retry", "broken@example.org", "--config", config)  # default: the latest failed digest
        assert f"broken@example.org: the digest of {today} is queued again" in again
        queued = store.delivery(broken.id, today)
        assert queued is not None and (queued.status, queued.attempts, queued.error) == (DeliveryStatus.PENDING, 0, "")
        assert (queued.papers, queued.message_id) == (failed.papers, failed.message_id)

        cli("send", "--config", config)  # not --force: a queued digest is due by itself
        cli("send", "--config", config, "--force")  # and a second run sends nothing more
        assert server.inbox.count() == {"ok@example.org": 1, "broken@example.org": 1}
        assert server.inbox.ids("broken@example.org") == [failed.message_id]
        sent = store.delivery(broken.id, today)
        assert sent is not None and sent.status == DeliveryStatus.SENT and sent.attempts == 1
        store.close()
    finally:
        server.stop()

    # Asked again, for the one now sent: said so (one line, exit 2), and nothing changes.
    env = {**os.environ, "COLUMNS": "200"}
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "digest",
            "retry",
            "broken@example.org",
            "--config",
            config,
            "--date",
            today.isoformat(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    said = refused.stderr.splitlines()
    assert said[0] == f"config: {config}", refused.stderr
    assert said[1].startswith(f"error: broken@example.org: the digest of {today} was sent at "), refused.stderr
    assert refused.stderr.rstrip().endswith("UTC: nothing to send again"), refused.stderr
    store = Store(f"sqlite:///{tmp_path / 'data' / 'digest.db'}")
    try:
        assert store.delivery(broken.id, today) == sent
    finally:
        store.close()


def test_requeue_refuses_what_is_not_failed_and_finds_the_latest_failed(store: Store) -> None:
    """The store's half, on SQLite and PostgreSQL."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    sub_id = store.sync_subscribers([SubscriberSettings(email="r@example.org", send_at="07:00", max_papers=5)], now)[
        "r@example.org"
    ]
    with pytest.raises(DigestError, match="no failed digest to send again"):
        store.requeue_delivery(sub_id, None, now)
    days = [date(2026, 11, 21), date(2026, 11, 22), date(2026, 11, 23)]
    rows = [store.create_delivery(sub_id, d, [], f"<m{d.day}@x>", now - timedelta(days=3)) for d in days]
    with store.session() as s:  # two of them failed for good (a 5xx), however the sender wrote it
        for row in rows[:2]:
            failed = s.get(Delivery, row.id)
            failed.status, failed.attempts, failed.error = DeliveryStatus.FAILED, 1, "550 no such mailbox"
        s.commit()
    with pytest.raises(DigestError, match="the digest of 2026-11-23 is pending, not failed: a run sends it by itself"):
        store.requeue_delivery(sub_id, days[2], now)
    with pytest.raises(DigestError, match="no digest for 2026-11-20"):
        store.requeue_delivery(sub_id, date(2026, 11, 20), now)
    row = store.requeue_delivery(sub_id, None, now)  # the latest failed one: the 22nd
    assert (row.digest_date, row.status, row.attempts, row.message_id) == (
        days[1],
        DeliveryStatus.PENDING,
        0,
        "<m22@x>",
    )
    assert row.next_attempt_at == now and row.created == now  # due now; the catch-up window starts again
    assert store.delivery(sub_id, days[0]).status == DeliveryStatus.FAILED  # the older one is left as it is
