"""Shared fixtures: an isolated environment, a real SMTP server on localhost, a config factory."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from digest.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's secrets, data folder or config."""
    for name in ("DIGEST_SMTP_USERNAME", "DIGEST_SMTP_PASSWORD", "DIGEST_SECRET_KEY", "DIGEST_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
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

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's hook
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


ConfigFactory = Callable[..., Settings]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Write a TOML config into tmp_path and load it; `body` is appended to a minimal base."""

    def factory(body: str = "", *, smtp_port: int | None = None, method: str = "outbox", name: str = "digest.toml") -> Settings:
        path = tmp_path / name
        smtp = f"\n[smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsender = \"Digest <digest@example.org>\"\ntimeout = 5\n" if smtp_port else ""
        path.write_text(
            textwrap.dedent(
                f"""
                data_dir = "{(tmp_path / 'data').as_posix()}"
                [delivery]
                method = "{method}"
                {smtp}
                """
            )
            + textwrap.dedent(body),
            encoding="utf-8",
        )
        return load_settings(path)

    return factory
