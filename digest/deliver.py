"""Deliver: build a safe multipart email and hand it to SMTP or to a local outbox folder.

The only module that sends anything out.  Header values from the config are checked here again
(a newline in a name or subject could inject headers); SMTP failures are sorted into transient
(retry later), permanent (this address) and authentication (the whole run) errors, and a server that
cannot be reached at all (`ServerUnavailable`).  `Sender` wraps a transport with the within-run
retries (exponential backoff with jitter) and the outgoing rate limit, over an injectable clock.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import random
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as _SMTP_POLICY
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from digest.errors import (
    AuthenticationError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    ServerNotAnswering,
    ServerUnavailable,
    TransientDeliveryError,
    UnconfirmedDelivery,
)
from digest.settings import Settings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_UNSAFE = re.compile(r"[\r\n\x00]")
_B64_LINES = re.compile(rb".{1,76}", re.S)


@dataclass(frozen=True)
class Envelope:
    """Who a digest is from and to, with its stable Message-ID."""

    sender: Address
    recipient: Address
    subject: str
    message_id: str
    when: datetime
    digest_date: date


def _single_line(value: str, what: str) -> str:
    if _UNSAFE.search(value):
        raise DeliveryError(f"{what} contains a line break; refusing to build the message")
    return value


def parse_sender(sender: str) -> Address:
    """The From: address of the config's `smtp.sender` ('Name <addr>' or 'addr')."""
    _single_line(sender, "smtp.sender")
    name, addr = parseaddr(sender)
    if "@" not in addr:
        raise ConfigError(f"{sender!r} has no email address", field="smtp.sender")
    user, domain = addr.rsplit("@", 1)
    return Address(display_name=name, username=user, domain=domain)


def recipient(name: str, email: str) -> Address:
    _single_line(name, "subscriber name")
    user, domain = _single_line(email, "subscriber email").rsplit("@", 1)
    return Address(display_name=name, username=user, domain=domain)


def message_id(sender: Address, email: str, digest_date: date) -> str:
    """The same id for the same (subscriber, day), so a resent copy folds into the first."""
    digest = hashlib.sha256(f"{email}|{digest_date.isoformat()}".encode()).hexdigest()[:20]
    return f"<digest.{digest_date:%Y%m%d}.{digest}@{sender.domain or 'localhost'}>"


