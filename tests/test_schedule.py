"""When digests are due: time zones, daylight saving, frequencies, catch-up; the run lease; `digest
run`'s tick (restart, catch-up once, a changed config, web sign-ups, nobody due costs no run)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pytest_httpserver import HTTPServer
from starlette.testclient import TestClient
from werkzeug import Request, Response

from digest.db import RunLease, Store
from digest.due import When, due_day, next_send, send_moment, wall_clock
from digest.pipeline import run_daily
from digest.schedule import Scheduler, run_forever
from digest.settings import Settings, load_settings
from digest.sources.files import read_jsonl
from digest.web import create_app

from .conftest import ConfigFactory, Inbox
from .source_feeds import hf_item, hf_json, hf_source

BERLIN = ZoneInfo("Europe/Berlin")
UTC = UTC
SPRING = date(2026, 3, 29)  # Europe: clocks go 02:00 -> 03:00
AUTUMN = date(2026, 10, 25)  # Europe: clocks go 03:00 -> 02:00


def fires(when: When, start: datetime, count: int) -> list[datetime]:
    """The next `count` send instants after `start`, each asked for after the one before."""
    out: list[datetime] = []
    for _ in range(count):
        start = next_send(when, start)
        out.append(start)
    return out


def test_spring_forward_send_time_that_does_not_exist_fires_once_an_hour_later() -> None:
    when = When("Europe/Berlin", "02:30")
    assert send_moment(when, SPRING) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 summer time
    assert due_day(when, datetime(2026, 3, 29, 1, 29, tzinfo=UTC), catch_up_hours=12) is None
    assert due_day(when, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), catch_up_hours=12) == SPRING
    local_days = [t.astimezone(BERLIN).date() for t in fires(when, datetime(2026, 3, 27, tzinfo=UTC), 4)]
    assert local_days == [date(2026, 3, 27), date(2026, 3, 28), SPRING, date(2026, 3, 30)]


def test_fall_back_send_time_that_happens_twice_fires_once() -> None:
    when = When("Europe/Berlin", "02:30")
    times = fires(when, datetime(2026, 10, 24, tzinfo=UTC), 3)
    assert [t.astimezone(BERLIN).date() for t in times] == [date(2026, 10, 24), AUTUMN, date(2026, 10, 26)]
    assert times[1] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30 (summer time)
    # The second 02:30 (winter time, 01:30 UTC) is no send time of its own, and the digest of that
    # date stays due through it (one date, one digest): a tick then finds nothing new.
    assert next_send(when, times[1]) == times[2]
    assert due_day(when, datetime(2026, 10, 25, 1, 30, tzinfo=UTC), catch_up_hours=12) == AUTUMN


def test_frequencies_and_zones() -> None:
    friday_evening = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)  # a Friday
    weekdays = When("America/New_York", "06:30", "weekdays")
    assert next_send(weekdays, friday_evening) == datetime(2026, 11, 30, 11, 30, tzinfo=UTC)  # Monday 06:30 EST
    weekly = When("Asia/Tokyo", "08:00", "weekly", "wednesday")
    nxt = next_send(weekly, friday_evening)
    assert nxt.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%A %H:%M") == "Wednesday 08:00"
    saturday_noon = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert due_day(weekdays, saturday_noon, catch_up_hours=12) is None
    assert due_day(When("America/New_York", "06:30"), saturday_noon, catch_up_hours=12) == date(2026, 11, 28)
    # Just after local midnight, yesterday's late send time is still within the window.
    late = When("Asia/Tokyo", "23:30")
    assert due_day(late, datetime(2026, 11, 27, 15, 10, tzinfo=UTC), catch_up_hours=2) == date(2026, 11, 27)


def write_corpus(path: Path, now: datetime, ages_days: list[float]) -> None:
    lines = []
    for i, age in enumerate(ages_days):
        lines.append(
            json.dumps(
                {
                    "id": f"2611.{i:05d}",
                    "title": f"Paper {i} on graph neural networks and segmentation",
                    "abstract": f"We study topic {i} with graph neural networks, segmentation and transformers in depth.",
                    "published": (now - timedelta(days=age)).isoformat(),
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_config(
    make_config: ConfigFactory,
    tmp_path: Path,
    subscribers: str,
    *,
    now: datetime,
    ages: list[float] | None = None,
    extra: str = "",
) -> Settings:
    write_corpus(tmp_path / "papers.jsonl", now, ages or [0.5] * 8)
    return make_config(f"""
