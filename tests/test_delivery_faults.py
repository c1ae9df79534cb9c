"""Delivery under faults, in both modes of the one daily path (one process, `run_daily`; a planner
and four workers, `plan_day` + `work`) and on both backends (a SQLite file; the PostgreSQL server,
skipped without one), against a real SMTP server on localhost that misbehaves on purpose, with real
`digest send` / `digest worker` processes where the test kills them or starts two at once.

Each fault is one test, parametrized over mode x backend; the promises are checked where both
modes keep them, on the recorded delivery rows and in the server's inbox."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from digest.db import Delivery, DeliveryStatus, Store, aware
from digest.deliver import RateLimiter, Sender, WireMessage
from digest.errors import TransientDeliveryError
from digest.pipeline import RunReport, run_daily
from digest.settings import Settings, load_settings
from digest.workers import WorkReport, plan_day, work

from .conftest import REPO
from .faulty_smtp import RefusingServer, Server

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EMAILS = [f"reader{i}@example.org" for i in range(5)]
PENDING, SENT, FAILED = DeliveryStatus.PENDING, DeliveryStatus.SENT, DeliveryStatus.FAILED


def write_config(
    tmp_path: Path, port: int, *, extra: str = "", emails: list[str] = EMAILS, database_url: str = ""
) -> Path:
    """A config for `emails` (all due at NOW) on twelve papers from a JSONL file, sending through
    127.0.0.1:`port`; `extra` goes into [delivery]; the database is `database_url` if given."""
    import json

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
    database = f'[database]\nurl = "{database_url}"\n' if database_url else ""
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
{database}
[ranking]
min_score = -1e9  # these tests are about delivery: every day has its three picks, on topic or not
[[sources]]
kind = "jsonl"
path = "papers.jsonl"
{subs}""",
        encoding="utf-8",
    )
    return path


def settings_for(tmp_path: Path, port: int, **kw: Any) -> Settings:
    return load_settings(write_config(tmp_path, port, **kw))


def no_sleep(seconds: float) -> None:
    pass


@contextmanager
def opened(settings: Settings) -> Iterator[Store]:
    store = Store(settings.database_url)
    try:
        yield store
    finally:
        store.close()


def deliveries(settings: Settings) -> dict[str, Delivery]:
    """The recorded delivery rows, by reader's address."""
    with opened(settings) as store:
        emails = {s.id: s.email for s in store.subscribers()}
        return {emails[d.subscriber_id]: d for d in store.deliveries()}


def rows(settings: Settings) -> dict[str, tuple[str, int, str]]:
    return {e: (d.status, d.attempts, d.message_id) for e, d in deliveries(settings).items()}


def send_cmd(config: Path, now: datetime = NOW) -> list[str]:
    return [sys.executable, "-m", "digest", "send", "--config", str(config), "--now", now.isoformat()]


