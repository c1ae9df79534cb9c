"""The store: the only module that talks to the database (SQLModel over SQLite or PostgreSQL).

Tables: papers, subscribers, interactions (like, dislike, sent, clicked), deliveries (one row per
subscriber and local digest date, written before sending so nothing is lost or sent twice), and
source checkpoints, plus the web front's used single-use link nonces, opt-outs and sign-ups waiting
for confirmation.  Times go in and come out as aware UTC datetimes (SQLModel's UTCDateTime).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    UniqueConstraint,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from digest.errors import DigestError, StoreError
from digest.sources.base import PaperRecord, arxiv_id, title_key

LIKE, DISLIKE, SENT, CLICKED = "like", "dislike", "sent", "clicked"


class DeliveryStatus(StrEnum):
    """The states of a delivery row: planned PENDING -> (claimed by one sender) -> SENT, PENDING again
    with a doubling wait, or FAILED (a 5xx, or `max_attempts` used up).  UNCONFIRMED: the server took
    the message but never said so (a timeout after DATA): it may have arrived, so it is tried once
    more on a later run only, and fails rather than go a third time."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"


PENDING, SENT_STATUS, FAILED, UNCONFIRMED = (
    DeliveryStatus.PENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.UNCONFIRMED,
)
WAITING = (PENDING, UNCONFIRMED)  # rows a sender may claim


def _utc(moment: datetime | None) -> datetime | None:
    """An aware UTC datetime (a naive one is taken to be UTC already)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """A stored naive-UTC time as an aware UTC datetime."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Paper(SQLModel, table=True):
    __tablename__ = "papers"

    id: str = Field(primary_key=True, max_length=200)
    title: str
    title_key: str = Field(index=True)
    abstract: str = ""
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    url: str = ""
    pdf_url: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    source: str = ""
    upvotes: int = 0
    comments: int = 0
    first_seen: datetime = Field(index=True)
    last_changed: datetime


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscribers"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=320)
    name: str = ""
    timezone: str = "UTC"
    send_at: str = "07:30"
    frequency: str = Field(default="daily", max_length=16)  # daily, weekdays, weekly
    weekly_day: str = Field(default="monday", max_length=16)
    max_papers: int = 10
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    exclude_keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    active: bool = True
    origin: str = "config"
    created: datetime