[ranking]
window_days = 2
{extra}
[[sources]]
kind = "jsonl"
path = "papers.jsonl"
{subscribers}
""")


def test_one_digest_on_the_spring_forward_day_whatever_the_cron(make_config: ConfigFactory, tmp_path: Path) -> None:
    start = datetime(2026, 3, 28, 20, 30, tzinfo=UTC)
    settings = tiny_config(
        make_config,
        tmp_path,
        """
[[subscribers]]
email = "b@example.org"
timezone = "Europe/Berlin"
send_at = "02:30"
""",
        now=start,
    )
    sent = []
    for minutes in range(0, 24 * 60, 60):  # a run every hour through the day of the change
        report = run_daily(start + timedelta(minutes=minutes), settings)
        sent += [(o.digest_date, report.now) for o in report.outcomes if o.status == "sent"]
    assert sent == [(SPRING, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))]


def test_weekly_digest_covers_the_week_and_daily_only_its_window(make_config: ConfigFactory, tmp_path: Path) -> None:
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    settings = tiny_config(
        make_config,
        tmp_path,
        """
[[subscribers]]
email = "week@example.org"
frequency = "weekly"
weekly_day = "Monday"
send_at = "08:00"
max_papers = 20
[[subscribers]]
email = "day@example.org"
send_at = "08:00"
max_papers = 20
""",
        now=monday,
        ages=[0.5, 1.0, 3.0, 5.0, 6.5, 9.0],
    )
    store = Store(settings.database_url)  # each paper first seen when it was published
    for record in read_jsonl(tmp_path / "papers.jsonl").records:
        store.upsert_papers([record], record.published)
    store.close()
    report = run_daily(monday, settings)
    picked = {o.email: {p.paper.id for p in o.picks} for o in report.outcomes}
    assert [o.status for o in report.outcomes] == ["sent", "sent"]
    assert picked["week@example.org"] == {"2611.00000", "2611.00001", "2611.00002", "2611.00003", "2611.00004"}
    assert picked["day@example.org"] == {"2611.00000", "2611.00001"}
    # Not due on the other days of the week.
    tuesday = run_daily(monday + timedelta(days=1), settings)
    assert {o.email: o.status for o in tuesday.outcomes} == {
        "week@example.org": "not-due",
        "day@example.org": "no-papers",
    }


def test_a_missed_send_time_is_caught_up_within_the_window_only(make_config: ConfigFactory, tmp_path: Path) -> None:
    day = datetime(2026, 11, 23, tzinfo=UTC)
    settings = tiny_config(
        make_config,
        tmp_path,
        """
[[subscribers]]
email = "a@example.org"
send_at = "07:00"
""",
        now=day,
        extra="[schedule]\ncatch_up_hours = 3\n",
    )
    late = run_daily(day + timedelta(hours=10, minutes=1), settings)  # 3 h window long gone
    assert late.by_status() == {"not-due": 1}
    assert "next digest Tue 2026-11-24 07:00" in late.outcomes[0].detail
    caught_up = run_daily(day + timedelta(days=1, hours=9), settings)  # down at 07:00, back at 09:00
    assert caught_up.by_status() == {"sent": 1}


# -- the lease ----------------------------------------------------------------------------------


def test_lease_one_holder_expiry_renewal_and_a_dead_process(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'lease.db'}")
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert store.acquire_lease("run", "a", now=t0, ttl=60)
    assert not store.acquire_lease("run", "b", now=t0 + timedelta(seconds=30), ttl=60)
    assert store.renew_lease("run", "a", now=t0 + timedelta(seconds=30), ttl=60)
    assert not store.acquire_lease("run", "b", now=t0 + timedelta(seconds=80), ttl=60)  # renewed to 90 s
    assert store.acquire_lease("run", "b", now=t0 + timedelta(seconds=91), ttl=60)  # lapsed: taken
    assert not store.renew_lease("run", "a", now=t0 + timedelta(seconds=92), ttl=60)  # a learns it lost it
    store.release_lease("run", "a")  # not a's any more: nothing happens
    assert store.lease("run").owner == "b"
    store.release_lease("run", "b")
    assert store.lease("run") is None

    # A lease left by a process on this host that no longer exists is taken over at once.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    import socket

    dead_owner = f"{socket.gethostname()}:{gone.stdout.strip()}:deadbeef"
    assert store.acquire_lease("daily-run", dead_owner, now=wall_clock(), ttl=3600)
    lease = RunLease(store, ttl=3600)
    assert lease.start()
    assert store.lease("daily-run").owner == lease.owner
    assert not RunLease(store, ttl=3600).start()  # while we hold it, a live second run cannot
    lease.stop()
    store.close()


def test_run_lease_is_renewed_while_held(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'lease.db'}")
    with RunLease(store, ttl=6) as lease:
        first = store.lease("daily-run").expires
        time.sleep(2.5)  # a renewal every ttl/3 = 2 s
        assert store.lease("daily-run").expires > first
        assert not lease.lost.is_set()
    assert store.lease("daily-run") is None
    store.close()


# -- the scheduler: `digest run`'s tick ---------------------------------------------------------


class FakeClock:
    """The moment a test says it is (an aware UTC datetime), moved by hand."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment

    def at(self, hour: int, minute: int, second: int = 0) -> datetime:
        self.moment = self.moment.replace(hour=hour, minute=minute, second=second)
        return self.moment


