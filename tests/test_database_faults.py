"""The database failing under a run: full, read-only, deleted, or its server gone.

Each gives one `error:` line that names the database and what to do, and a non-zero exit; what was
recorded stays recorded, and the rerun neither mails a reader twice nor mails an unsubscribed one.
Real files, a real tmpfs or a real file-size limit, real `digest` processes and a real SMTP server.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from digest.db import MARKER_SUFFIX, DeliveryStatus, Store, discard_database
from digest.errors import StoreError
from digest.pipeline import run_daily
from digest.settings import load_settings

from .conftest import POSTGRES_URL_VAR, free_port, postgres_url, reset_postgres
from .faulty_smtp import FaultyInbox, Server
from .test_delivery_faults import (
    EMAILS,
    NOW,
    child_env,
    rows,
    send_cmd,
    write_config,
)


def db_url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file or folder read-only, for root too (root ignores file modes: chattr +i then)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    done = (
        subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True, text=True)
        if shutil.which("chattr")
        else None
    )
    if done is None or done.returncode != 0:
        pytest.skip(
            f"running as root, and chattr +i does not work here ({done.stderr.strip() if done else 'no chattr'}): "
            "nothing else makes a file read-only for root"
        )
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def small_disk(folder: Path, size: str = "16m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `folder` (root, and a container that allows it), else skip."""
    folder.mkdir(parents=True, exist_ok=True)
    done = None
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            check=False,
            capture_output=True,
            text=True,
        )
    if done is None or done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip() if done else 'not root'}); the file-size-limit case covers a full disk"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Write to a file in `folder` until the disk is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


# -- the store itself -----------------------------------------------------------------------------


def test_a_deleted_database_is_noticed_and_never_made_anew_in_silence(tmp_path: Path) -> None:
    path = tmp_path / "digest.db"
    store = Store(db_url(path))
    marker = path.with_name(path.name + MARKER_SUFFIX)
    assert marker.is_file()  # the first ever open makes the database, silently, and marks it
    store.sync_subscribers([], NOW)
    path.unlink()
    with pytest.raises(StoreError, match=f"{re.escape(str(path))} was deleted while this digest process was using it"):
        store.unsubscribe("a@example.org", NOW)  # SQLite alone would write this to the deleted file
    with pytest.raises(StoreError, match="was deleted"):
        store.paper_count()
    store.close()
    assert not path.exists()

    with pytest.raises(
        StoreError,
        match=f"{re.escape(str(path))} is missing, but digest kept its data there.*delete {re.escape(str(marker))}",
    ):
        Store(db_url(path))  # a new process: refused, not a new empty database
    assert not path.exists()
    path.write_bytes(b"")
    with pytest.raises(StoreError, match=f"{re.escape(str(path))} is empty"):
        Store(db_url(path))

    marker.unlink()  # starting afresh on purpose
    Store(db_url(path)).close()
    assert marker.is_file()


def test_a_replaced_database_is_noticed_and_the_next_process_uses_the_new_file(tmp_path: Path) -> None:
    path, other = tmp_path / "digest.db", tmp_path / "restored.db"
    store = Store(db_url(path))
    Store(db_url(other)).close()
    os.replace(other, path)  # e.g. a backup put back while a process still runs
    with pytest.raises(StoreError, match="was replaced while this digest process was using it.*run digest again"):
        store.subscribers()
    store.close()
    again = Store(db_url(path))
    assert again.subscribers() == []
    again.close()


def test_a_database_from_before_the_marker_gets_one_and_discard_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "digest.db"
    Store(db_url(path)).close()
    marker = path.with_name(path.name + MARKER_SUFFIX)
    marker.unlink()  # as a database made by an older digest
    store = Store(db_url(path))
    store.unsubscribe("a@example.org", NOW)
    store.close()
    assert marker.is_file()
    discard_database(path)  # what `digest demo` does
    assert not path.exists() and not marker.exists()
    Store(db_url(path)).close()