class Interaction(SQLModel, table=True):
    __tablename__ = "interactions"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscribers.id", index=True)
    paper_id: str = Field(foreign_key="papers.id", index=True, max_length=200)
    kind: str = Field(index=True, max_length=16)
    origin: str = "config"
    at: datetime


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("subscriber_id", "digest_date", name="one_digest_a_day"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscribers.id", index=True)
    digest_date: date = Field(index=True)
    papers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=PENDING, index=True, max_length=16)
    attempts: int = 0
    error: str = ""
    message_id: str = ""
    created: datetime
    sent_at: datetime | None = None
    # Written by the planner so any worker can render the digest from the row alone:
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # one per paper
    trending: list[list[Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # [paper id, count]
    # A worker's claim on the row (see Store.claim_deliveries); lapses at claimed_until.
    claimed_by: str = Field(default="", max_length=100)
    claimed_until: datetime | None = Field(default=None, index=True)
    next_attempt_at: datetime | None = None  # a pending row waits until then (cross-run backoff)


class Lease(SQLModel, table=True):
    """A named lock with an owner and an expiry; see `Store.acquire_lease`."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=100)
    owner: str = Field(max_length=200)
    acquired: datetime
    expires: datetime


class SourceState(SQLModel, table=True):
    __tablename__ = "source_state"

    name: str = Field(primary_key=True, max_length=200)
    cursor: str | None = None
    last_success: datetime | None = None
    last_error: str = ""


class UsedToken(SQLModel, table=True):
    """A single-use link (like, dislike, confirm) that has been used: its nonce, so a replay changes nothing."""

    __tablename__ = "used_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(max_length=32)
    at: datetime


class RateHit(SQLModel, table=True):
    """One counted use of a rate-limited web action (by client IP or address), so every web process
    on this database shares the limits; rows older than `RATE_HIT_KEEP` seconds are dropped."""

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200)
    at: float  # seconds since the epoch, from the web front's clock


RATE_HIT_KEEP = 3600.0  # the longest rate-limit window, in seconds


class OptOut(SQLModel, table=True):
    """An address that unsubscribed.  It wins over the preferences file until the reader subscribes again."""

    __tablename__ = "opt_outs"

    email: str = Field(primary_key=True, max_length=320)
    at: datetime


class PendingSignup(SQLModel, table=True):
    """A web sign-up waiting for its confirmation link, found by the link's nonce.  Nothing about
    the address's reader changes until that link is used; then exactly these settings apply."""

    __tablename__ = "pending_signups"

    nonce: str = Field(primary_key=True, max_length=64)
    email: str = Field(index=True, max_length=320)
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # Subscriber columns
    liked: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # paper ids
    new_reader: bool = False  # this request made the address's (inactive) row, which holds its settings until confirmed
    created: datetime = Field(index=True)


PENDING_SIGNUP_KEEP = timedelta(days=7)  # longer than a confirmation link lives (links.CONFIRM_MAX_AGE)


@dataclass
class UpsertCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # paper id -> why the database refused it

    def add(self, other: UpsertCounts) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected.update(other.rejected)


# What a database raises for one record it cannot hold (a NUL byte on PostgreSQL, a number too
# large, an unencodable string): that record is refused, the rest are stored.  Never the errors of
# the database itself (OperationalError: disk full, read-only, gone), which stop the run.
_BAD_RECORD = (DataError, IntegrityError, UnicodeError, OverflowError, ValueError, TypeError)


@dataclass
class LikeRow:
    email: str
    paper_id: str
    kind: str


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StoreError(f"database url {url!r} is not a valid SQLAlchemy URL") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot make the database folder {folder}: {e.strerror or e}") from e
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        if (path := _sqlite_file(url)) is not None:
            event.listen(engine, "do_connect", functools.partial(_open_existing, path))
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Write-ahead log: the planner and the workers read while one writes, and a commit is one
    append (synchronous=NORMAL: safe against a crash of the program; a power cut may lose the
    last commits, which can resend a digest in flight, as a crash mid-send already can)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


# -- when the database itself fails -----------------------------------------------------------
#
# A SQLite file keeps its marker beside it ("digest.db.created"), written once the database exists.
# A database that is missing (or empty) where the marker says one was is refused, never silently
# created anew: an empty database knows no deliveries and no unsubscribes, so it would mail every
# reader again, unsubscribed ones included.  Deleting the marker is how to start afresh on purpose.
# A running Store also remembers its file's inode: SQLite goes on writing to a deleted file unseen,
# so every use first checks that the path still names the file it opened (`Store.check`).

MARKER_SUFFIX = ".created"

_SQLITE_FIXES = {  # by SQLite's primary result code
    sqlite3.SQLITE_FULL: "its disk is full (or a file-size limit was reached): free some space, then run again",
    sqlite3.SQLITE_IOERR: "the disk could not read or write it (full, failing or removed, or a file-size limit): "
    "check the disk and free some space, then run again",
    sqlite3.SQLITE_READONLY: "it is read-only: let this user write the file and its folder (SQLite writes NAME-wal "
    "and NAME-shm beside it), then run again",
    sqlite3.SQLITE_PERM: "this user may not write it: let this user write the file and its folder, then run again",
    sqlite3.SQLITE_CANTOPEN: "it cannot be opened: check that its folder exists and that this user may read and "
    "write the folder and the file, then run again",
    sqlite3.SQLITE_BUSY: "another process kept it locked for over 30 s: look for a stuck digest process, then run again",
    sqlite3.SQLITE_LOCKED: "another process kept it locked: look for a stuck digest process, then run again",
    sqlite3.SQLITE_CORRUPT: "the file is damaged: restore it from a backup",
    sqlite3.SQLITE_NOTADB: "the file is not a SQLite database: restore the database from a backup",
    sqlite3.SQLITE_NOMEM: "this machine ran out of memory: free some, then run again",
}
_POSTGRES_FIXES = (  # by SQLSTATE prefix, the first that matches
    ("08", "the connection to the server failed: check that it is running and reachable, then run again"),
    ("53100", "the server's disk is full: free space on it, then run again"),
    ("53", "the server ran out of resources (memory, connections): check the server, then run again"),
    (
        "25006",
        (
            "the database is read-only (a standby, or default_transaction_read_only): point the database "
            "URL at the primary server, then run again"
        ),
    ),
    ("57P", "the server is shutting down or restarting: run again once it is back"),
    ("58", "the server had an I/O error: check its disk and its log"),
)


def _home_expanded(url: str) -> str:
    """A SQLite URL whose file starts with ~ names the home folder (SQLite itself would open a
    folder literally named "~")."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # _engine says what is wrong with it
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database.startswith("~"):
        return parsed.set(database=str(Path(parsed.database).expanduser())).render_as_string(hide_password=False)
    return url


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL opens (absolute); None for a server, an in-memory database or a URI filename."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") or "uri" in parsed.query:
        return None
    return Path(os.path.abspath(parsed.database))


def _marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def _open_existing(path: Path, _dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
    """Once the marker says a database was made here, a new connection never creates the file
    (SQLite would make an empty one where the database was deleted): it opens it read-write or fails."""
    if _marker(path).exists():
        cargs[:] = [f"{path.as_uri()}?mode=rw"]
        cparams["uri"] = True


def _file_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def discard_database(path: Path) -> None:
    """Delete a SQLite database on purpose, with its -wal, -shm and marker, so the next Store there
    starts afresh instead of refusing a missing database (`digest demo` starts over like this)."""
    for name in (path.name, path.name + "-wal", path.name + "-shm", path.name + MARKER_SUFFIX):
        path.with_name(name).unlink(missing_ok=True)


def database_trouble(error: BaseException, dbapi: Any) -> str | None:
    """What to do about a failure of the database itself (full, read-only, deleted, unreachable);
    None for an error in our statements or data (a bug, or a constraint a caller handles)."""
    orig = getattr(error, "orig", None) or error
    if not isinstance(orig, dbapi.Error) or isinstance(
        orig, (dbapi.IntegrityError, dbapi.ProgrammingError, dbapi.DataError, dbapi.NotSupportedError)
    ):
        return None
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:  # SQLITE_ERROR and the like are about the statement, not the file
        return _SQLITE_FIXES.get(code & 0xFF)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    if not state or getattr(error, "connection_invalidated", False):
        return _POSTGRES_FIXES[0][1]
    return next(
        (fix for prefix, fix in _POSTGRES_FIXES if state.startswith(prefix)),
        "check the database server and its log, then run again",
    )


_DELIVERIES = Delivery.__table__
# A delivery's outcome (Store.record_outcome), built once so each message costs a commit, not a compile.
_OUTCOME = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("row_id"), _DELIVERIES.c.claimed_by.in_([bindparam("worker"), ""]))
    .values(
        status=bindparam("new_status"),
        error=bindparam("new_error"),
        attempts=_DELIVERIES.c.attempts + bindparam("tried"),
        claimed_by="",
        claimed_until=None,
        next_attempt_at=bindparam("next_at"),
        sent_at=func.coalesce(bindparam("sent_at", type_=_DELIVERIES.c.sent_at.type), _DELIVERIES.c.sent_at),
    )
)
_SENT_PAPERS = insert(Interaction.__table__).values(
    subscriber_id=bindparam("sid"), paper_id=bindparam("pid"), kind=SENT, origin="digest", at=bindparam("at")
)


class Store:
    """All reads and writes of digest's data; one per process, shared by the stages."""

    def __init__(self, url: str, *, migrate: bool | None = None) -> None:
        url = _home_expanded(url)
        self.url = url
        self.engine = _engine(url)
        self._rate_hits = 0  # hits counted by this process (old ones are forgotten every 500)
        self.path = _sqlite_file(url)  # None: a server, or a database in memory
        self.name = str(self.path) if self.path else make_url(url).render_as_string(hide_password=True)
        self._opened: tuple[int, int] | None = None  # (device, inode) of the SQLite file, once open
        try:
            self._prepare(migrate)
            if self.path is not None:
                self._opened = _file_id(self.path)
                self._mark()
        except (OperationalError, SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as e:
            self.engine.dispose()
            if self.path is not None and _marker(self.path).exists() and not self.path.exists():
                raise StoreError(self._missing()) from e  # deleted while this Store opened it
            raise self._failed(e, "cannot open the database {}") from e
        except BaseException:  # refused (an old schema on a server) or interrupted: no pooled connection left open
            self.engine.dispose()
            raise

    def _prepare(self, migrate: bool | None) -> None:
        """Bring the schema to the code's revision (Alembic, digest/migrations).

        An empty database is created at the newest revision.  An older one is upgraded when
        `migrate` says so (by default only SQLite, the zero-setup case); a shared server is never
        altered behind its operator's back: the Store refuses and says to run `digest migrate`.
        """
        from digest import migrations

        # the marker as it was before looking: one written meanwhile is another process's new database
        marked = self.path is not None and _marker(self.path).exists()
        if marked and self.path is not None and not self.path.exists():
            raise StoreError(self._missing())  # before connecting, which would create an empty file
        with self.engine.connect() as conn:
            at, tables = migrations.current(conn), migrations.has_tables(conn)
            # Alembic makes its version table first: empty, another process is creating the schema now
            creating = at is None and inspect(conn).has_table("alembic_version")
        if at == migrations.head():
            return
        if at is None and not tables and not creating and marked:
            raise StoreError(self._missing(empty=True))
        if creating:
            self._wait_for_schema()
            return
        try:
            if at is None and tables:  # made by create_all before migrations existed: the first revision
                migrations.stamp(self.engine, migrations.FIRST)
                at = migrations.FIRST
            allowed = self.engine.dialect.name == "sqlite" if migrate is None else migrate
            if at is not None and at != migrations.head() and not allowed:
                raise StoreError(
                    f"the database schema is at revision {at} but this digest needs {migrations.head()}: "
                    "run `digest migrate` (after a backup) to upgrade it"
                )
            migrations.upgrade(self.engine)
        except (OperationalError, IntegrityError) as e:
            conflict = str(getattr(e.orig, "sqlstate", "") or "").startswith("40")  # a PostgreSQL deadlock
            if database_trouble(e, self.engine.dialect.loaded_dbapi) and not conflict:
                raise  # the database itself failed (full, read-only, gone): waiting would not help
            # another process (a second run or worker starting at the same moment) got there first
            self._wait_for_schema(cause=e)

    def _wait_for_schema(self, seconds: float = 30.0, cause: Exception | None = None) -> None:
        """Wait for another process creating or upgrading the schema to reach the newest revision."""
        from digest import migrations

        for _ in range(int(seconds * 10)):
            with self.engine.connect() as conn:
                if migrations.current(conn) == migrations.head():
                    return
            time.sleep(0.1)
        why = f" after {cause.__class__.__name__}: {getattr(cause, 'orig', cause)}" if cause is not None else ""
        raise StoreError(f"the database schema did not reach revision {migrations.head()} within {seconds:g} s{why}")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for one unit of work, inside `_guarded`."""
        with self._guarded(), Session(self.engine, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A connection in a transaction (committed at the end), inside `_guarded`."""
        with self._guarded(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Every use of the database goes through here: the SQLite file is checked before and after
        (so a write that went to a deleted file is noticed before the caller acts on it, e.g. sends
        the message it recorded), and a failure of the database itself becomes one StoreError that
        says what to do.  Errors of our own statements (a constraint a caller expects) pass as they are."""
        self.check()
        try:
            yield
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as e:
            if database_trouble(e, self.engine.dialect.loaded_dbapi) is None:
                raise
            try:
                self.check()  # a file deleted or replaced meanwhile says so, not as the I/O error it caused
            except StoreError as gone:
                raise gone from e
            raise self._failed(e, "the database {} failed") from e
        self.check()

    def check(self) -> None:
        """Raise StoreError if the SQLite file this Store opened was deleted or replaced since: SQLite
        would go on writing to the deleted file, seen by no one, and the next run would find no
        record of what this one sent."""
        if self._opened is None or self.path is None:
            return
        try:
            now = _file_id(self.path)
        except OSError:
            now = None
        if now == self._opened:
            return
        what, fix = (
            ("deleted", "restore it from a backup, then run again")
            if now is None
            else ("replaced", "run digest again to use the file now there")
        )
        raise StoreError(
            f"the database {self.path} was {what} while this digest process was using it, "
            f"so it stopped before writing more: {fix}"
        )

    def _failed(self, error: BaseException, what: str) -> StoreError:
        """The StoreError for a database failure: `what` happened to which database ({}), the
        driver's words, and what to do."""
        orig = getattr(error, "orig", None) or error
        said = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig)  # psycopg: without the SQL
        detail = " ".join(said.split())[:300] or orig.__class__.__name__
        if name := getattr(orig, "sqlite_errorname", None):
            detail += f" ({name})"
        fix = database_trouble(error, self.engine.dialect.loaded_dbapi)
        if fix and self.path is not None:
            fix = fix.replace("NAME", self.path.name)
        return StoreError(f"{what.format(self.name)}: {detail}" + (f"; {fix}" if fix else ""))

    def _missing(self, *, empty: bool = False) -> str:
        assert self.path is not None
        marker = _marker(self.path)
        since = datetime.fromtimestamp(marker.stat().st_mtime, UTC)
        # A deleted database's write-ahead log stays beside it, and SQLite would replay it into a restored copy
        left = [
            p.name
            for p in (self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm"))
            if p.exists()
        ]
        away = f", move away {' and '.join(left)} (left by the deleted file)" if left and not empty else ""
        return (
            f"the database {self.path} is {'empty' if empty else 'missing'}, but digest kept its data there "
            f"(since {since:%Y-%m-%d %H:%M} UTC, says {marker.name}); a new empty database would mail every reader "
            f"again, unsubscribed ones too.  Stop every digest process using it{away}, then restore the database "
            f"from a backup to that path; or, to start afresh on purpose{' (those moved away too)' if away else ''}, delete {marker}"
        )

    def _mark(self) -> None:
        """Leave the marker beside a SQLite database (see MARKER_SUFFIX): from now on a missing
        database here is refused instead of being created anew."""
        assert self.path is not None
        marker = _marker(self.path)
        if marker.exists():
            return
        with contextlib.suppress(OSError):  # a read-only folder: written by the first run that can write here
            marker.write_text(
                f"digest keeps its database in {self.path.name} here.  While this file exists, digest refuses to\n"
                "run if that database is missing or empty (restore it from a backup); delete this file to start\n"
                "afresh with an empty database on purpose (every reader is then new).\n",
                encoding="utf-8",
            )

    def close(self) -> None:
        self.engine.dispose()

    # -- papers -------------------------------------------------------------------------------

    def upsert_papers(self, records: Iterable[PaperRecord], now: datetime) -> UpsertCounts:
        """Insert new papers, update changed ones (a new arXiv version is an update, not a new paper).

        A record the database cannot hold is left out and named in `rejected`; the others are
        stored.  The batch goes in one transaction; when it fails on a bad record it is halved until
        the bad records stand alone (a few extra transactions per bad record, not one per record).
        """
        records = list(records)
        try:
            return self._upsert_batch(records, now)
        except _BAD_RECORD as e:
            if len(records) == 1:
                reason = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
                return UpsertCounts(rejected={records[0].id[:80]: f"{e.__class__.__name__}: {reason}"})
        counts = UpsertCounts()
        half = len(records) // 2
        for part in (records[:half], records[half:]):
            counts.add(self.upsert_papers(part, now))
        return counts

    def _upsert_batch(self, records: list[PaperRecord], now: datetime) -> UpsertCounts:
        counts = UpsertCounts()
        stamp = _utc(now)
        with self.session() as s:
            known: dict[str, Paper] = {}  # one query per 500 records, not one per record
            for chunk in _chunks(list(dict.fromkeys(r.id for r in records)), 500):
                known.update((p.id, p) for p in s.exec(select(Paper).where(Paper.id.in_(chunk))))
            for rec in records:
                row = known.get(rec.id)
                values: dict[str, Any] = {
                    "title": rec.title,
                    "title_key": title_key(rec.title),
                    "abstract": rec.abstract,
                    "authors": rec.authors,
                    "categories": rec.categories,
                    "url": rec.url,
                    "pdf_url": rec.pdf_url,
                    "published": _utc(rec.published),
                    "updated": _utc(rec.updated),
                    "source": rec.source,
                    "upvotes": rec.upvotes,
                    "comments": rec.comments,
                }
                if row is None:
                    known[rec.id] = Paper(id=rec.id, first_seen=stamp, last_changed=stamp, **values)
                    s.add(known[rec.id])
                    counts.new += 1
                    continue
                changed = False
                # A newer version (or an unversioned row) may replace fields; an unversioned or older
                # record (e.g. Hugging Face after arXiv) only fills blanks.  Empty values never erase,
                # and community counts only grow, so no source zeroes another's upvotes.
                row_updated = aware(row.updated)
                rec_updated = values["updated"]
                replace = row_updated is None or (rec_updated is not None and rec_updated >= row_updated)
                for key, value in values.items():
                    if key in ("upvotes", "comments"):
                        value = max(value, getattr(row, key) or 0)
                    elif not value:
                        continue  # a poorer source never erases what a richer one gave
                    elif not replace and getattr(row, key):
                        continue
                    if getattr(row, key) != value:
                        setattr(row, key, value)
                        changed = True
                if changed:
                    row.last_changed = stamp
                    counts.updated += 1
                else:
                    counts.unchanged += 1
            s.commit()
        return counts

    def papers(self, ids: Sequence[str] | None = None) -> list[Paper]:
        """All papers (or the given ones, in the given order, unknown ids left out)."""
        with self.session() as s:
            if ids is None:
                return list(s.exec(select(Paper).order_by(Paper.first_seen, Paper.id)))
            found = {
                p.id: p
                for chunk in _chunks(list(ids), 500)
                for p in s.exec(select(Paper).where(Paper.id.in_(list(chunk))))
            }
        return [found[i] for i in ids if i in found]

    def corpus_rows(self) -> list[tuple[str, str, str, float]]:
        """(id, title, abstract, upvotes) of every paper, in `papers()` order: what ranking needs,
        without building a full row object per paper (200,000 of them are slow and ~1 GB)."""
        query = select(Paper.id, Paper.title, Paper.abstract, Paper.upvotes).order_by(Paper.first_seen, Paper.id)
        with self.session() as s:
            return [tuple(row) for row in s.connection().execute(query)]

    def paper_count(self) -> int:
        with self.session() as s:
            return s.exec(select(func.count()).select_from(Paper)).one()

    def recent_paper_ids(self, since: datetime) -> list[str]:
        """Papers published, or first seen by us, at or after `since`."""
        stamp = _utc(since)
        with self.session() as s:
            rows = s.exec(
                select(Paper.id).where(
                    (Paper.first_seen >= stamp) | ((Paper.published != None) & (Paper.published >= stamp))  # noqa: E711
                )
            )
            return list(rows)

    def resolve_paper(self, entry: str) -> str | None:
        """The paper an arXiv id, arXiv/HF URL or exact title (case and spacing aside) names."""
        with self.session() as s:
            aid = arxiv_id(entry)
            if aid and s.get(Paper, aid) is not None:
                return aid
            if s.get(Paper, entry.strip()) is not None:
                return entry.strip()
            key = title_key(entry)
            if not key:
                return None
            return s.exec(select(Paper.id).where(Paper.title_key == key)).first()

    # -- subscribers ----------------------------------------------------------------------------

    def sync_subscribers(self, subscribers: Iterable[Any], now: datetime) -> dict[str, int]:
        """Make the config's subscribers exist and match the file; returns email -> id.

        Subscribers that came from the config and are no longer in it are deactivated, not deleted,
        so their history stays.  An address that unsubscribed (opt_outs) stays inactive whatever the
        file says; web sign-ups (origin "web") are left alone.
        """
        ids: dict[str, int] = {}
        stamp = _utc(now)
        with self.session() as s:
            opted_out = set(s.exec(select(OptOut.email)))
            for sub in subscribers:
                row = s.exec(select(Subscriber).where(Subscriber.email == sub.email)).first()
                fields = {
                    "name": sub.name,
                    "timezone": sub.timezone,
                    "send_at": sub.send_at,
                    "frequency": sub.frequency,
                    "weekly_day": sub.weekly_day,
                    "max_papers": sub.max_papers,
                    "keywords": list(sub.keywords),
                    "exclude_keywords": list(sub.exclude_keywords),
                }
                if row is None:
                    row = Subscriber(email=sub.email, created=stamp, origin="config", **fields)
                    row.active = sub.email not in opted_out
                    s.add(row)
                else:
                    for key, value in fields.items():
                        setattr(row, key, value)
                    if row.origin == "config":
                        row.active = sub.email not in opted_out  # an unsubscribe wins over the file
                s.flush()
                ids[sub.email] = row.id
            for row in s.exec(select(Subscriber).where(Subscriber.origin == "config")):
                if row.email not in ids:
                    row.active = False
            s.commit()
        return ids

    def subscribers(self, *, active_only: bool = True) -> list[Subscriber]:
        with self.session() as s:
            query = select(Subscriber).order_by(Subscriber.id)
            if active_only:
                query = query.where(Subscriber.active == True)  # noqa: E712
            return list(s.exec(query))

    # -- interactions ---------------------------------------------------------------------------

    def add_interactions(
        self,
        subscriber_id: int,
        paper_ids: Iterable[str],
        kind: str,
        now: datetime,
        *,
        origin: str,
        unique: bool = True,
    ) -> int:
        """Record interactions; with `unique`, one of a kind per (subscriber, paper). Returns how many were new."""
        added = 0
        stamp = _utc(now)
        with self.session() as s:
            existing: set[str] = set()
            if unique:
                existing = set(
                    s.exec(
                        select(Interaction.paper_id).where(
                            Interaction.subscriber_id == subscriber_id, Interaction.kind == kind
                        )
                    )
                )
            for pid in dict.fromkeys(paper_ids):
                if pid in existing:
                    continue
                s.add(Interaction(subscriber_id=subscriber_id, paper_id=pid, kind=kind, origin=origin, at=stamp))
                added += 1
            s.commit()
        return added

    def replace_interactions(
        self, subscriber_id: int, paper_ids: Iterable[str], kind: str, now: datetime, *, origin: str
    ) -> None:
        """Make this origin's interactions of a kind exactly `paper_ids` (the config's likes follow the file)."""
        wanted = list(dict.fromkeys(paper_ids))
        with self.session() as s:
            rows = list(
                s.exec(
                    select(Interaction).where(
                        Interaction.subscriber_id == subscriber_id,
                        Interaction.kind == kind,
                        Interaction.origin == origin,
                    )
                )
            )
            have = {r.paper_id for r in rows}
            for r in rows:
                if r.paper_id not in wanted:
                    s.delete(r)
            for pid in wanted:
                if pid not in have:
                    s.add(
                        Interaction(subscriber_id=subscriber_id, paper_id=pid, kind=kind, origin=origin, at=_utc(now))
                    )
            s.commit()

    def interactions(self, kinds: Sequence[str]) -> list[LikeRow]:
        """(email, paper, kind) of every interaction of the given kinds, for active subscribers."""
        with self.session() as s:
            rows = s.exec(
                select(Subscriber.email, Interaction.paper_id, Interaction.kind)
                .join(Subscriber, Subscriber.id == Interaction.subscriber_id)
                .where(Interaction.kind.in_(list(kinds)), Subscriber.active == True)  # noqa: E712
            )
            return [LikeRow(*row) for row in rows]

    def interaction_chunks(self, kind: str, size: int = 100_000) -> Iterator[tuple[list[int], list[str]]]:
        """(subscriber ids, paper ids) of every interaction of this kind, for active subscribers, in
        chunks of `size` rows straight from the driver (millions of rows at scale: SQLAlchemy's row
        objects cost 3x the query, and all rows at once ~1 GB)."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = (
            "SELECT i.subscriber_id, i.paper_id FROM interactions i JOIN subscribers s ON s.id = i.subscriber_id "
            f"WHERE i.kind = {mark} AND s.active"
        )
        with self.session() as s:
            cursor = s.connection().connection.cursor()
            try:
                cursor.execute(sql, (kind,))
                while rows := cursor.fetchmany(size):
                    yield [r[0] for r in rows], [r[1] for r in rows]
            finally:
                cursor.close()

    def papers_seen(
        self, subscriber_ids: Sequence[int], paper_ids: Sequence[str], kinds: Sequence[str]
    ) -> dict[int, set[str]]:
        """For each subscriber, which of `paper_ids` they already have an interaction of `kinds` with."""
        seen: dict[int, set[str]] = {}
        if not subscriber_ids or not paper_ids:
            return seen
        wanted = set(subscriber_ids)
        kinds = set(kinds)
        with self.session() as s:
            for start in range(0, len(paper_ids), 500):
                # by paper only (the kind is checked here): otherwise SQLite may pick the kind index,
                # which matches every like and was a scan of millions of rows at 100k readers
                rows = s.exec(
                    select(Interaction.subscriber_id, Interaction.paper_id, Interaction.kind).where(
                        Interaction.paper_id.in_(list(paper_ids[start : start + 500])),
                    )
                )
                for sid, pid, kind in rows:
                    if kind in kinds and sid in wanted:
                        seen.setdefault(sid, set()).add(pid)
        return seen

    def paper_ids_for(self, subscriber_id: int, kinds: Sequence[str]) -> set[str]:
        with self.session() as s:
            return set(
                s.exec(
                    select(Interaction.paper_id).where(
                        Interaction.subscriber_id == subscriber_id, Interaction.kind.in_(list(kinds))
                    )
                )
            )

    # -- deliveries -----------------------------------------------------------------------------

    def delivery(self, subscriber_id: int, digest_date: date) -> Delivery | None:
        with self.session() as s:
            return s.exec(
                select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.digest_date == digest_date)
            ).first()

    def create_delivery(
        self,
        subscriber_id: int,
        digest_date: date,
        papers: list[str],
        message_id: str,
        now: datetime,
        *,
        reasons: list[str] | None = None,
        trending: list[list[Any]] | None = None,
    ) -> Delivery:
        """The pending delivery row, written before the message leaves; returns the existing one if any.
        `reasons` (one per paper) and `trending` ([paper id, count]) let the web page show the digest as sent."""
        with self.session() as s:
            row = s.exec(
                select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.digest_date == digest_date)
            ).first()
            if row is not None:
                return row
            row = Delivery(
                subscriber_id=subscriber_id,
                digest_date=digest_date,
                papers=papers,
                reasons=list(reasons or []),
                trending=list(trending or []),
                message_id=message_id,
                created=_utc(now),
            )
            s.add(row)
            s.commit()
            return row

    def deliveries_on(self, digest_dates: Iterable[date]) -> dict[tuple[int, date], Delivery]:
        """Every delivery row on these digest dates, by (subscriber id, date): one query for a whole run."""
        days = sorted(set(digest_dates))
        found: dict[tuple[int, date], Delivery] = {}
        with self.session() as s:
            for chunk in _chunks(days, 100):
                for row in s.exec(select(Delivery).where(Delivery.digest_date.in_(list(chunk)))):
                    found[(row.subscriber_id, row.digest_date)] = row
        return found

    def pending_deliveries(
        self, subscriber_ids: Sequence[int] | None = None, *, now: datetime | None = None
    ) -> list[Delivery]:
        """Deliveries recorded but not yet sent (oldest first): a crash or a transient failure left
        them, or a planner wrote them.  With `now`, rows a sender holds (an unlapsed claim) are left out."""
        with self.session() as s:
            query = (
                select(Delivery)
                .where(Delivery.status.in_([str(w) for w in WAITING]))
                .order_by(Delivery.digest_date, Delivery.id)
            )
            if now is not None:
                query = query.where((Delivery.claimed_until == None) | (Delivery.claimed_until <= _utc(now)))  # noqa: E711
            if subscriber_ids is not None:
                query = query.where(Delivery.subscriber_id.in_(list(subscriber_ids)))
            return list(s.exec(query))

    def last_delivery(self, subscriber_id: int) -> Delivery | None:
        """The subscriber's most recent digest, whatever its status."""
        with self.session() as s:
            return s.exec(
                select(Delivery)
                .where(Delivery.subscriber_id == subscriber_id)
                .order_by(Delivery.digest_date.desc(), Delivery.id.desc())
            ).first()

    def requeue_delivery(self, subscriber_id: int, digest_date: date | None, now: datetime) -> Delivery:
        """Queue a failed digest again, as it was (same papers, same Message-ID), once its cause is
        fixed: pending, no attempts used, due at `now`, error and claim cleared; the next run or
        worker sends it.  `digest_date` None: the subscriber's latest failed digest.  `created` moves
        to `now` as well, so the catch-up window counts from the requeue (from the first try, the
        next run would give it up at once).  A digest that is not failed is left alone: DigestError."""
        stamp = _utc(now)
        table = Delivery.__table__
        with self.session() as s:
            query = select(Delivery).where(Delivery.subscriber_id == subscriber_id)
            if digest_date is None:
                query = query.where(Delivery.status == str(FAILED))
            else:
                query = query.where(Delivery.digest_date == digest_date)
            row = s.exec(query.order_by(Delivery.digest_date.desc(), Delivery.id.desc())).first()
            if row is None:
                raise DigestError(
                    "no failed digest to send again" if digest_date is None else f"no digest for {digest_date}"
                )
            if row.status == SENT_STATUS:
                when = f" at {aware(row.sent_at):%Y-%m-%d %H:%M} UTC" if row.sent_at else ""
                raise DigestError(f"the digest of {row.digest_date} was sent{when}: nothing to send again")
            if row.status != FAILED:
                raise DigestError(
                    f"the digest of {row.digest_date} is {row.status}, not failed: a run sends it by itself"
                )
            done = s.execute(
                update(table)
                .where(table.c.id == row.id, table.c.status == str(FAILED))
                .values(
                    status=str(PENDING),
                    attempts=0,
                    error="",
                    created=stamp,
                    next_attempt_at=stamp,
                    claimed_by="",
                    claimed_until=None,
                    sent_at=None,
                )
            ).rowcount
            s.commit()
            if not done:  # it changed under us (another requeue): say what it is now
                raise DigestError(f"the digest of {row.digest_date} changed meanwhile; see digest status")
            s.refresh(row)
            return row

    # -- leases ---------------------------------------------------------------------------------
    #
    # A lease is a row (name, owner, expires).  Taking it is one atomic statement: an UPDATE that only
    # matches an expired row (or one we already own), else an INSERT that fails on the primary key when
    # another owner holds it.  Both are plain SQLAlchemy, so they behave the same on SQLite (writes are
    # serialised) and PostgreSQL (a concurrent UPDATE re-checks its WHERE after taking the row lock).
    # `now` is the caller's wall clock; hosts sharing a database must keep their clocks roughly in step.

    def acquire_lease(self, name: str, owner: str, *, now: datetime, ttl: float) -> bool:
        """Take (or extend) the lease `name` for `owner` until now + ttl; False if someone else holds it."""
        stamp = _utc(now)
        expires = stamp + timedelta(seconds=ttl)
        with self._begin() as conn:
            taken = conn.execute(
                update(Lease)
                .where(Lease.name == name, or_(Lease.expires <= stamp, Lease.owner == owner))
                .values(owner=owner, acquired=stamp, expires=expires)
            ).rowcount
        if taken:
            return True
        try:
            with self._begin() as conn:
                conn.execute(insert(Lease).values(name=name, owner=owner, acquired=stamp, expires=expires))
        except IntegrityError:  # the row exists and is held by someone else
            return False
        return True

    def renew_lease(self, name: str, owner: str, *, now: datetime, ttl: float) -> bool:
        """Push the expiry of a lease we hold; False if it is no longer ours (it lapsed and was taken)."""
        with self._begin() as conn:
            return bool(
                conn.execute(
                    update(Lease)
                    .where(Lease.name == name, Lease.owner == owner)
                    .values(expires=_utc(now) + timedelta(seconds=ttl))
                ).rowcount
            )

    def take_over_lease(self, name: str, owner: str, *, previous: str, now: datetime, ttl: float) -> bool:
        """Take a lease from `previous` (known to be dead) before it expires; False if it changed hands."""
        stamp = _utc(now)
        with self._begin() as conn:
            return bool(
                conn.execute(
                    update(Lease)
                    .where(Lease.name == name, Lease.owner == previous)
                    .values(owner=owner, acquired=stamp, expires=stamp + timedelta(seconds=ttl))
                ).rowcount
            )

    def release_lease(self, name: str, owner: str) -> None:
        """Give a lease back (only if we still hold it)."""
        with self._begin() as conn:
            conn.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))

    def lease(self, name: str) -> Lease | None:
        """Who holds the lease `name` and until when (an expired row included)."""
        with self.session() as s:
            return s.get(Lease, name)

    def deliveries(self, subscriber_id: int | None = None) -> list[Delivery]:
        with self.session() as s:
            query = select(Delivery).order_by(Delivery.digest_date, Delivery.id)
            if subscriber_id is not None:
                query = query.where(Delivery.subscriber_id == subscriber_id)
            return list(s.exec(query))

    # -- at scale: bulk writes, and deliveries shared by many workers ----------------------------

    def add_subscribers(
        self, rows: Iterable[dict[str, Any]], now: datetime, *, origin: str = "import"
    ) -> dict[str, int]:
        """Insert many new subscribers in one transaction (an import, a benchmark); returns email -> id."""
        stamp = _utc(now)
        with self.session() as s:
            added = [Subscriber(created=stamp, origin=origin, **row) for row in rows]
            s.add_all(added)
            s.commit()
            return {row.email: row.id for row in added}

    def add_interactions_many(self, pairs: Iterable[tuple[int, str]], kind: str, now: datetime, *, origin: str) -> int:
        """Record many (subscriber id, paper id) interactions in one transaction, without checking for repeats."""
        stamp = _utc(now)
        rows = [
            {"subscriber_id": sid, "paper_id": pid, "kind": kind, "origin": origin, "at": stamp} for sid, pid in pairs
        ]
        with self.session() as s:
            for chunk in _chunks(rows, 20_000):
                s.execute(insert(Interaction.__table__), chunk)
            s.commit()
        return len(rows)

    def plan_deliveries(self, plans: Iterable[dict[str, Any]], now: datetime) -> None:
        """Write many pending deliveries at once, each with everything needed to render it later.

        Each plan has subscriber_id, digest_date, papers, reasons, trending and message_id.  A
        subscriber who already has a row for that day keeps it untouched (INSERT ... ON CONFLICT DO
        NOTHING on the one-digest-a-day constraint), so planning twice never sends twice.
        """
        stamp = _utc(now)
        table = Delivery.__table__
        dialect_insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(table).on_conflict_do_nothing(index_elements=["subscriber_id", "digest_date"])
        rows = [{"created": stamp, "reasons": [], "trending": [], **plan} for plan in plans]
        with self.session() as s:
            for chunk in _chunks(rows, 5_000):
                s.execute(statement, chunk)
            s.commit()

    def claim_deliveries(
        self,
        worker: str,
        now: datetime,
        *,
        limit: int = 100,
        lease: timedelta = timedelta(minutes=15),
        ids: Sequence[int] | None = None,
        ignore_wait: bool = False,
    ) -> list[Delivery]:
        """Take up to `limit` waiting deliveries (of `ids`, if given) for `worker`: pending or
        unconfirmed, held by nobody (or by a claim that lapsed), and due (`next_attempt_at` passed).

        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so workers on many machines neither wait for
        nor take each other's rows.  SQLite: one guarded UPDATE ... RETURNING, atomic under its
        single writer lock.  A sender that dies leaves its rows to be claimed again after `lease`.
        """
        stamp = _utc(now)
        table = Delivery.__table__
        free = (
            table.c.status.in_([str(w) for w in WAITING])
            & ((table.c.claimed_until == None) | (table.c.claimed_until <= stamp))  # noqa: E711
        )
        if not ignore_wait:  # (`digest send --force` retries before the wait is over)
            free = free & ((table.c.next_attempt_at == None) | (table.c.next_attempt_at <= stamp))  # noqa: E711
        if ids is not None:
            free = free & table.c.id.in_(list(ids))
        claim = {"claimed_by": worker, "claimed_until": stamp + lease}
        with self.session() as s:
            if self.engine.dialect.name == "postgresql":
                found = list(
                    s.execute(
                        select(table.c.id)
                        .where(free)
                        .order_by(table.c.id)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    ).scalars()
                )
                if found:
                    s.execute(update(table).where(table.c.id.in_(found)).values(**claim))
            else:
                oldest = select(table.c.id).where(free).order_by(table.c.id).limit(limit).scalar_subquery()
                found = list(
                    s.execute(
                        update(table).where(table.c.id.in_(oldest), free).values(**claim).returning(table.c.id)
                    ).scalars()
                )
            s.commit()
            if not found:
                return []
            return list(s.exec(select(Delivery).where(Delivery.id.in_(found)).order_by(Delivery.id)))

    def record_outcome(
        self,
        row: Delivery,
        status: DeliveryStatus,
        now: datetime,
        *,
        worker: str,
        error: str = "",
        attempted: bool = True,
        next_attempt_at: datetime | None = None,
        sent_later: list[tuple[int, str]] | None = None,
    ) -> None:
        """One delivery's outcome, written as it happens (one transaction): its status and error, one
        more attempt if it was `attempted`, when it may be tried again, its claim given back, and on
        SENT the papers recorded as sent to the reader (so they are not picked again), or, with
        `sent_later`, added to that list for the caller to write in bulk (`add_interactions_many`):
        a busy worker's ten index updates per digest cost more than the outcome itself."""
        stamp = _utc(now)
        params = {
            "row_id": row.id,
            "worker": worker,
            "new_status": str(status),
            "new_error": error[:2000],
            "tried": 1 if attempted else 0,
            "next_at": _utc(next_attempt_at) if status in WAITING else None,
            "sent_at": stamp if status == SENT_STATUS else None,
        }
        with self._begin() as conn:  # one transaction, statements built once: a sender writes one per message
            conn.execute(_OUTCOME, params)
            if status == SENT_STATUS and row.papers and sent_later is not None:
                sent_later.extend((row.subscriber_id, pid) for pid in dict.fromkeys(row.papers))
            elif status == SENT_STATUS and row.papers:
                conn.execute(
                    _SENT_PAPERS,
                    [{"sid": row.subscriber_id, "pid": pid, "at": stamp} for pid in dict.fromkeys(row.papers)],
                )

    def subscribers_by_id(self, ids: Sequence[int]) -> list[Subscriber]:
        """The given subscribers (active or not), in no particular order."""
        found: list[Subscriber] = []
        with self.session() as s:
            for chunk in _chunks(list(ids), 500):
                found.extend(s.exec(select(Subscriber).where(Subscriber.id.in_(chunk))))
        return found

    def claim_holders(self, now: datetime) -> list[str]:
        """The senders holding unlapsed claims on deliveries now."""
        with self.session() as s:
            return list(
                s.exec(
                    select(Delivery.claimed_by)
                    .where(Delivery.claimed_by != "", Delivery.claimed_until > _utc(now))
                    .distinct()
                )
            )

    def drop_claims_of(self, workers: Sequence[str]) -> int:
        """Give back every claim these senders hold (they are known to be dead); returns how many."""
        if not workers:
            return 0
        table = Delivery.__table__
        with self.session() as s:
            done = s.execute(
                update(table).where(table.c.claimed_by.in_(list(workers))).values(claimed_by="", claimed_until=None)
            ).rowcount
            s.commit()
        return int(done or 0)

    def delivery_status_counts(self, digest_date: date | None = None) -> dict[str, int]:
        """How many deliveries are in each status (on one digest date, or in all)."""
        with self.session() as s:
            query = select(Delivery.status, func.count()).group_by(Delivery.status)
            if digest_date is not None:
                query = query.where(Delivery.digest_date == digest_date)
            return dict(s.exec(query).all())

    # -- sources --------------------------------------------------------------------------------

    def source_cursor(self, name: str) -> str | None:
        with self.session() as s:
            row = s.get(SourceState, name)
            return row.cursor if row else None

    def save_source_state(self, name: str, *, cursor: str | None, now: datetime, error: str = "") -> None:
        """Remember how far a source got (on success) or why it failed (cursor kept unless one is given)."""
        with self.session() as s:
            row = s.get(SourceState, name) or SourceState(name=name)
            if error:
                row.last_error = error[:2000]
                if cursor is not None:  # progress a partly failed run did make
                    row.cursor = cursor
            else:
                row.cursor = cursor
                row.last_success = _utc(now)
                row.last_error = ""
            s.add(row)
            s.commit()

    # -- the web front ----------------------------------------------------------------------------

    def subscriber(self, *, id: int | None = None, email: str | None = None) -> Subscriber | None:
        """One subscriber by id or email, active or not."""
        with self.session() as s:
            if id is not None:
                return s.get(Subscriber, id)
            return s.exec(select(Subscriber).where(Subscriber.email == (email or "").lower())).first()

    def rate_hit(self, key: str, limit: int, window: float, now: float) -> bool:
        """Count one hit for `key`; False (and not counted) when `key` already had `limit` hits in the
        last `window` seconds.  Kept in the database, so all web processes share one count."""
        if window > RATE_HIT_KEEP:
            raise ValueError(f"rate-limit windows are at most {RATE_HIT_KEEP:g} s")
        key = key[:200]
        with self.session() as s:
            recent = s.exec(
                select(func.count()).select_from(RateHit).where(RateHit.key == key, RateHit.at > now - window)
            ).one()
            if recent >= limit:
                return False
            s.add(RateHit(key=key, at=now))
            self._rate_hits += 1
            if self._rate_hits % 500 == 1:  # now and then, forget old hits
                s.exec(delete(RateHit).where(RateHit.at <= now - RATE_HIT_KEEP))
            s.commit()
        return True

    def use_token(self, jti: str, purpose: str, now: datetime) -> bool:
        """Record a single-use token's nonce; False if it was used before (a replay)."""
        with self.session() as s:
            if s.get(UsedToken, jti) is not None:
                return False
            s.add(UsedToken(jti=jti, purpose=purpose, at=_utc(now)))
            try:
                s.commit()
            except IntegrityError:  # the same link clicked twice at once
                return False
        return True

    def set_feedback(self, subscriber_id: int, paper_id: str, kind: str, now: datetime, *, origin: str = "web") -> bool:
        """Like or dislike a paper (the opposite opinion is dropped); False if it was already so."""
        opposite = DISLIKE if kind == LIKE else LIKE
        with self.session() as s:
            rows = list(
                s.exec(
                    select(Interaction).where(
                        Interaction.subscriber_id == subscriber_id,
                        Interaction.paper_id == paper_id,
                        Interaction.kind.in_([LIKE, DISLIKE]),
                    )
                )
            )
            for r in rows:
                if r.kind == opposite:
                    s.delete(r)
            changed = not any(r.kind == kind for r in rows)
            if changed:
                s.add(
                    Interaction(subscriber_id=subscriber_id, paper_id=paper_id, kind=kind, origin=origin, at=_utc(now))
                )
            s.commit()
        return changed

    def remove_interaction(self, subscriber_id: int, paper_id: str, kind: str, *, origin: str) -> int:
        """Forget one subscriber's interaction of a kind and origin with a paper; returns how many went."""
        with self.session() as s:
            rows = list(
                s.exec(
                    select(Interaction).where(
                        Interaction.subscriber_id == subscriber_id,
                        Interaction.paper_id == paper_id,
                        Interaction.kind == kind,
                        Interaction.origin == origin,
                    )
                )
            )
            for r in rows:
                s.delete(r)
            s.commit()
            return len(rows)

    def liked_papers(self, subscriber_id: int, kind: str = LIKE) -> list[tuple[Paper, str]]:
        """(paper, origin) of a subscriber's likes (or dislikes), newest first."""
        with self.session() as s:
            rows = s.exec(
                select(Paper, Interaction.origin)
                .join(Interaction, Interaction.paper_id == Paper.id)
                .where(Interaction.subscriber_id == subscriber_id, Interaction.kind == kind)
                .order_by(Interaction.at.desc(), Interaction.id.desc())
            )
            return [(paper, origin) for paper, origin in rows]

    def search_papers(self, query: str, limit: int = 20) -> list[Paper]:
        """Papers whose title contains every word of `query` (any case), newest first."""
        words = [w for w in query.lower().split() if w][:8]
        if not words:
            return []
        with self.session() as s:
            stmt = select(Paper)
            for w in words:
                escaped = w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                stmt = stmt.where(func.lower(Paper.title).like(f"%{escaped}%", escape="\\"))
            return list(s.exec(stmt.order_by(Paper.first_seen.desc(), Paper.id).limit(limit)))

    def request_subscription(
        self, email: str, fields: dict[str, Any], liked: Sequence[str], now: datetime, *, nonce: str = ""
    ) -> Subscriber:
        """A web sign-up, kept under `nonce` (its confirmation link's) for `confirm_subscription`.

        Nothing about a reader who exists changes here: anyone can type an address into the form.
        An active reader is returned as is and nothing is kept (the caller sends a "you already get
        it" notice instead of a link); a new address gets an inactive web row with these settings
        and likes, which sends nothing until confirmed.
        """
        stamp = _utc(now)
        email = email.lower()
        liked = list(dict.fromkeys(liked))
        with self.session() as s:
            s.exec(delete(PendingSignup).where(PendingSignup.created < stamp - PENDING_SIGNUP_KEEP))
            row = s.exec(select(Subscriber).where(Subscriber.email == email)).first()
            if row is not None and row.active:
                s.commit()
                return row
            new_reader = row is None
            try:
                if row is None:
                    row = Subscriber(email=email, created=stamp, origin="web", active=False, **fields)
                    s.add(row)
                    s.flush()
                    for pid in liked:
                        s.add(Interaction(subscriber_id=row.id, paper_id=pid, kind=LIKE, origin="web", at=stamp))
                if nonce:
                    s.add(
                        PendingSignup(
                            nonce=nonce, email=email, fields=fields, liked=liked, new_reader=new_reader, created=stamp
                        )
                    )
                s.commit()
            except IntegrityError:
                if not new_reader:
                    raise
                s.rollback()  # the same new address signed up twice at once: the other request made the row
                return self.request_subscription(email, fields, liked, now, nonce=nonce)
            return row

    def confirm_subscription(self, email: str, now: datetime, *, nonce: str = "") -> Subscriber | None:
        """Activate a confirmed address (and forget an earlier unsubscribe), applying the sign-up its
        link's `nonce` names; None when the address has no row.

        A web reader takes exactly that sign-up's settings and adds its likes to their own (a row an
        earlier, unconfirmed sign-up made holds that stranger's likes: they go); a reader from the
        preferences file keeps the file's.  The address's other pending sign-ups are dropped, so an
        older link only activates and never brings back stale settings.
        """
        stamp = _utc(now)
        email = email.lower()
        with self.session() as s:
            row = s.exec(select(Subscriber).where(Subscriber.email == email)).first()
            if row is None:
                return None
            pending = list(s.exec(select(PendingSignup).where(PendingSignup.email == email)))
            chosen = next((p for p in pending if nonce and p.nonce == nonce), None)
            if chosen is not None and row.origin == "web":
                for key, value in chosen.fields.items():
                    setattr(row, key, value)
                mine = list(
                    s.exec(
                        select(Interaction).where(
                            Interaction.subscriber_id == row.id, Interaction.kind.in_([LIKE, DISLIKE])
                        )
                    )
                )
                placeholder = any(p.new_reader and p is not chosen for p in pending)
                for r in mine:
                    if (r.kind == DISLIKE and r.paper_id in chosen.liked) or (
                        placeholder and r.kind == LIKE and r.origin == "web"
                    ):
                        s.delete(r)
                kept = {r.paper_id for r in mine if r.kind == LIKE and not (placeholder and r.origin == "web")}
                for pid in chosen.liked:
                    if pid not in kept:
                        s.add(Interaction(subscriber_id=row.id, paper_id=pid, kind=LIKE, origin="web", at=stamp))
            row.active = True
            opt_out = s.get(OptOut, row.email)
            if opt_out is not None:
                s.delete(opt_out)
            for p in pending:
                s.delete(p)
            s.commit()
            return row

    def unsubscribe(self, email: str, now: datetime) -> bool:
        """Stop sending to an address, for good (the opt-out wins over the preferences file)."""
        email = email.lower()
        with self.session() as s:
            row = s.exec(select(Subscriber).where(Subscriber.email == email)).first()
            if row is not None:
                row.active = False
            if s.get(OptOut, email) is None:
                s.add(OptOut(email=email, at=_utc(now)))
            s.commit()
            return row is not None

    def update_preferences(self, subscriber_id: int, fields: dict[str, Any]) -> Subscriber:
        """Change a web subscriber's preferences; a config subscriber's come from the file (StoreError)."""
        with self.session() as s:
            row = s.get(Subscriber, subscriber_id)
            if row is None:
                raise StoreError(f"subscriber {subscriber_id} does not exist")
            if row.origin != "web":
                raise StoreError(f"{row.email} is set in the preferences file; change it there")
            for key, value in fields.items():
                setattr(row, key, value)
            s.commit()
            return row

    def latest_delivery(self, subscriber_id: int, on_or_before: date) -> Delivery | None:
        """The subscriber's most recent digest that went out, up to a date."""
        with self.session() as s:
            return s.exec(
                select(Delivery)
                .where(
                    Delivery.subscriber_id == subscriber_id,
                    Delivery.digest_date <= on_or_before,
                    Delivery.status == SENT_STATUS,
                )
                .order_by(Delivery.digest_date.desc())
            ).first()