def build_message(
    envelope: Envelope, text: str, html: str, *, unsubscribe_url: str, unsubscribe_mailto: str
) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred) with List-Unsubscribe headers."""
    msg = EmailMessage()
    msg["From"] = envelope.sender
    msg["To"] = envelope.recipient
    msg["Subject"] = _single_line(envelope.subject, "subject")
    msg["Date"] = format_datetime(envelope.when)
    msg["Message-ID"] = envelope.message_id
    if unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{unsubscribe_mailto}>, <{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    else:  # no web front: unsubscribing is an email to the sender (RFC 8058 one-click needs an https URL)
        msg["List-Unsubscribe"] = f"<{unsubscribe_mailto}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Digest-Date"] = envelope.digest_date.isoformat()
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9 ]*<[A-Za-z0-9.+_-]+@[A-Za-z0-9.-]+>|[A-Za-z0-9.+_-]+@[A-Za-z0-9.-]+")


def _folded(name: str, value: str) -> bytes:
    """One header line as the email package folds and encodes it (RFC 2047 for non-ASCII).

    A short address of plain characters (most recipients) comes out of the email package as it
    went in, so it skips the header parser (tests/test_render_deliver.py checks the two agree)."""
    if name in ("To", "From") and len(name) + len(value) < 76 and _PLAIN_ADDRESS.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return _folded_by_policy(name, value)


@lru_cache(maxsize=4096)
def _folded_by_policy(name: str, value: str) -> bytes:
    return _SMTP_POLICY.fold_binary(name, _SMTP_POLICY.header_factory(name, value))


def message_bytes(
    envelope: Envelope, text: str, html: str, *, unsubscribe_url: str, unsubscribe_mailto: str, eight_bit: bool = False
) -> bytes:
    """The message `build_message` describes, straight to wire bytes (CRLF line ends).

    Same headers and bodies once parsed, about 40x cheaper than building and flattening an
    EmailMessage; List-Unsubscribe is folded between its two URLs (never RFC 2047-encoded).  A
    body whose lines all fit in 998 bytes goes as 7bit (ASCII) or, when `eight_bit` (the server
    takes 8BITMIME), as 8bit UTF-8: a third of the lines and bytes of base64, which is the fallback.
    """
    subject = _single_line(envelope.subject, "subject")
    for url in (unsubscribe_url, unsubscribe_mailto):
        _single_line(url, "unsubscribe link")
    boundary = f"==============={os.urandom(12).hex()}=="
    head = b"".join(
        (
            _folded("From", str(envelope.sender)),
            _folded("To", str(envelope.recipient)),
            _folded("Subject", subject),
            _folded("Date", format_datetime(envelope.when)),
            (
                f"Message-ID: {_single_line(envelope.message_id, 'message id')}\r\n"
                + _list_unsubscribe(unsubscribe_url, unsubscribe_mailto)
                + "Auto-Submitted: auto-generated\r\n"
                f"X-Digest-Date: {envelope.digest_date.isoformat()}\r\n"
                "MIME-Version: 1.0\r\n"
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            ).encode("ascii"),
        )
    )
    parts = [head]
    for subtype, body in (("plain", text), ("html", html)):
        body = body.replace("\r\n", "\n").replace("\r", "\n")
        data = (body if body.endswith("\n") else body + "\n").replace("\n", "\r\n").encode("utf-8")
        short = max(map(len, data.split(b"\r\n"))) <= 998
        if short and data.isascii():
            cte, payload = "7bit", data
        elif short and eight_bit:
            cte, payload = "8bit", data
        else:
            cte, payload = (
                "base64",
                b"\r\n".join(_B64_LINES.findall(binascii.b2a_base64(data, newline=False))) + b"\r\n",
            )
        parts.append(
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode("ascii")
        )
        parts.append(payload + b"\r\n")  # the CRLF before a boundary is not content
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts)


def _list_unsubscribe(url: str, mailto: str) -> str:
    """The List-Unsubscribe header lines: mailto and one-click URL, or the mailto alone without a web front."""
    if not url:
        return f"List-Unsubscribe: <{mailto}>\r\n"
    return f"List-Unsubscribe: <{mailto}>,\r\n <{url}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


@dataclass(frozen=True)
class WireMessage:
    """A message already in wire form (`message_bytes`), with its bare envelope addresses."""

    sender: str
    to: str
    data: bytes
    digest_date: date
    eight_bit: bool = False


class Transport(Protocol):
    """Something that takes finished messages: an SMTP connection or an outbox folder."""

    def send(self, msg: EmailMessage | WireMessage) -> None: ...

    def close(self) -> None: ...


class OutboxTransport:
    """Writes each message as an .eml file (atomically) instead of sending it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, msg: EmailMessage) -> Path:
        day = re.sub(r"[^0-9-]", "", str(msg["X-Digest-Date"] or "")) or "undated"
        to = re.sub(r"[^A-Za-z0-9@._-]", "_", msg["To"].addresses[0].addr_spec)
        return self.folder / day / f"{to}.eml"

    def send(self, msg: EmailMessage | WireMessage) -> None:
        if isinstance(msg, WireMessage):
            path = self.folder / msg.digest_date.isoformat() / f"{re.sub(r'[^A-Za-z0-9@._-]', '_', msg.to)}.eml"
            data = msg.data
        else:
            path, data = self.path_for(msg), msg.as_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".eml.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def takes_8bit(self) -> bool:
        return True  # a file takes any bytes

    def close(self) -> None:
        pass


