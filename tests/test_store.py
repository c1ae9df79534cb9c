"""The store on both backends (a SQLite file, and PostgreSQL when .ci/postgres has started one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from digest import migrations
from digest.db import DeliveryStatus, Kind, Store
from digest.errors import StoreError
from digest.sources.base import PaperRecord

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def paper(pid: str, title: str, **rest: object) -> PaperRecord:
    return PaperRecord(id=pid, title=title, abstract=f"About {title}.", **rest)


def test_upsert_new_updated_unchanged(store: Store) -> None:
    counts = store.upsert_papers([paper("2401.1", "One"), paper("2401.2", "Two")], NOW)
    assert (counts.new, counts.updated, counts.unchanged) == (2, 0, 0)
    later = NOW + timedelta(days=1)
    counts = store.upsert_papers([paper("2401.1", "One, revised", updated=later), paper("2401.2", "Two")], later)
    assert (counts.new, counts.updated, counts.unchanged) == (0, 1, 1)
    assert [p.title for p in store.papers(["2401.2", "2401.1", "nope"])] == ["Two", "One, revised"]
    assert store.resolve_paper("one,  REVISED") == "2401.1"


def test_interactions_single_and_bulk(store: Store) -> None:
    store.upsert_papers([paper(f"p{i}", f"Paper {i}") for i in range(5)], NOW)
    ids = store.add_subscribers([{"email": "a@example.org"}, {"email": "b@example.org"}], NOW)
    a, b = ids["a@example.org"], ids["b@example.org"]
    assert store.add_interactions(a, ["p0", "p1", "p0"], Kind.LIKE, NOW, origin="config") == 2
    assert store.add_interactions(a, ["p1", "p2"], Kind.LIKE, NOW, origin="config") == 1
    assert store.add_interactions_many([(b, "p3"), (b, "p4")], Kind.SENT, NOW, origin="digest") == 2
    assert store.paper_ids_for(a, [Kind.LIKE]) == {"p0", "p1", "p2"}
    assert store.papers_seen([a, b], ["p0", "p3", "p4"], [Kind.LIKE, Kind.SENT]) == {a: {"p0"}, b: {"p3", "p4"}}
    assert sorted((r.email, r.paper_id) for r in store.interactions([Kind.SENT])) == [
        ("b@example.org", "p3"),
        ("b@example.org", "p4"),
    ]


def test_deliveries_plan_claim_finish(store: Store) -> None:
    store.upsert_papers([paper("p1", "Paper 1")], NOW)
    ids = list(store.add_subscribers([{"email": f"r{i}@example.org"} for i in range(5)], NOW).values())
    day = NOW.date()
    plan = [
        {
            "subscriber_id": sid,
            "digest_date": day,
            "papers": ["p1"],
            "reasons": ["close to x"],
            "trending": [["p1", 3]],
            "message_id": f"<{sid}@x>",
        }
        for sid in ids
    ]
    store.plan_deliveries(plan, NOW)
    store.plan_deliveries(plan, NOW)  # one digest a day: the second plan adds nothing
    assert store.delivery_status_counts(day) == {DeliveryStatus.PENDING: 5}

    first = store.claim_deliveries("w1", NOW, limit=3)
    second = store.claim_deliveries("w2", NOW, limit=3)
    assert len(first) == 3 and len(second) == 2
    assert not {d.id for d in first} & {d.id for d in second}
    assert first[0].reasons == ["close to x"] and first[0].trending == [["p1", 3]]
    assert store.claim_deliveries("w3", NOW) == []  # all held

    store.record_outcome(first[0], DeliveryStatus.SENT, NOW, worker="w1")
    store.record_outcome(first[1], DeliveryStatus.FAILED, NOW, worker="w1", error="550 no such user")
    store.record_outcome(
        first[2],
        DeliveryStatus.PENDING,
        NOW,
        worker="w1",
        error="421 try later",
        next_attempt_at=NOW + timedelta(minutes=15),
    )
    store.record_outcome(second[0], DeliveryStatus.SENT, NOW, worker="w1")  # not w1's claim: nothing changes
    for row in second:  # w2 gives its rows back untried
        store.record_outcome(row, DeliveryStatus.PENDING, NOW, worker="w2", attempted=False)
    assert store.delivery_status_counts(day) == {
        DeliveryStatus.SENT: 1,
        DeliveryStatus.FAILED: 1,
        DeliveryStatus.PENDING: 3,
    }
    assert store.papers_seen([first[0].subscriber_id], ["p1"], [Kind.SENT]) == {first[0].subscriber_id: {"p1"}}
    assert all(store.delivery(d.subscriber_id, day).attempts == 0 for d in second)
    again = store.claim_deliveries("w3", NOW)
    assert {d.id for d in again} == {d.id for d in second}  # the retry waits; released rows come back
    later = store.claim_deliveries("w4", NOW + timedelta(hours=1))  # the retry's wait and w3's claim lapsed
    assert {d.id for d in later} == {first[2].id} | {d.id for d in second}
    sent = store.delivery(ids[0], day) if first[0].subscriber_id == ids[0] else None
    assert sent is None or (sent.status == DeliveryStatus.SENT and sent.sent_at is not None and sent.attempts == 1)


def test_migrations_match_the_tables(database_url: str) -> None:
    """`alembic check`: a database upgraded from nothing has exactly the tables the code declares."""
    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            assert migrations.differences(conn, SQLModel.metadata) == []
    finally:
        store.close()


def test_an_old_schema_on_a_server_is_refused(database_url: str) -> None:
    store = Store(database_url)
    migrations.stamp(store.engine, migrations.FIRST)
    store.close()
    if migrations.head() == migrations.FIRST:
        pytest.skip("only one revision so far")
    with pytest.raises(StoreError, match="digest migrate"):
        Store(database_url, migrate=False).close()


def _open_store(url: str, results) -> None:
    try:
        Store(url).close()
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e}")


def test_processes_opening_a_new_database_at_once_all_get_it(tmp_path) -> None:
    """A run and its workers starting together on a fresh SQLite file: one creates the schema,
    the others wait for it instead of failing on tables or a version row that just appeared."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # no re-import per process: the race is the same
    for attempt in range(12):
        url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        results = ctx.Queue()
        procs = [ctx.Process(target=_open_store, args=(url, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] * 3


def test_processes_opening_a_new_postgresql_database_at_once_all_get_it(database_url: str) -> None:
    """The same race on a server: a migration that finds a table another process's migration just
    made ("relation ... already exists") waits for that schema instead of failing the run."""
    import multiprocessing

    from .conftest import reset_postgres

    if not database_url.startswith("postgresql"):
        pytest.skip("the SQLite case is the test above")
    ctx = multiprocessing.get_context("fork")
    for _ in range(12):
        reset_postgres(database_url)
        results = ctx.Queue()
        procs = [ctx.Process(target=_open_store, args=(database_url, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] * 3


def test_a_sqlite_url_under_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sqlite:///~/...` is the home folder (SQLite alone opened a folder literally named "~")."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    store = Store("sqlite:///~/digest-data/digest.db")
    store.close()
    assert (tmp_path / "digest-data" / "digest.db").is_file()
    assert not (tmp_path / ".." / "~").exists()


def test_doi_code_journal_and_version_are_cleaned_and_kept(store: Store) -> None:
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    rec = PaperRecord.make(
        id="2305.18290",
        title="Direct Preference Optimization",
        doi="https://doi.org/10.48550/arXiv.2305.18290.",
        code_url="javascript:alert(1)",
        journal_ref="NeurIPS 2023",
        version="3",
    )
    assert (rec.doi, rec.code_url, rec.version) == ("10.48550/arxiv.2305.18290", "", 3)
    assert PaperRecord.make(title="x", doi="not a doi").doi == ""
    store.upsert_papers([rec], t0)
    older = PaperRecord.make(
        id="2305.18290",
        title="Direct Preference Optimization",
        version=1,
        code_url="https://github.com/eric-mitchell/direct-preference-optimization",
    )
    store.upsert_papers([older], t0 + timedelta(days=1))
    (row,) = store.papers(["2305.18290"])
    assert (row.doi, row.journal_ref, row.version) == (
        "10.48550/arxiv.2305.18290",
        "NeurIPS 2023",
        3,
    )  # versions only grow
    assert row.code_url == "https://github.com/eric-mitchell/direct-preference-optimization"  # a blank is filled
