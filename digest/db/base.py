"""What every part of the store shares: one engine, sessions and transactions that go through one
guard (a deleted or replaced SQLite file, a failing server become one StoreError), and bringing the
schema to the code's revision on open.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import (
    inspect,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlmodel import Session

from digest import migrations
from digest.db.engine import _engine, _file_id, _home_expanded, _marker, _sqlite_file, database_trouble
from digest.errors import StoreError


class StoreBase:
    """The engine and the guarded ways into it; the other parts of the store build on these."""

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
        except (OperationalError, IntegrityError, ProgrammingError) as e:
            state = str(getattr(e.orig, "sqlstate", "") or "")
            # a PostgreSQL deadlock, or a table/index another process's migration created meanwhile
            conflict = state.startswith("40") or state in ("42P07", "42710")
            if isinstance(e, ProgrammingError) and not conflict:
                raise  # a real mistake in a statement, not a race
            if database_trouble(e, self.engine.dialect.loaded_dbapi) and not conflict:
                raise  # the database itself failed (full, read-only, gone): waiting would not help
            # another process (a second run or worker starting at the same moment) got there first
            self._wait_for_schema(cause=e)

    def _wait_for_schema(self, seconds: float = 30.0, cause: Exception | None = None) -> None:
        """Wait for another process creating or upgrading the schema to reach the newest revision."""
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