class SmtpTransport:
    """One SMTP connection reused for a batch, reconnecting when the server drops it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        # (_WireSMTP / _WireSMTP_SSL: smtplib with a faster DATA for our CRLF wire bytes)
        cfg = self.settings.smtp
        conn: smtplib.SMTP | None = None
        try:
            if cfg.ssl:
                conn = _WireSMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context())
            else:
                conn = _WireSMTP(cfg.host, cfg.port, timeout=cfg.timeout)
                if cfg.starttls:
                    conn.starttls(context=ssl.create_default_context())
            if self.settings.smtp_username is not None:
                password = self.settings.smtp_password.get_secret_value() if self.settings.smtp_password else ""
                conn.login(self.settings.smtp_username.get_secret_value(), password)
        except BaseException:
            if conn is not None:  # connected, then STARTTLS or the login failed: do not leak the socket
                conn.close()
            raise
        return conn

    def _open(self) -> smtplib.SMTP:
        cfg = self.settings.smtp
        try:
            return self._connect()
        except smtplib.SMTPAuthenticationError as e:
            raise AuthenticationError(
                f"the SMTP server {cfg.host}:{cfg.port} refused the login ({e.smtp_code}); "
                "check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD"
            ) from e
        except smtplib.SMTPNotSupportedError as e:
            raise AuthenticationError(f"the SMTP server {cfg.host}:{cfg.port} does not support {e}") from e
        except (TimeoutError, smtplib.SMTPException, OSError) as e:
            raise ServerUnavailable(f"cannot connect to SMTP server {cfg.host}:{cfg.port}: {e}") from e

    def send(self, msg: EmailMessage | WireMessage) -> None:
        if isinstance(msg, WireMessage):
            self.send_bytes(msg.sender, msg.to, msg.data, eight_bit=msg.eight_bit)
        else:
            self._send(lambda conn: conn.send_message(msg))

    def send_bytes(self, sender: str, to: str, data: bytes, *, eight_bit: bool = False) -> None:
        """Send a message already in wire form (`message_bytes`) from and to these bare addresses."""
        options = ["BODY=8BITMIME"] if eight_bit else []
        self._send(lambda conn: conn.sendmail(sender, [to], data, mail_options=options))

    def takes_8bit(self) -> bool:
        """Does the server take 8bit bodies (8BITMIME)?  Connects if not yet connected."""
        if self._conn is None:
            self._conn = self._open()
        self._conn.ehlo_or_helo_if_needed()
        return bool(self._conn.has_extn("8bitmime"))

    def _send(self, deliver: Callable[[smtplib.SMTP], dict]) -> None:
        cfg = self.settings.smtp
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._open()
            self._conn.body_sent = False  # type: ignore[attr-defined]
            try:
                refused = deliver(self._conn)
            except (smtplib.SMTPServerDisconnected, TimeoutError) as e:
                body_sent = getattr(self._conn, "body_sent", False)
                timed_out = isinstance(e, TimeoutError) or isinstance(e.__context__, TimeoutError)
                self._drop()
                if timed_out and body_sent:  # the server has the whole message; its answer never came
                    raise UnconfirmedDelivery(
                        f"the SMTP server {cfg.host}:{cfg.port} took the message but did not confirm it within "
                        f"{cfg.timeout:g} s; it may have been delivered, so it is not sent again in this run"
                    ) from e
                if timed_out:
                    raise ServerNotAnswering(
                        f"the SMTP server {cfg.host}:{cfg.port} did not answer within {cfg.timeout:g} s"
                    ) from e
                if attempt == 2:
                    raise TransientDeliveryError(f"SMTP server closed the connection: {e}") from e
                continue  # closed without an answer (idle, or before its 250): not accepted, so reconnect once
            except smtplib.SMTPRecipientsRefused as e:
                code, text = next(iter(e.recipients.values()))
                raise _smtp_error(code, text) from e
            except smtplib.SMTPResponseException as e:
                if e.smtp_code in (421,):
                    self._drop()
                raise _smtp_error(e.smtp_code, e.smtp_error) from e
            except smtplib.SMTPNotSupportedError as e:  # the address needs SMTPUTF8, which this server lacks
                raise PermanentDeliveryError(f"the SMTP server cannot take this address: {e}") from e
            except ValueError as e:  # UnicodeEncodeError included: an address smtplib cannot put on the wire
                self._drop()  # possibly mid-transaction (MAIL sent, RCPT not): start clean
                raise PermanentDeliveryError(f"this address cannot be sent to: {e.__class__.__name__}: {e}") from e
            except (smtplib.SMTPException, OSError) as e:
                self._drop()
                raise TransientDeliveryError(f"SMTP error: {e}") from e
            if refused:
                code, text = next(iter(refused.values()))
                raise _smtp_error(code, text)
            return

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            self._drop()


class _WireData(smtplib.SMTP):
    """smtplib's DATA, with dot-stuffing by a byte replace instead of a regular expression over the
    message (a quarter of a millisecond per digest).  For bytes it sends exactly what smtplib
    would (a dot after every LF doubled, CRLF added if missing); text goes through smtplib's own."""

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        if not isinstance(msg, bytes):
            return super().data(msg)
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        q = (b"." if msg.startswith(b".") else b"") + msg.replace(b"\n.", b"\n..")
        if not q.endswith(b"\r\n"):
            q += b"\r\n"
        self.send(q + b".\r\n")
        self.body_sent = True  # from here on a lost answer means "may have been delivered"
        return self.getreply()