def scheduler_config(tmp_path: Path, subscribers: str, *, now: datetime, extra: str = "") -> Path:
    write_corpus(tmp_path / "papers.jsonl", now, [0.2] * 6)
    path = tmp_path / "sched.toml"
    path.write_text(
        f"""
data_dir = "{(tmp_path / "data").as_posix()}"
[delivery]
method = "outbox"
{extra}
[ranking]
window_days = 2
[[sources]]
kind = "jsonl"
path = "papers.jsonl"
{subscribers}
""",
        encoding="utf-8",
    )
    return path


def outbox(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "data" / "outbox").rglob("*.eml"))


def test_a_process_down_at_send_time_catches_up_once_restarts_and_follows_the_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="digest")
    clock = FakeClock(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
    path = scheduler_config(
        tmp_path,
        """
[[subscribers]]
email = "a@example.org"
send_at = "07:00"
[[subscribers]]
email = "b@example.org"
timezone = "Asia/Tokyo"
send_at = "20:00"
""",
        now=clock(),
    )
    settings = load_settings(path)
    store = Store(settings.database_url)
    try:
        first = Scheduler(path, store, settings, clock=clock)
        assert first.tick()  # a's 07:00 passed an hour ago, while no process ran: caught up
        assert outbox(tmp_path) == ["a@example.org.eml"]
        assert "scheduled b@example.org (20:00 Asia/Tokyo, every day)" in caplog.text
        clock.at(8, 1)
        assert not first.tick()  # nobody due: no run at all
        clock.at(8, 2)
        restarted = Scheduler(path, store, load_settings(path), clock=clock)
        assert not restarted.tick()  # a's digest is recorded: a restart sends nothing again
        assert outbox(tmp_path) == ["a@example.org.eml"]

        # The file changes while it runs: b moves to 17:05 Tokyo (08:05 UTC), c joins at that time.
        c_entry = '[[subscribers]]\nemail = "c@example.org"\ntimezone = "Asia/Tokyo"\nsend_at = "17:05"\n'
        path.write_text(path.read_text().replace('send_at = "20:00"', 'send_at = "17:05"') + c_entry, encoding="utf-8")
        restarted.ask_reload()  # what SIGHUP does (else within reload_minutes)
        clock.at(8, 3)
        assert not restarted.tick()
        assert "rescheduled b@example.org (17:05 Asia/Tokyo, every day)" in caplog.text
        assert "scheduled c@example.org (17:05 Asia/Tokyo, every day)" in caplog.text
        clock.at(8, 4, 59)
        assert not restarted.tick()  # not before its time
        clock.at(8, 5)
        assert restarted.tick()
        assert outbox(tmp_path) == ["a@example.org.eml", "b@example.org.eml", "c@example.org.eml"]

        # A subscriber removed from the file leaves the schedule at the next reload.
        path.write_text(path.read_text().replace(c_entry, ""), encoding="utf-8")
        clock.at(8, 5 + 5)  # reload_minutes = 5 after the last read
        assert not restarted.tick()
        assert "unscheduled c@example.org" in caplog.text
        assert len(store.deliveries()) == 3
    finally:
        store.close()


def test_a_digest_a_run_leaves_undone_on_purpose_does_not_start_a_run_every_minute(tmp_path: Path) -> None:
    """No new papers with on_empty = "skip": one run at the send time, not one (and an ingest) a minute."""
    clock = FakeClock(datetime(2026, 11, 23, 7, 0, tzinfo=UTC))
    path = scheduler_config(
        tmp_path,
        '[[subscribers]]\nemail = "a@example.org"\nsend_at = "07:00"\n',
        now=clock(),
        extra='on_empty = "skip"',
    )
    (tmp_path / "papers.jsonl").write_text("", encoding="utf-8")  # no papers at all
    settings = load_settings(path)
    store = Store(settings.database_url)
    try:
        scheduler = Scheduler(path, store, settings, clock=clock)
        runs = []
        for minute in range(30):
            clock.at(7, minute)
            runs.append(scheduler.tick())
        assert runs == [True] + [False] * 29  # the config was re-read meanwhile, too
        assert outbox(tmp_path) == [] and store.deliveries() == []
    finally:
        store.close()


T0 = datetime(2026, 11, 23, 16, 50, tzinfo=UTC)  # 17:50 in Berlin


def test_a_web_sign_up_confirmed_while_digest_run_runs_gets_its_digest_at_its_hour(
    httpserver: HTTPServer, make_config: ConfigFactory, smtp_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    """`digest run`'s loop (the one the command runs, on a clock the test moves a minute per tick) over
    a real SQLite file, a real SMTP server and a real HTTP paper source; the reader signs up and
    confirms on the web front (in-process) at 17:52, for 17:56 Berlin time."""
    inbox, port = smtp_server
    asked: list[str] = []  # the source's requests: one a run (max_days = 1), none for a tick that runs nothing

    def papers(request: Request) -> Response:
        asked.append(request.args.get("date", ""))
        items = [
            hf_item(
                f"2611.1000{i}",
                f"World models that plan, part {i}",
                published="2026-11-23T08:00:00.000Z",
                summary="World models for planning and control.",
            )
            for i in range(6)
        ]
        return Response(hf_json(*items), content_type="application/json")

    httpserver.expect_request("/api/daily_papers").respond_with_handler(papers)
    settings = make_config(
        f"""
[web]
base_url = "https://digest.example.org"
{hf_source(httpserver.url_for(""), max_days=1)}
[[subscribers]]
email = "file@example.org"
timezone = "Europe/Berlin"
send_at = "18:00"
""",
        smtp_port=port,
        method="smtp",
    )
    clock = FakeClock(T0)
    lines: list[str] = []
    seen: list[tuple[str, int, int]] = []  # after each tick: Berlin time, digests to nia, digests to the file's reader

    def digests(address: str) -> int:
        return len([m for m in inbox.to(address) if m["Subject"] != "Confirm your paper digest"])

    with TestClient(
        create_app(settings, clock=lambda: clock().timestamp()), base_url="https://digest.example.org"
    ) as web:

        def wait(seconds: float) -> None:
            seen.append(
                (f"{clock().astimezone(BERLIN):%H:%M}", digests("nia@example.org"), digests("file@example.org"))
            )
            clock.moment += timedelta(seconds=seconds)
            if clock().astimezone(BERLIN).strftime("%H:%M") == "17:52":
                form = web.get("/subscribe")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
                answer = web.post(
                    "/subscribe",
                    data={
                        "csrf": csrf,
                        "email": "nia@example.org",
                        "timezone": "Europe/Berlin",
                        "send_at": "17:56",
                        "keywords": "world models",
                    },
                )
                assert "Check your inbox" in answer.text
                (confirm,) = inbox.to("nia@example.org")
                link = re.search(
                    r"https://digest\.example\.org(/confirm\?t=\S+)", confirm.get_body(("plain",)).get_content()
                ).group(1)  # type: ignore[union-attr]
                page = web.get(link)
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
                assert "You are subscribed" in web.post(link, data={"csrf": csrf}).text
            if clock() > T0 + timedelta(minutes=13):
                raise KeyboardInterrupt  # Ctrl-C

        run_forever(settings, tmp_path / "digest.toml", lines.append, clock=clock, wait=wait)

    assert seen == [(f"17:{m:02d}", int(m >= 56), int(m >= 60)) for m in range(50, 60)] + [
        (f"18:{m:02d}", 1, 1) for m in range(3)
    ]
    (msg,) = [m for m in inbox.to("nia@example.org") if m["Subject"] != "Confirm your paper digest"]
    assert "World models that plan" in msg.get_body(("plain",)).get_content()
    assert any("scheduled nia@example.org (17:56 Europe/Berlin, every day)" in line for line in lines), lines
    assert lines[-1] == "stopped"
    assert len(asked) == 2  # two runs (17:56 and 18:00), each ingesting once; the other 12 ticks fetched nothing


@pytest.mark.parametrize("zone", ["Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"])
def test_trigger_fires_once_per_local_date_through_a_year(zone: str) -> None:
    when = When(zone, "02:15")
    times = fires(when, datetime(2026, 1, 1, tzinfo=UTC), 365)
    days = [t.astimezone(ZoneInfo(zone)).date() for t in times]
    assert days == [date(2026, 1, 1) + timedelta(days=i) for i in range(365)] or days == [
        date(2026, 1, 2) + timedelta(days=i) for i in range(365)
    ]
