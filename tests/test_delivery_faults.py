"""Delivery under faults, against a real SMTP server on localhost that misbehaves on purpose, and
the daily job run as a subprocess that the test kills mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from digest.deliver import RateLimiter, Sender
from digest.errors import TransientDeliveryError
from digest.pipeline import run_daily
from digest.settings import Settings, load_settings
from digest.store import FAILED, PENDING, SENT_STATUS, Store

from .conftest import REPO
from .faulty_smtp import Server

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EMAILS = [f"reader{i}@example.org" for i in range(5)]


def write_config(tmp_path: Path, port: int, *, extra: str = "", emails: list[str] = EMAILS) -> Path:
    papers = [
        {
            "id": f"2611.{i:05d}",
            "title": f"Paper {i} on {topic}",
            "published": (NOW - timedelta(hours=6)).isoformat(),
            "abstract": f"A study of {topic} number {i}, with experiments and analysis of {topic}.",
        }
        for i, topic in enumerate(["graph neural networks", "image segmentation", "language models", "robotics"] * 3)
    ]
    (tmp_path / "papers.jsonl").write_text("\n".join(json.dumps(p) for p in papers) + "\n", encoding="utf-8")
    subs = "".join(
        f'[[subscribers]]\nemail = "{e}"\nsend_at = "08:00"\nmax_papers = 3\nkeywords = ["segmentation"]\n'
        for e in emails
    )
    path = tmp_path / "digest.toml"
    path.write_text(
        f"""