class _WireSMTP(_WireData):
    pass


class _WireSMTP_SSL(_WireData, smtplib.SMTP_SSL):
    pass


def _smtp_error(code: int, text: bytes | str) -> DeliveryError:
    detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    if 500 <= code < 600:
        return PermanentDeliveryError(f"SMTP {code}: {detail}")
    return TransientDeliveryError(f"SMTP {code}: {detail}")


class RateLimiter:
    """At most `per_second` calls to `wait` return per second (0: no limit); the clock is injectable."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = float("-inf")

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if now < self._next:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


class Sender:
    """Sends through a transport at the rate limit, retrying transient errors a few times within the run.

    Try k (k >= 2) waits backoff * 2**(k-2) seconds plus up to as much again of random jitter, so
    many digests retried at once do not hit the server in step.  Permanent and authentication errors
    are not retried; the last transient error is raised after `attempts` tries.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        attempts: int = 3,
        backoff: float = 1.0,
        per_second: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.transport = transport
        self.attempts, self.backoff = attempts, backoff
        self.sleep, self.jitter = sleep, jitter
        self.limiter = RateLimiter(per_second, clock=clock, sleep=sleep)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number `attempt` (2, 3, ...)."""
        base = self.backoff * 2 ** (attempt - 2)
        return base + base * self.jitter()

    def send(self, msg: EmailMessage | WireMessage) -> None:
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.sleep(self.delay(attempt))
            self.limiter.wait()
            try:
                self.transport.send(msg)
                return
            except (ServerNotAnswering, UnconfirmedDelivery):
                raise  # another try would cost a whole timeout, or could deliver the message twice
            except TransientDeliveryError:
                if attempt == self.attempts:
                    raise


@dataclass(frozen=True)
class RetryPolicy:
    """Across runs: a digest that did not go out waits `retry_after`, doubled after each failed
    attempt, and fails after `max_attempts` (the one rule both the daily run and the workers use)."""

    retry_after: timedelta
    max_attempts: int

    @classmethod
    def of(cls, settings: Settings) -> RetryPolicy:
        return cls(timedelta(minutes=settings.delivery.retry_after_minutes), settings.delivery.max_attempts)

    def after(self, attempts: int, now: datetime) -> tuple[bool, datetime]:
        """(give up?, next try) after `attempts` failed attempts in all."""
        return attempts >= self.max_attempts, now + self.retry_after * 2 ** max(attempts - 1, 0)


def make_transport(settings: Settings) -> Transport:
    if settings.delivery.method == "outbox":
        return OutboxTransport(settings.outbox_path)
    return SmtpTransport(settings)
