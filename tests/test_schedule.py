"""When digests are due: time zones, daylight saving, frequencies, catch-up; the run lease; the
persistent APScheduler jobs (restart, catch-up once, reconcile with a changed config)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.cron import CronTrigger

from digest.pipeline import run_daily
from digest.schedule import (
    DigestTrigger,
    RunLease,
    When,
    build_scheduler,
    due_day,
    next_send,
    reconcile,
    send_moment,
    wall_clock,
)
from digest.settings import Settings, load_settings
from digest.sources.files import read_jsonl
from digest.store import Store

from .conftest import ConfigFactory

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
SPRING = date(2026, 3, 29)  # Europe: clocks go 02:00 -> 03:00
AUTUMN = date(2026, 10, 25)  # Europe: clocks go 03:00 -> 02:00


def fires(trigger: object, start: datetime, count: int) -> list[datetime]:
    """The next `count` fire times, as APScheduler asks for them (previous fire time, now)."""
    out: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        out.append(nxt)
        previous, now = nxt, nxt
    return out


def test_spring_forward_send_time_that_does_not_exist_fires_once_an_hour_later() -> None:
    when = When("Europe/Berlin", "02:30")
    assert send_moment(when, SPRING) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 summer time
    assert due_day(when, datetime(2026, 3, 29, 1, 29, tzinfo=UTC), catch_up_hours=12) is None
    assert due_day(when, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), catch_up_hours=12) == SPRING
    local_days = [t.astimezone(BERLIN).date() for t in fires(DigestTrigger(when), datetime(2026, 3, 27, tzinfo=UTC), 4)]
    assert local_days == [date(2026, 3, 27), date(2026, 3, 28), SPRING, date(2026, 3, 30)]


def test_fall_back_send_time_that_happens_twice_fires_once() -> None:
    when = When("Europe/Berlin", "02:30")
    times = fires(DigestTrigger(when), datetime(2026, 10, 24, tzinfo=UTC), 3)
    assert [t.astimezone(BERLIN).date() for t in times] == [date(2026, 10, 24), AUTUMN, date(2026, 10, 26)]
    assert times[1] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30 (summer time)
    # A plain CronTrigger would fire at both 02:30s; ours does not.
    cron = fires(CronTrigger(hour=2, minute=30, timezone=BERLIN), datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert [t.astimezone(BERLIN).date() for t in cron] == [AUTUMN, AUTUMN]


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
        lines.append(json.dumps({
            "id": f"2611.{i:05d}",
            "title": f"Paper {i} on graph neural networks and segmentation",
            "abstract": f"We study topic {i} with graph neural networks, segmentation and transformers in depth.",
            "published": (now - timedelta(days=age)).isoformat(),
        }))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_config(make_config: ConfigFactory, tmp_path: Path, subscribers: str, *, now: datetime,
                ages: list[float] | None = None, extra: str = "") -> Settings:
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
    settings = tiny_config(make_config, tmp_path, """
[[subscribers]]
email = "b@example.org"
timezone = "Europe/Berlin"
send_at = "02:30"
""", now=start)
    sent = []
    for minutes in range(0, 24 * 60, 60):  # a run every hour through the day of the change
        report = run_daily(start + timedelta(minutes=minutes), settings)
        sent += [(o.digest_date, report.now) for o in report.outcomes if o.status == "sent"]
    assert sent == [(SPRING, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))]


def test_weekly_digest_covers_the_week_and_daily_only_its_window(make_config: ConfigFactory, tmp_path: Path) -> None:
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    settings = tiny_config(make_config, tmp_path, """
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
""", now=monday, ages=[0.5, 1.0, 3.0, 5.0, 6.5, 9.0])
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
    assert {o.email: o.status for o in tuesday.outcomes} == {"week@example.org": "not-due", "day@example.org": "no-papers"}


def test_a_missed_send_time_is_caught_up_within_the_window_only(make_config: ConfigFactory, tmp_path: Path) -> None:
    day = datetime(2026, 11, 23, tzinfo=UTC)
    settings = tiny_config(make_config, tmp_path, """
