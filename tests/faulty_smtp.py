"""A real SMTP server on localhost that misbehaves on purpose: refuses chosen recipients (421/550),
drops the connection during DATA, answers slower than a client's timeout, or accepts a message and
then hangs (to kill the client mid-batch).  Shared by the delivery fault tests of both modes."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from .conftest import free_port


class FaultyInbox:
    """An aiosmtpd handler: keeps messages, and can refuse chosen recipients (421/550), drop the
    connection during DATA, or accept a message and then hang (to kill the client mid-batch)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.rcpt_codes: dict[str, list[str]] = {}  # address -> replies to give, one per try
        self.drop_once: set[str] = set()
        self.hang_after: int | None = None
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.delay = 0.0  # seconds before each 250 (a slow server: longer than the client's timeout)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        codes = self.rcpt_codes.get(address) or ["250 OK"]
        reply = codes.pop(0) if len(codes) > 1 else codes[0]  # the last reply repeats
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope) -> str:
        to = envelope.rcpt_tos[0]
        if to in self.drop_once:
            self.drop_once.discard(to)
            server.transport.close()  # the connection drops before the 250: not accepted
            return "421 closing"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        if self.hang_after is not None and len(self.messages) > self.hang_after:
            self.hanging.set()  # accepted, but the client never hears so
            while not self.release.is_set():
                await asyncio.sleep(0.05)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 OK"

    def count(self) -> Counter[str]:
        return Counter(m["To"].addresses[0].addr_spec for m in self.messages)

    def ids(self, address: str) -> list[str]:
        return [m["Message-ID"] for m in self.messages if m["To"].addresses[0].addr_spec == address]


class Server:
    """A controllable aiosmtpd server on a fixed port (so it can be 'down' and come back)."""

    def __init__(self, port: int) -> None:
        self.port, self.inbox, self.controller = port, FaultyInbox(), None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.inbox.release.set()
            self.controller.stop()
            self.controller = None


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(free_port())
    try:
        yield srv
    finally:
        srv.stop()
