"""Opening a database by URL: the engine, SQLite's pragmas and file checks, and what a failure
of the database itself means for the operator (`database_trouble`).
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import create_engine

from digest.errors import StoreError


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
