"""Shared fixtures: an isolated environment, a real SMTP server on localhost, a config factory."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from digest.db import Store
from digest.embeddings import MEMO_VAR
from digest.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _encoder_memo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One memo of the built-in model's calls for the session (`digest.embeddings.MEMO_VAR`): the many
    fresh data folders that encode the same sample corpus run the model once per batch, and get the
    very vectors the model gives for that batch."""
    os.environ[MEMO_VAR] = str(tmp_path_factory.mktemp("encoder-memo"))
    yield
    os.environ.pop(MEMO_VAR, None)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's secrets, data folder or config."""
    for name in (
        "DIGEST_SMTP_USERNAME",
        "DIGEST_SMTP_PASSWORD",
        "DIGEST_SECRET_KEY",
        "DIGEST_DATA_DIR",
        "DIGEST_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user-config"))  # no digest.toml of the developer's
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"].addresses[0].addr_spec == address]


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) collecting messages; yields (inbox, port)."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@contextmanager
def digest_serve(config: Path, port: int, *, key: str, data: Path, log: Path) -> Iterator[str]:
    """A real `digest serve` process for `config` on 127.0.0.1:`port`, once it answers; yields its
    base URL and stops it after (its output goes to `log`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_") or k == MEMO_VAR}
    env |= {"DIGEST_SECRET_KEY": key, "DIGEST_DATA_DIR": str(data), "OPENBLAS_NUM_THREADS": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "digest",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--config",
                str(config),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(base + "/subscribe", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "digest serve did not start: " + log.read_text(errors="replace")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


POSTGRES_URL_VAR = "DIGEST_TEST_POSTGRES_URL"


@functools.cache
def postgres_url() -> str | None:
    """This test process's PostgreSQL database, or None when no server is set.

    `DIGEST_TEST_POSTGRES_URL` names the server's test database; under pytest-xdist each worker
    gets a database of its own beside it (`digest_test_gw0`, ...), made on first use, so workers
    never reset each other's schema mid-test.
    """
    url = os.environ.get(POSTGRES_URL_VAR)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).first() is None:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def reset_postgres(url: str) -> None:
    """An empty public schema in the test database (each PostgreSQL test starts from nothing)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, then the PostgreSQL server `.ci/postgres` starts."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'store.db').as_posix()}"
    url = postgres_url()
    if not url:
        pytest.skip(
            f'no PostgreSQL server: set {POSTGRES_URL_VAR} (eval "$(.ci/postgres)" starts one, as .ci/run does)'
        )
    reset_postgres(url)
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A Store on an empty database, once per backend."""
    s = Store(database_url)
    try:
        yield s
    finally:
        s.close()


ConfigFactory = Callable[..., Settings]


WEB = "http://localhost:8000"  # the web front most tests link through (a body with its own [web] decides)


def write_config(
    folder: Path,
    body: str = "",
    *,
    smtp_port: int | None = None,
    method: str = "outbox",
    name: str = "digest.toml",
    web: bool = True,
) -> Settings:
    """Write a TOML config into `folder` (data in folder/data) and load it; `body` is appended to a minimal base.

    `web`: the base names a web front ([web] base_url = WEB) unless the body has a [web] table;
    web=False leaves it out, as a new user's file does (plain links, no buttons)."""
    path = folder / name
    smtp = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsender = "Digest <digest@example.org>"\ntimeout = 5\n'
        if smtp_port
        else ""
    )
    web_table = f'\n[web]\nbase_url = "{WEB}"\n' if web and "[web]" not in body else ""
    path.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{(folder / "data").as_posix()}"
            {web_table}
            [delivery]
            method = "{method}"
            {smtp}
            """
        )
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    return load_settings(path)


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Write a TOML config into tmp_path and load it; `body` is appended to a minimal base."""

    def factory(
        body: str = "",
        *,
        smtp_port: int | None = None,
        method: str = "outbox",
        name: str = "digest.toml",
        web: bool = True,
    ) -> Settings:
        return write_config(tmp_path, body, smtp_port=smtp_port, method=method, name=name, web=web)

    return factory


from . import faulty_smtp  # noqa: E402 - after free_port, which it uses

server = faulty_smtp.server  # the misbehaving SMTP server fixture, for every test module
refusing_server = faulty_smtp.refusing_server  # a server that refuses every connection (554), counting them