data_dir = "{(tmp_path / "data").as_posix()}"
[smtp]
host = "127.0.0.1"
port = {port}
sender = "Digest <digest@example.org>"
timeout = 20
[delivery]
method = "smtp"
retry_backoff = 0.05
retry_after_minutes = 10
{extra}
[[sources]]
kind = "jsonl"
path = "papers.jsonl"
{subs}""",
        encoding="utf-8",
    )
    return path


def settings_for(tmp_path: Path, port: int, **kw: str) -> Settings:
    return load_settings(write_config(tmp_path, port, **kw))


def no_sleep(seconds: float) -> None:
    pass


def rows(settings: Settings) -> dict[str, tuple[str, int, str]]:
    store = Store(settings.database_url)
    try:
        emails = {s.id: s.email for s in store.subscribers()}
        return {emails[d.subscriber_id]: (d.status, d.attempts, d.message_id) for d in store.deliveries()}
    finally:
        store.close()


def send_cmd(config: Path, now: datetime = NOW) -> list[str]:
    return [sys.executable, "-m", "digest", "send", "--config", str(config), "--now", now.isoformat()]


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_SMTP")}
    env["DIGEST_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(REPO)
    return env


# -- in-process faults --------------------------------------------------------------------------


def test_server_down_at_first_then_back(tmp_path: Path, server: Server) -> None:
    settings = settings_for(tmp_path, server.port)
    first = run_daily(NOW, settings, sleep=no_sleep)  # nothing listens on the port yet
    assert first.by_status() == {"pending": 5}
    assert "cannot connect" in first.unreachable
    recorded = rows(settings)
    assert [recorded[e][:2] for e in EMAILS] == [(PENDING, 1)] + [(PENDING, 0)] * 4  # one tried, the rest waited

    early = run_daily(NOW + timedelta(minutes=5), settings, sleep=no_sleep)  # backoff: not yet
    assert early.by_status() == {"pending": 5} and "next try after" in early.outcomes[0].detail

    server.start()
    later = run_daily(NOW + timedelta(minutes=11), settings, sleep=no_sleep)
    assert later.by_status() == {"sent": 5}
    assert server.inbox.count() == {e: 1 for e in EMAILS}
    for e in EMAILS:  # the Message-ID recorded on the first run is the one that went out
        assert server.inbox.ids(e) == [recorded[e][2]]
    assert run_daily(NOW + timedelta(minutes=30), settings).by_status() == {"skipped": 5}


def test_550_for_one_address_others_arrive_and_the_failure_is_recorded(tmp_path: Path, server: Server) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[1]] = ["550 5.1.1 mailbox unavailable"]
    settings = settings_for(tmp_path, server.port)
    report = run_daily(NOW, settings, sleep=no_sleep)
    assert report.by_status() == {"sent": 4, "failed": 1}
    failed = next(o for o in report.outcomes if o.status == "failed")
    assert failed.email == EMAILS[1] and "550" in failed.detail
    assert set(server.inbox.count()) == set(EMAILS) - {EMAILS[1]}
    status, attempts, _ = rows(settings)[EMAILS[1]]
    assert (status, attempts) == (FAILED, 1)
    assert run_daily(NOW + timedelta(hours=1), settings).by_status() == {"skipped": 5}  # not retried


def test_421_and_a_dropped_connection_are_retried_within_the_run(tmp_path: Path, server: Server) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[0]] = ["421 4.7.0 try again later", "421 4.7.0 still busy", "250 OK"]
    server.inbox.drop_once.add(EMAILS[2])
    slept: list[float] = []
    settings = settings_for(tmp_path, server.port)
    report = run_daily(NOW, settings, sleep=slept.append)
    assert report.by_status() == {"sent": 5}, report.outcomes
    assert server.inbox.count() == {e: 1 for e in EMAILS}
    assert len(slept) == 2 and 0.05 <= slept[0] <= 0.1 and 0.1 <= slept[1] <= 0.2  # backoff with jitter


def test_421_until_attempts_run_out_stays_pending_for_the_next_run(tmp_path: Path, server: Server) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[3]] = ["421 4.7.0 try again later"]  # for good
    settings = settings_for(tmp_path, server.port, extra="max_attempts = 2")
    assert run_daily(NOW, settings, sleep=no_sleep).by_status() == {"sent": 4, "pending": 1}
    again = run_daily(NOW + timedelta(minutes=10), settings, sleep=no_sleep)
    assert again.by_status() == {"failed": 1, "skipped": 4}
    assert rows(settings)[EMAILS[3]][:2] == (FAILED, 2)


def test_login_refused_is_one_error_for_the_whole_run(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiosmtpd.smtp import AuthResult

    def refuse(server_, session, envelope, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=False, handled=False)

    server.controller = Controller(
        server.inbox, hostname="127.0.0.1", port=server.port, auth_require_tls=False, authenticator=refuse
    )
    server.controller.start()
    monkeypatch.setenv("DIGEST_SMTP_USERNAME", "digest")
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "wrong")
    settings = settings_for(tmp_path, server.port)
    report = run_daily(NOW, settings, sleep=no_sleep)
    assert "refused the login" in report.fatal and "DIGEST_SMTP_PASSWORD" in report.fatal
    assert report.by_status() == {"pending": 5}
    assert sum("refused the login" in o.detail for o in report.outcomes) == 1
    assert server.inbox.messages == []


def test_rate_limit_and_backoff_use_the_injected_clock() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock[0] += seconds

    limiter = RateLimiter(4, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert slept == [0.25] * 4

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def send(self, msg: EmailMessage) -> None:
            self.calls += 1
            if self.calls < 3:
                raise TransientDeliveryError("421 busy")

        def close(self) -> None:
            pass

    slept.clear()
    flaky = Flaky()
    Sender(flaky, attempts=3, backoff=2.0, sleep=sleep, jitter=lambda: 0.5).send(EmailMessage())
    assert flaky.calls == 3 and slept == [3.0, 6.0]
    with pytest.raises(TransientDeliveryError):
        Sender(Flaky(), attempts=2, backoff=1.0, sleep=sleep, jitter=lambda: 0.0).send(EmailMessage())


# -- a real process, killed --------------------------------------------------------------------


def test_killed_mid_batch_then_restarted_every_reader_gets_exactly_one(tmp_path: Path, server: Server) -> None:
    server.start()
    server.inbox.hang_after = 2  # the third message is accepted, then the server goes silent
    config = write_config(tmp_path, server.port)
    child = subprocess.Popen(
        send_cmd(config), env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert server.inbox.hanging.wait(30), child.communicate(timeout=5)[0]
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)  # reaps it and closes the pipe
    finally:
        if child.poll() is None:
            child.kill()
    server.inbox.hang_after = None
    server.inbox.release.set()
    assert len(server.inbox.messages) == 3

    again = subprocess.run(
        send_cmd(config, NOW + timedelta(minutes=1)),
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    counts = server.inbox.count()
    assert set(counts) == set(EMAILS)
    twice = [e for e, n in counts.items() if n == 2]
    assert len(twice) == 1 and all(n == 1 for e, n in counts.items() if e not in twice)  # only the one in flight
    in_flight = server.inbox.ids(twice[0])
    assert in_flight[0] == in_flight[1]  # ... and then with the same Message-ID
    settings = load_settings(config)
    assert {status for status, _, _ in rows(settings).values()} == {SENT_STATUS}


def test_two_runs_started_at_once_send_one_set(tmp_path: Path, server: Server) -> None:
    server.start()
    config = write_config(tmp_path, server.port)
    children = [
        subprocess.Popen(
            send_cmd(config), env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [c.communicate(timeout=60)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0], outputs
    assert server.inbox.count() == {e: 1 for e in EMAILS}, outputs
    # One did the work; the other found the lease taken (or, if it came later, nothing left to do).
    assert any("5 sent" in out for out in outputs)
    assert any("another daily run is in progress" in out or "5 skipped" in out for out in outputs), outputs


@pytest.fixture
def tls() -> Iterator[tuple[object, object]]:
    """A throwaway certificate authority and a server certificate for 127.0.0.1 (trustme)."""
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    yield ca, context


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_to_a_real_tls_server_and_the_certificate_is_checked(
    tmp_path: Path, server: Server, tls: tuple, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """STARTTLS (587) and implicit TLS (465) against aiosmtpd with a real certificate: the digests go
    over TLS and the login only inside it; a certificate the system does not trust is "server
    unavailable": nothing is sent (never a fallback to plain text), every digest waits for the next
    try, and the first says why."""
    from aiosmtpd.smtp import AuthResult

    ca, context = tls
    logins: list[tuple[str, bool]] = []

    def check(server_, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login.decode(), server_.transport.get_extra_info("ssl_object") is not None))
        return AuthResult(success=auth_data.password == b"s3cret")

    # aiosmtpd hides AUTH on implicit TLS unless told not to require TLS for it (aio-libs/aiosmtpd#281);
    # the authenticator checks the connection is TLS either way
    options = (
        dict(tls_context=context, require_starttls=True)
        if mode == "starttls"
        else dict(ssl_context=context, auth_require_tls=False)
    )
    server.controller = Controller(server.inbox, hostname="127.0.0.1", port=server.port, authenticator=check, **options)
    server.controller.start()
    monkeypatch.setenv("DIGEST_SMTP_USERNAME", "digest")
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "s3cret")
    config = write_config(tmp_path, server.port)
    config.write_text(config.read_text().replace("timeout = 20\n", f"timeout = 20\n{mode} = true\n"), encoding="utf-8")
    settings = load_settings(config)
    assert (settings.smtp.starttls, settings.smtp.ssl) == (mode == "starttls", mode == "ssl")

    untrusted = run_daily(NOW, settings, sleep=no_sleep)  # the system's CAs do not know our test CA
    assert "certificate verify failed" in untrusted.outcomes[0].detail, untrusted.outcomes[0].detail
    assert untrusted.by_status() == {"pending": 5} and server.inbox.messages == [] and logins == []

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # how a private relay's CA is trusted (OpenSSL's variable)
    report = run_daily(NOW + timedelta(minutes=20), settings, sleep=no_sleep)
    assert report.fatal == "" and report.by_status() == {"sent": 5}, report.outcomes
    assert server.inbox.count() == Counter({e: 1 for e in EMAILS})
    assert logins and all(login == ("digest", True) for login in logins)  # the password only ever went inside TLS