[[subscribers]]
email = "a@example.org"
send_at = "07:00"
""", now=day, extra="[schedule]\ncatch_up_hours = 3\n")
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
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
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


# -- the scheduler ------------------------------------------------------------------------------


def scheduler_config(tmp_path: Path, subscribers: str) -> Path:
    write_corpus(tmp_path / "papers.jsonl", wall_clock(), [0.2] * 6)
    path = tmp_path / "sched.toml"
    path.write_text(f"""
data_dir = "{(tmp_path / 'data').as_posix()}"
[delivery]
method = "outbox"
[ranking]
window_days = 2
[[sources]]
kind = "jsonl"
path = "papers.jsonl"
{subscribers}
""", encoding="utf-8")
    return path


def test_jobs_persist_follow_the_config_and_catch_up_once(tmp_path: Path) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    hour_ago = (wall_clock() - timedelta(hours=1)).strftime("%H:%M")
    later, later_still = ((wall_clock() + timedelta(hours=h)).astimezone(tokyo).strftime("%H:%M") for h in (3, 4))
    path = scheduler_config(tmp_path, f"""
[[subscribers]]
email = "a@example.org"
send_at = "{hour_ago}"
[[subscribers]]
email = "b@example.org"
timezone = "Asia/Tokyo"
send_at = "{later}"
""")
    settings = load_settings(path)
    store = Store(settings.database_url)

    # First process: schedule, then pretend a's run was due an hour ago and the process died.
    first = build_scheduler(settings, path, store=store, background=True)
    first.start(paused=True)
    changes = reconcile(first, settings, str(path))
    assert sorted(changes.added) == ["a@example.org", "b@example.org"]
    first.shutdown()
    jobs = SQLAlchemyJobStore(engine=store.engine, tablename="apscheduler_jobs")
    job = jobs.lookup_job("digest:a@example.org")
    job.next_run_time = wall_clock() - timedelta(hours=1)  # its run was due while the process was down
    jobs.update_job(job)

    # The preferences change while it is down: b moves to 07:15, c is new.
    c_entry = f'[[subscribers]]\nemail = "c@example.org"\ntimezone = "Asia/Tokyo"\nsend_at = "{later}"\n'
    path.write_text(path.read_text().replace(f'send_at = "{later}"', f'send_at = "{later_still}"') + c_entry, encoding="utf-8")

    second = build_scheduler(load_settings(path), path, store=store, background=True)
    second.start()  # the stored job fires once (catch-up), the first tick reconciles
    try:
        outbox = tmp_path / "data" / "outbox"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (list(outbox.rglob("*.eml")) and second.get_job("digest:c@example.org")):
            time.sleep(0.2)
        time.sleep(0.5)
        assert [p.name for p in outbox.rglob("*.eml")] == ["a@example.org.eml"]  # one catch-up, not a burst
        jobs = {j.id: j for j in second.get_jobs(jobstore="default")}
        assert set(jobs) == {"digest:a@example.org", "digest:b@example.org", "digest:c@example.org"}
        b_next = jobs["digest:b@example.org"].next_run_time.astimezone(tokyo)
        assert b_next.strftime("%H:%M") == later_still
        assert jobs["digest:a@example.org"].next_run_time > wall_clock()  # moved on to the next day
        assert jobs["digest:a@example.org"].misfire_grace_time == 12 * 3600

        # A subscriber removed from the file loses the job on the next reload.
        path.write_text(path.read_text().replace(c_entry, ""), encoding="utf-8")
        changes = reconcile(second, load_settings(path), str(path))
        assert changes.removed == ["c@example.org"] and not changes.changed and not changes.added
    finally:
        second.shutdown(wait=True)
        store.close()
    assert len(store.deliveries()) == 1


@pytest.mark.parametrize("zone", ["Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"])
def test_trigger_fires_once_per_local_date_through_a_year(zone: str) -> None:
    when = When(zone, "02:15")
    times = fires(DigestTrigger(when), datetime(2026, 1, 1, tzinfo=UTC), 365)
    days = [t.astimezone(ZoneInfo(zone)).date() for t in times]
    assert days == [date(2026, 1, 1) + timedelta(days=i) for i in range(365)] or days == [
        date(2026, 1, 2) + timedelta(days=i) for i in range(365)
    ]