def worker_cmd(config: Path, now: datetime = NOW, *, batch: int, plan: bool = False) -> list[str]:
    command = [sys.executable, "-m", "digest", "worker", "--config", str(config), "--now", now.isoformat()]
    return [*command, "--batch", str(batch), *(["--plan"] if plan else [])]


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_SMTP")}
    env["DIGEST_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(REPO)
    return env


@contextmanager
def started(command: list[str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real `digest ...` process (stdout and stderr in one pipe), killed and reaped if still running after."""
    child = subprocess.Popen(
        command, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


# -- the two modes -------------------------------------------------------------------------------


@dataclass
class Ran:
    """What a run of either mode reported, in the terms both share."""

    sent: int
    failed: int
    fatal: list[str] = field(default_factory=list)  # one per sender that stopped on it
    unreachable: list[str] = field(default_factory=list)  # one per sender that found the server unreachable
    report: RunReport | None = None  # the one process's own report


def one_process(settings: Settings, now: datetime, *, sleep: Callable[[float], None] = no_sleep) -> Ran:
    """`digest send`: the daily run in this process."""
    report = run_daily(now, settings, sleep=sleep)
    assert not report.busy, report.busy
    counts = report.by_status()
    return Ran(
        counts["sent"],
        counts["failed"],
        [report.fatal] if report.fatal else [],
        [report.unreachable] if report.unreachable else [],
        report,
    )


def workers_here(
    settings: Settings,
    now: datetime,
    *,
    count: int = 4,
    batch: int = 2,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] = no_sleep,
) -> list[WorkReport]:
    """`count` delivery workers at once, each in a thread of this process with its own store and SMTP
    connection (`work`, as `digest worker` runs it), on the digest clock unless given `clock`."""

    def one(i: int) -> WorkReport:
        with opened(settings) as store:
            return work(
                store, settings, now, worker=f"test:w{i}", batch=batch, clock=clock or (lambda: now), sleep=sleep
            )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def planner_and_workers(settings: Settings, now: datetime, *, sleep: Callable[[float], None] = no_sleep) -> Ran:
    """`digest worker --plan` then four `digest worker`s sharing the planned rows at once."""
    with opened(settings) as store:
        plan_day(store, settings, now)
    reports = workers_here(settings, now, sleep=sleep)
    return Ran(
        sum(r.sent for r in reports),
        sum(r.failed for r in reports),
        [r.fatal for r in reports if r.fatal],
        [r.unreachable for r in reports if r.unreachable],
    )


ONE, WORKERS = "one-process", "planner-and-4-workers"
MODES: dict[str, Callable[..., Ran]] = {ONE: one_process, WORKERS: planner_and_workers}
SENDERS = {ONE: 1, WORKERS: 4}  # SMTP clients sending at once in each mode


# -- faults, in both modes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_server_down_at_first_then_back(tmp_path: Path, server: Server, database_url: str, mode: str) -> None:
    """Down: every digest is recorded and waits the retry time, one tried per sender; still down
    before that time: nothing is tried; up after it: each reader gets exactly one, with the
    Message-ID recorded on the first run; then no more."""
    settings = settings_for(tmp_path, server.port, database_url=database_url)
    first = MODES[mode](settings, NOW)  # nothing listens on the port yet
    assert first.sent == 0 and first.unreachable, first
    assert all("cannot connect" in u for u in first.unreachable), first.unreachable
    recorded = deliveries(settings)
    assert set(recorded) == set(EMAILS) and {d.status for d in recorded.values()} == {PENDING}
    tried = [e for e, d in recorded.items() if d.attempts]
    assert {d.attempts for d in recorded.values()} <= {0, 1} and 1 <= len(tried) <= SENDERS[mode], recorded
    assert all(aware(d.next_attempt_at) == NOW + timedelta(minutes=10) for d in recorded.values()), recorded

    early = MODES[mode](settings, NOW + timedelta(minutes=5))  # retry_after_minutes = 10: not yet
    assert early.sent == 0 and not early.unreachable
    assert {e: d.attempts for e, d in deliveries(settings).items()} == {e: d.attempts for e, d in recorded.items()}
    if early.report is not None:
        assert early.report.by_status() == {"pending": 5} and "next try after" in early.report.outcomes[0].detail

    server.start()
    later = MODES[mode](settings, NOW + timedelta(minutes=11))
    assert later.sent == 5 and not later.unreachable
    assert server.inbox.count() == {e: 1 for e in EMAILS}
    for e in EMAILS:  # the Message-ID recorded on the first run is the one that went out
        assert server.inbox.ids(e) == [recorded[e].message_id]
    assert {d.status for d in deliveries(settings).values()} == {SENT}

    assert MODES[mode](settings, NOW + timedelta(minutes=30)).sent == 0
    assert server.inbox.count() == {e: 1 for e in EMAILS}


@pytest.mark.parametrize("mode", MODES)
def test_550_for_one_address_others_arrive_and_the_failure_is_recorded(
    tmp_path: Path, server: Server, database_url: str, mode: str
) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[1]] = ["550 5.1.1 mailbox unavailable"]
    settings = settings_for(tmp_path, server.port, database_url=database_url)
    ran = MODES[mode](settings, NOW)
    assert (ran.sent, ran.failed) == (4, 1), ran
    assert server.inbox.count() == {e: 1 for e in EMAILS if e != EMAILS[1]}
    recorded = deliveries(settings)
    failed = recorded.pop(EMAILS[1])
    assert (failed.status, failed.attempts) == (FAILED, 1) and "550" in failed.error, failed
    assert {(d.status, d.attempts) for d in recorded.values()} == {(SENT, 1)}
    if ran.report is not None:
        [outcome] = [o for o in ran.report.outcomes if o.status == "failed"]
        assert outcome.email == EMAILS[1] and "550" in outcome.detail

    again = MODES[mode](settings, NOW + timedelta(hours=1))
    assert (again.sent, again.failed) == (0, 0)  # a 5xx is not retried
    assert server.inbox.count() == {e: 1 for e in EMAILS if e != EMAILS[1]}
    assert (deliveries(settings)[EMAILS[1]].status, deliveries(settings)[EMAILS[1]].attempts) == (FAILED, 1)


@pytest.mark.parametrize("mode", MODES)
def test_421_and_a_dropped_connection_are_retried_within_the_run(
    tmp_path: Path, server: Server, database_url: str, mode: str
) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[0]] = ["421 4.7.0 try again later", "421 4.7.0 still busy", "250 OK"]
    server.inbox.drop_once.add(EMAILS[2])
    slept: list[float] = []
    settings = settings_for(tmp_path, server.port, database_url=database_url)
    ran = MODES[mode](settings, NOW, sleep=slept.append)
    assert (ran.sent, ran.failed, ran.unreachable) == (5, 0, []), ran
    assert server.inbox.count() == {e: 1 for e in EMAILS}
    assert {(d.status, d.attempts) for d in deliveries(settings).values()} == {(SENT, 1)}  # one attempt each
    assert len(slept) == 2 and 0.05 <= slept[0] <= 0.1 and 0.1 <= slept[1] <= 0.2, slept  # backoff with jitter


@pytest.mark.parametrize("mode", MODES)
def test_421_until_attempts_run_out_stays_pending_for_the_next_run(
    tmp_path: Path, server: Server, database_url: str, mode: str
) -> None:
    server.start()
    server.inbox.rcpt_codes[EMAILS[3]] = ["421 4.7.0 try again later"]  # for good
    settings = settings_for(tmp_path, server.port, extra="max_attempts = 2", database_url=database_url)
    first = MODES[mode](settings, NOW)
    assert (first.sent, first.failed) == (4, 0), first
    waiting = deliveries(settings)[EMAILS[3]]
    assert (waiting.status, waiting.attempts) == (PENDING, 1) and "421" in waiting.error
    assert aware(waiting.next_attempt_at) == NOW + timedelta(minutes=10)

    again = MODES[mode](settings, NOW + timedelta(minutes=10))
    assert (again.sent, again.failed) == (0, 1), again
    if again.report is not None:
        assert again.report.by_status() == {"failed": 1, "skipped": 4}
    assert rows(settings)[EMAILS[3]][:2] == (FAILED, 2)
    assert server.inbox.count() == {e: 1 for e in EMAILS if e != EMAILS[3]}


@pytest.mark.parametrize("mode", MODES)
def test_login_refused_is_one_error_for_the_whole_run(
    tmp_path: Path, server: Server, database_url: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A refused login stops each sender at once with one error naming the settings to check, and
    leaves every digest pending, unattempted and free to go at once; fixed, the next run sends each
    reader one."""
    from aiosmtpd.smtp import AuthResult

    logins: list[object] = []

    def check(server_, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append(session.peer)  # one per connection (smtplib may try two mechanisms on one)
        return AuthResult(success=auth_data.password == b"right", handled=False)

    server.controller = Controller(
        server.inbox, hostname="127.0.0.1", port=server.port, auth_require_tls=False, authenticator=check
    )
    server.controller.start()
    monkeypatch.setenv("DIGEST_SMTP_USERNAME", "digest")
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "wrong")
    config = write_config(tmp_path, server.port, database_url=database_url)
    ran = MODES[mode](load_settings(config), NOW)
    assert ran.sent == 0 and server.inbox.messages == []
    assert 1 <= len(ran.fatal) <= SENDERS[mode], ran  # one error per sender, not one per digest
    assert all("refused the login" in f and "DIGEST_SMTP_PASSWORD" in f for f in ran.fatal), ran.fatal
    assert 1 <= len(set(logins)) <= SENDERS[mode], logins  # each sender logged in once, then stopped
    recorded = deliveries(load_settings(config))
    assert all(
        (d.status, d.attempts, d.next_attempt_at, d.claimed_by) == (PENDING, 0, None, "") for d in recorded.values()
    ), recorded
    if ran.report is not None:  # the run stopped at its first digest: the rest are not even recorded
        assert ran.report.by_status() == {"pending": 5} and len(recorded) == 1
        assert sum("refused the login" in o.detail for o in ran.report.outcomes) == 1
    else:  # every planned digest waits for the next worker
        assert set(recorded) == set(EMAILS)

    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "right")
    fixed = MODES[mode](load_settings(config), NOW + timedelta(minutes=1))
    assert fixed.sent == 5 and not fixed.fatal, fixed
    assert server.inbox.count() == {e: 1 for e in EMAILS}
    assert {(d.status, d.attempts) for d in deliveries(load_settings(config)).values()} == {(SENT, 1)}


@pytest.mark.parametrize("mode", MODES)
def test_a_refusing_server_is_not_hammered(
    tmp_path: Path, refusing_server: RefusingServer, database_url: str, mode: str
) -> None:
    """A server that refuses every connection (554): each sender gives up after one digest's tries
    and the rest wait; no connection per digest."""
    emails = [f"many{i}@example.org" for i in range(24)]
    settings = settings_for(tmp_path, refusing_server.port, emails=emails, database_url=database_url)
    started_at = time.monotonic()
    ran = MODES[mode](settings, NOW)
    assert time.monotonic() - started_at < 20
    assert ran.sent == 0 and ran.unreachable and all("554" in u for u in ran.unreachable), ran
    senders = SENDERS[mode]
    assert 1 <= refusing_server.connections <= senders * settings.delivery.attempts_per_run < len(emails)
    recorded = deliveries(settings)
    assert set(recorded) == set(emails) and {d.status for d in recorded.values()} == {PENDING}
    assert 1 <= sum(d.attempts for d in recorded.values()) <= senders, recorded  # one digest per sender tried
    assert all(d.attempts == 0 or aware(d.next_attempt_at) == NOW + timedelta(minutes=10) for d in recorded.values())


@pytest.mark.parametrize("mode", MODES)
def test_a_server_slower_than_the_timeout_sends_at_most_two_copies(
    tmp_path: Path, server: Server, database_url: str, mode: str
) -> None:
    """Each message is accepted after the client's timeout: the run records it unconfirmed (no copy
    per in-run retry); a later run sends it once more, and then it fails rather than go a third time."""
    server.inbox.delay = 1.0
    server.start()
    config = write_config(tmp_path, server.port, emails=EMAILS[:2], database_url=database_url)
    config.write_text(config.read_text().replace("timeout = 20", "timeout = 0.4"))
    settings = load_settings(config)
    for minutes in (0, 11, 40):
        assert MODES[mode](settings, NOW + timedelta(minutes=minutes)).sent == 0
    counts = server.inbox.count()
    assert set(counts) == set(EMAILS[:2]) and max(counts.values()) <= 2, counts
    recorded = deliveries(settings)
    assert {d.status for d in recorded.values()} == {FAILED}, recorded
    assert all("did not confirm" in d.error for d in recorded.values()), recorded
    for e in EMAILS[:2]:
        assert len(set(server.inbox.ids(e))) == 1  # a second copy is the same message


# -- real processes: killed mid-batch, two at once -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_killed_mid_batch_then_restarted_every_reader_gets_exactly_one(
    tmp_path: Path, server: Server, database_url: str, mode: str
) -> None:
    """A real `digest send` (or a `digest worker`, three more workers beside it) is killed with
    SIGKILL while a message is in flight, after some of its batch went out: what it sent is recorded
    sent at once, the rest of its claim waits; the restart sends only the rest, the one in flight a
    second time with the same Message-ID."""
    emails = [f"k{i}@example.org" for i in range(8)]
    server.start()
    config = write_config(tmp_path, server.port, emails=emails, database_url=database_url)
    settings = load_settings(config)
    if mode == ONE:
        server.inbox.hang_in_session = 3  # the run's one connection: two confirmed, the third hangs
        command = send_cmd(config)
    else:
        with opened(settings) as store:
            assert plan_day(store, settings, NOW).planned == len(emails)
        server.inbox.hang_in_session = 2  # of the worker's first batch of 3: one confirmed, one hangs, one waits
        command = worker_cmd(config, batch=3)
    with started(command, tmp_path) as child:
        if not server.inbox.hanging.wait(60):
            child.kill()
            pytest.fail(child.communicate(timeout=10)[0])
        if mode == WORKERS:  # three more workers (on the wall clock, as `digest worker`) drain the rest meanwhile
            beside = workers_here(settings, NOW, count=3, clock=lambda: datetime.now(UTC))
            assert sum(r.sent for r in beside) == len(emails) - 3, beside
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    server.inbox.release.set()

    hung, went = server.inbox.hung_to, [m["To"].addresses[0].addr_spec for m in server.inbox.messages]
    assert hung in went and len(set(went)) == len(went), went  # each once so far
    recorded = deliveries(settings)
    held = {e for e, d in recorded.items() if d.claimed_by == f"{socket.gethostname()}:{child.pid}"}
    assert hung in held and len(held) == (1 if mode == ONE else 2), recorded  # the in flight (and the untried)
    assert all(recorded[e].status == PENDING for e in held)
    assert {e for e, d in recorded.items() if d.status == SENT} == set(went) - {hung}  # recorded as they went
    if mode == ONE:  # the readers after the one in flight were not reached
        assert set(recorded) == set(went)
    else:
        assert set(recorded) == set(emails) and set(went) | held == set(emails)

    again = MODES[mode](settings, NOW + timedelta(minutes=1))
    assert again.sent == len(held) + (len(emails) - len(recorded)), again
    counts = server.inbox.count()
    assert counts == {e: 2 if e == hung else 1 for e in emails}, counts  # only the one in flight twice ...
    assert len(set(server.inbox.ids(hung))) == 1  # ... and then with the same Message-ID
    assert {d.status for d in deliveries(settings).values()} == {SENT}


@pytest.mark.parametrize("mode", MODES)
def test_two_runs_started_at_once_send_one_set(tmp_path: Path, server: Server, database_url: str, mode: str) -> None:
    """Two real `digest send`s (or two `digest worker --plan`s: two planners, each then a worker)
    started at the same moment send each reader one digest between them."""
    server.start()
    config = write_config(tmp_path, server.port, database_url=database_url)
    command = send_cmd(config) if mode == ONE else worker_cmd(config, batch=2, plan=True)
    with started(command, tmp_path) as first, started(command, tmp_path) as second:
        outputs = [first.communicate(timeout=120)[0], second.communicate(timeout=120)[0]]
    assert server.inbox.count() == {e: 1 for e in EMAILS}, outputs
    assert {(d.status, d.attempts) for d in deliveries(load_settings(config)).values()} == {(SENT, 1)}
    ends = [out.strip().splitlines()[-3:] for out in outputs]
    assert [first.returncode, second.returncode] == [0, 0], ends  # and neither fell over
    if mode == ONE:  # one did the work; the other found the lease taken (or, if it came later, nothing to do)
        assert any("5 sent" in out for out in outputs), outputs
        assert any("another daily run is in progress" in out or "5 skipped" in out for out in outputs), outputs
    else:  # between them, the two workers sent five
        assert sum(int(n) for out in outputs for n in re.findall(r": (\d+) sent,", out)) == 5, outputs


# -- the send step's parts, and TLS ----------------------------------------------------------------


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

        def send(self, msg: EmailMessage | WireMessage) -> None:
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