def test_a_full_disk_is_a_store_error_that_says_so(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        store = Store(db_url(disk / "digest.db"))
        try:
            store.sync_subscribers([], NOW)
            fill(disk)
            with pytest.raises(
                StoreError, match=r"database .*digest.db failed: database or disk is full.*free some space"
            ) as e:
                store.add_subscribers([{"email": f"r{i}@example.org", "name": "x" * 200} for i in range(2000)], NOW)
            assert e.value.__cause__ is not None  # raised from the driver's error
        finally:
            store.close()


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_database_is_a_store_error_that_says_so(tmp_path: Path, what: str) -> None:
    path = tmp_path / "data" / "digest.db"
    Store(db_url(path)).close()
    with read_only(path if what == "file" else path.parent):
        if what == "file":
            store = Store(db_url(path))  # reading still works
            try:
                assert store.subscribers() == []
                with pytest.raises(
                    StoreError,
                    match=f"{re.escape(str(path))} failed: attempt to write a readonly database.*let this user write",
                ):
                    store.unsubscribe("a@example.org", NOW)
            finally:
                store.close()
        else:
            with pytest.raises(
                StoreError,
                match=f"cannot open the database {re.escape(str(path))}: unable to open database file.*folder",
            ):
                Store(db_url(path))
    store = Store(db_url(path))  # writable again: as it was
    assert store.unsubscribe("a@example.org", NOW) is False
    store.close()


def test_postgresql_read_only_and_a_lost_connection_are_store_errors(tmp_path: Path) -> None:
    url = postgres_url()
    if not url:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_URL_VAR}")
    reset_postgres(url)
    Store(url).close()
    read_only_url = url + ("&" if "?" in url else "?") + "options=-c%20default_transaction_read_only%3Don"
    store = Store(read_only_url)
    try:
        with pytest.raises(
            StoreError,
            match=r"\*\*\*@.*failed: cannot execute INSERT in a read-only transaction; the database is read-only",
        ):
            store.unsubscribe("a@example.org", NOW)
    finally:
        store.close()

    name = f"digest-test-{uuid.uuid4().hex[:8]}"
    store = Store(url + ("&" if "?" in url else "?") + f"application_name={name}")
    other = create_engine(url)
    failure: list[BaseException] = []
    try:
        with other.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("LOCK TABLE leases IN ACCESS EXCLUSIVE MODE")  # the store's statement waits here

            def take() -> None:
                try:
                    store.acquire_lease("run", "me", now=NOW, ttl=60)
                except BaseException as e:
                    failure.append(e)

            thread = threading.Thread(target=take)
            thread.start()
            for _ in range(100):  # until the store's statement is waiting for the lock
                waiting = (
                    conn.exec_driver_sql(
                        f"SELECT pid FROM pg_stat_activity WHERE application_name = '{name}' AND wait_event_type = 'Lock'"
                    )
                    .scalars()
                    .all()
                )
                if waiting:
                    break
                time.sleep(0.05)
            assert waiting
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({waiting[0]})")  # the server drops the connection
            thread.join(10)
            conn.exec_driver_sql("ROLLBACK")
    finally:
        other.dispose()
        store.close()
    assert len(failure) == 1 and isinstance(failure[0], StoreError), failure
    assert "terminating connection" in str(failure[0]) and "check that it is running and reachable" in str(failure[0])


# -- a real `digest send`, its database broken mid-run --------------------------------------------


