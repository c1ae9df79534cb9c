"""A real SMTP server on localhost that misbehaves on purpose: refuses chosen recipients (421/550),
drops the connection during DATA, answers slower than a client's timeout, accepts a message and
then hangs (to kill the client mid-batch), or holds one connection's messages while another
sends; and a server that refuses every connection.  Shared by the delivery fault tests of both
modes."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
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
        self.hang_after: int | None = None  # after this many messages in all, each one accepted hangs
        self.hang_in_session: int | None = None  # the first connection to take this many hangs on the last (once)
        self.hung_to = ""  # the address of the message it hangs on
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.delay = 0.0  # seconds before each 250 (a slow server: longer than the client's timeout)
        self.sessions: dict[object, int] = {}  # messages kept per connection, in the order of their first
        # awaited before each 250, with the connection's number (0 for the first to send) and its count so far
        self.on_message: Callable[[int, int], Awaitable[None]] | None = None

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
        count = self.sessions[session] = self.sessions.get(session, 0) + 1
        hang = self.hang_after is not None and len(self.messages) > self.hang_after
        if self.hang_in_session is not None and count == self.hang_in_session and not self.hung_to:
            self.hung_to, hang = to, True
        if hang:
            self.hanging.set()  # accepted, but the client never hears so
            await self.wait_for(self.release, 600)
        if self.on_message is not None:
            await self.on_message(list(self.sessions).index(session), count)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 OK"

    @staticmethod
    async def wait_for(event: threading.Event, seconds: float) -> bool:
        """Wait on the server's loop, other connections still served, until `event` is set or
        `seconds` pass; returns whether it was set."""
        for _ in range(int(seconds / 0.02)):
            if event.is_set():
                return True
            await asyncio.sleep(0.02)
        return event.is_set()

    def count(self) -> Counter[str]:
        return Counter(m["To"].addresses[0].addr_spec for m in self.messages)

    def ids(self, address: str) -> list[str]:
        return [m["Message-ID"] for m in self.messages if m["To"].addresses[0].addr_spec == address]


class Server:
    """A controllable aiosmtpd server on a fixed port (so it can be 'down' and come back)."""

    def __init__(self, port: int) -> None:
        self.port, self.inbox = port, FaultyInbox()
        self.controller: Controller | None = None

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


class RefusingServer(socketserver.ThreadingTCPServer):
    """Answers every connection with a 554 greeting and closes it (a relay that will not serve us),
    counting the connections: a sender that tried once per digest would show here."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections = 0
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Refuse)
        self.port = self.server_address[1]


class _Refuse(socketserver.BaseRequestHandler):
    server: RefusingServer

    def handle(self) -> None:
        with self.server._lock:
            self.server.connections += 1
        conn: socket.socket = self.request
        conn.sendall(b"554 5.3.2 not accepting connections\r\n")
        conn.close()


@pytest.fixture
def refusing_server() -> Iterator[RefusingServer]:
    srv = RefusingServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
