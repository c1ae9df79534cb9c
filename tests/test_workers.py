"""Several delivery workers share one day's digests through the database: each subscriber gets one.

Four worker processes drain the planned rows against a real SMTP server on localhost, on SQLite
and on PostgreSQL (skipped without a server; `.ci/run` starts one).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from digest.db import DeliveryStatus, Kind, Store
from digest.pipeline import run_daily
from digest.workers import plan_day, run_workers

from .conftest import ConfigFactory, Inbox

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PEOPLE = 120

# The subject here is delivery, not the ranking: TF-IDF only, so no test waits for the sample's embeddings, and
# no relevance floor, so every reader (three random likes each) has a digest to send whatever the floor is.
SOURCES = """
[ranking]
embeddings = "none"
min_score = -1e9

[[sources]]
kind = "sample"
"""


def test_four_workers_send_each_digest_exactly_once(
    database_url: str, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = make_config(SOURCES + f'\n[database]\nurl = "{database_url}"\n', smtp_port=port, method="smtp")
    store = Store(database_url)
    try:
        run_daily(NOW, settings, store=store)  # ingests the sample; no subscribers in the file
        papers = [p.id for p in store.papers()]
        ids = store.add_subscribers(
            [{"email": f"reader{i}@example.org", "name": f"Reader {i}", "max_papers": 5} for i in range(PEOPLE)], NOW
        )
        store.add_interactions_many(
            [(sid, papers[(7 * i + j) % len(papers)]) for i, sid in enumerate(ids.values()) for j in range(3)],
            Kind.LIKE,
            NOW,
            origin="import",
        )

        plan = plan_day(store, settings, NOW, force=True, ingest_sources=False)
        assert plan.planned == PEOPLE
        plan_day(store, settings, NOW, force=True, ingest_sources=False)  # planning twice adds nothing

        reports = run_workers(settings, NOW, 4)
        assert sum(r.sent for r in reports) == PEOPLE
        assert not any(r.fatal or r.failed for r in reports)

        per_address = Counter(rcpt for _, rcpts in inbox.envelopes for rcpt in rcpts)
        assert set(per_address) == set(ids) and set(per_address.values()) == {1}
        assert store.delivery_status_counts(NOW.date()) == {DeliveryStatus.SENT: PEOPLE}
        assert len({m["Message-ID"] for m in inbox.messages}) == PEOPLE
        sent = [r for r in store.interactions([Kind.SENT])]
        assert len(sent) == 5 * PEOPLE

        assert sum(r.sent for r in run_workers(settings, NOW, 2)) == 0  # nothing left to do
        assert len(inbox.messages) == PEOPLE
    finally:
        store.close()


def _key_of(data_dir: str) -> str:
    from digest.links import secret_key
    from digest.settings import Settings

    return secret_key(Settings(data_dir=data_dir))


def test_processes_starting_at_once_on_a_fresh_data_folder_share_one_signing_key(tmp_path: Path) -> None:
    """Workers (and a web front) started together on a new data folder must sign with one key: a
    check-then-write let each write its own, or read the file while another was still writing it."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_key_of, [str(tmp_path / "data")] * 16)
    assert len(set(keys)) == 1 and len(keys[0]) >= 40
    assert (tmp_path / "data" / "secret.key").read_text() == keys[0]
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secret.key"]  # no temporary file left