class BreakingInbox(FaultyInbox):
    """Calls `hook` when the first message arrives, before answering 250: the moment to break the
    database between writing a delivery's row and marking it sent."""

    def __init__(self, hook: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.hook = hook

    async def handle_DATA(self, server, session, envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return reply


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exactly one `error:` line and no traceback; returns the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stdout + result.stderr
    return errors[0]


def send(config: Path, tmp_path: Path, now: datetime) -> subprocess.CompletedProcess[str]:
    """`digest send` in a process of its own."""
    env = {**child_env(tmp_path), "COLUMNS": "400"}
    return subprocess.run(send_cmd(config, now), check=False, env=env, capture_output=True, text=True, timeout=120)


def run_here(config: Path, now: datetime) -> None:
    """The daily job in this process (the runs that should just work; the CLI is tested where it fails)."""
    report = run_daily(now, load_settings(config))
    assert not report.fatal and not report.unreachable, report
    assert {o.status for o in report.outcomes} <= {"sent", "skipped"}, report.outcomes


def test_database_deleted_mid_run_then_refused_then_restored(tmp_path: Path) -> None:
    server = Server(free_port())
    server.inbox = inbox = BreakingInbox()
    config = write_config(tmp_path, server.port)
    db = tmp_path / "data" / "digest.db"
    server.start()
    try:
        run_here(config, NOW)  # day 1: everyone
        store = Store(db_url(db))
        store.unsubscribe(EMAILS[4], NOW)
        store.close()
        with sqlite3.connect(db) as live, sqlite3.connect(tmp_path / "backup.db") as backup:
            live.backup(backup)  # last night's backup

        inbox.messages.clear()
        inbox.hook = db.unlink  # the file goes while the first digest of day 2 is in flight
        day2 = NOW + timedelta(days=1)
        line = one_error_line(send(config, tmp_path, day2))
        assert f"{db} was deleted while this digest process was using it" in line
        assert len(server.inbox.messages) == 1  # it stopped at once: nobody else was mailed

        line = one_error_line(send(config, tmp_path, day2 + timedelta(minutes=1)))
        assert f"{db} is missing" in line and f"delete {db}{MARKER_SUFFIX}" in line
        assert "move away digest.db-wal and digest.db-shm" in line  # SQLite would replay them into the restored copy
        assert not db.exists() and len(server.inbox.messages) == 1  # refused: no empty database, no mail

        for leftover in ("digest.db-wal", "digest.db-shm"):  # the operator does as told
            (db.parent / leftover).rename(tmp_path / leftover)
        shutil.copy(tmp_path / "backup.db", db)
        run_here(config, day2 + timedelta(minutes=2))
    finally:
        server.stop()
    counts = server.inbox.count()
    first = server.inbox.messages[0]["To"].addresses[0].addr_spec
    assert EMAILS[4] not in counts  # unsubscribed before the backup: never mailed again
    assert counts == {e: 2 if e == first else 1 for e in EMAILS[:4]}  # only the one in flight went twice ...
    ids = server.inbox.ids(first)
    assert ids[0] == ids[1]  # ... with the same Message-ID


@pytest.mark.parametrize("how", ["tmpfs", "file-size limit"])
def test_disk_full_mid_run_then_freed(tmp_path: Path, how: str) -> None:
    server = Server(free_port())
    config = write_config(tmp_path, server.port)
    data = tmp_path / "data"
    child: dict[str, int] = {}

    def disk_full() -> None:
        if how == "tmpfs":
            fill(data)
        else:  # every write of the child beyond its first byte now fails (EFBIG; Python ignores SIGXFSZ)
            resource.prlimit(child["pid"], resource.RLIMIT_FSIZE, (1, 1))

    server.inbox = BreakingInbox(disk_full)
    with small_disk(data) if how == "tmpfs" else _nothing():
        server.start()
        try:
            env = {**child_env(tmp_path), "COLUMNS": "400"}
            proc = subprocess.Popen(
                send_cmd(config), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            child["pid"] = proc.pid
            out, err = proc.communicate(timeout=120)
            line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            assert f"{data / 'digest.db'} failed:" in line
            assert "disk is full" in line or "disk I/O error" in line, line
            assert len(server.inbox.messages) == 1

            (data / "filler").unlink(missing_ok=True)  # space freed (the limit was the failed process's own)
            settings = load_settings(config)
            assert {status for status, _, _ in rows(settings).values()} == {
                DeliveryStatus.PENDING
            }  # recorded before it went: kept
            run_here(config, NOW + timedelta(minutes=1))
            assert {status for status, _, _ in rows(settings).values()} == {DeliveryStatus.SENT}
        finally:
            server.stop()
    counts = server.inbox.count()
    first = server.inbox.messages[0]["To"].addresses[0].addr_spec
    assert counts == {e: 2 if e == first else 1 for e in EMAILS}  # the one in flight again, no one else
    ids = server.inbox.ids(first)
    assert ids[0] == ids[1]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_database_fails_the_run_before_anything_is_sent(tmp_path: Path, what: str) -> None:
    server = Server(free_port())
    config = write_config(tmp_path, server.port)
    db = tmp_path / "data" / "digest.db"
    Store(db_url(db)).close()
    server.start()
    try:
        with read_only(db if what == "file" else db.parent):
            line = one_error_line(send(config, tmp_path, NOW))
            assert str(db) in line and ("read-only" in line if what == "file" else "cannot open" in line), line
            assert server.inbox.messages == []
        run_here(config, NOW + timedelta(minutes=1))
    finally:
        server.stop()
    assert server.inbox.count() == {e: 1 for e in EMAILS}


def test_digest_run_stops_when_its_database_is_deleted(tmp_path: Path) -> None:
    later = (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M")  # no digest due meanwhile
    config = write_config(tmp_path, free_port(), emails=[])
    config.write_text(
        config.read_text() + f'[[subscribers]]\nemail = "a@example.org"\nsend_at = "{later}"\n', encoding="utf-8"
    )
    db = tmp_path / "data" / "digest.db"
    env = {**child_env(tmp_path), "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)  # never a hung test
    watchdog.start()
    try:
        assert proc.stdout is not None
        for out_line in proc.stdout:  # up, and the first tick done
            if "scheduled a@example.org" in out_line:
                break
        db.unlink()
        for _ in range(60):  # a tick now (one asked for while the first still runs is skipped: ask again)
            proc.send_signal(signal.SIGHUP)
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("digest run went on after its database was deleted")
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    # the scheduler's own store noticed (or, if its first tick was still going, the tick's new one refused)
    assert f"{db} was deleted while this digest process was using it" in line or f"{db} is missing" in line, line
    assert not db.exists()  # nor did the scheduler's own connections make an empty one


def test_the_web_front_answers_503_when_its_database_is_gone(tmp_path: Path) -> None:
    """`digest serve` after its database was deleted: every page says so with a 503 (nothing
    changed), never a 500 and a traceback per request."""
    from starlette.testclient import TestClient

    from digest.web import create_app

    config = tmp_path / "digest.toml"
    config.write_text(f'data_dir = "{(tmp_path / "data").as_posix()}"\n')
    settings = load_settings(config)
    store = Store(settings.database_url)
    try:
        with TestClient(create_app(settings, store=store), raise_server_exceptions=True) as client:
            assert client.get("/subscribe?q=graphs").status_code == 200
            (tmp_path / "data" / "digest.db").unlink()
            answer = client.get("/subscribe?q=graphs")
            assert answer.status_code == 503 and "Nothing was changed" in answer.text
            assert answer.headers["Retry-After"] == "300"
    finally:
        store.engine.dispose()
