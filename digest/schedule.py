"""Schedule: when each digest is due, one APScheduler job per subscriber, and one run at a time.

Three layers, each usable alone:

* the due rule, pure functions of (subscriber, now): `send_moment`, `due_day`, `next_send`.  A send
  time that does not exist on a spring-forward day (02:30 in Europe/Berlin) happens at the same
  instant an hour "later" (03:30 summer time); one that happens twice on a fall-back day counts once.
* `RunLease`: a database lease (see `Store.acquire_lease`) held, and renewed in the background, by
  the daily run, so two processes started by mistake never run it at once.
* the scheduler (`build_scheduler`, `reconcile`, `run_forever`): APScheduler 3 with its jobs in the
  project's database (SQLAlchemyJobStore), so they survive restarts; `coalesce` plus a misfire grace
  of `schedule.catch_up_hours` make a process that was down at send time catch up once.  The config
  is re-read every `schedule.reload_minutes` (or on SIGHUP) and the jobs follow it.

The scheduler is only the trigger: the pipeline's rule (one digest per subscriber and local date,
the delivery row written before the message leaves) is what keeps a digest from going out twice.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger

from digest.errors import DigestError, StoreError
from digest.settings import Settings, load_settings
from digest.store import Store

log = logging.getLogger("digest.schedule")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RUN_LEASE = "daily-run"
JOB_PREFIX = "digest:"
RELOAD_JOB = "digest-reload"

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(timezone.utc)


# -- the due rule -------------------------------------------------------------------------------


class Timed(Protocol):
    """What the due rule needs of a subscriber (the settings entry or the store row)."""

    timezone: str
    send_at: str
    frequency: str
    weekly_day: str


def is_send_day(sub: Timed, day: date) -> bool:
    """Does the subscriber get a digest on this local date at all?"""
    if sub.frequency == "weekdays":
        return day.weekday() < 5
    if sub.frequency == "weekly":
        return WEEKDAYS[day.weekday()] == sub.weekly_day
    return True


def send_moment(sub: Timed, day: date) -> datetime:
    """The UTC instant of the subscriber's send time on a local date.

    A local time skipped by a clock change is taken with the offset before the change (02:30 on a
    Berlin spring-forward day is 01:30 UTC, i.e. 03:30 summer time); a repeated one is its first
    occurrence.
    """
    hour, minute = (int(x) for x in sub.send_at.split(":"))
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(sub.timezone), fold=0)
    return local.astimezone(timezone.utc)


def due_day(sub: Timed, now: datetime, *, catch_up_hours: float) -> date | None:
    """The local date whose digest is due at `now`: its send time has passed, less than
    `catch_up_hours` ago (today's, or yesterday's just after midnight); None if none is."""
    today = now.astimezone(ZoneInfo(sub.timezone)).date()
    window = timedelta(hours=catch_up_hours)
    for day in (today, today - timedelta(days=1)):
        if is_send_day(sub, day):
            moment = send_moment(sub, day)
            if moment <= now <= moment + window:
                return day
    return None


def next_send(sub: Timed, after: datetime) -> datetime:
    """The first send instant strictly after `after` (UTC)."""
    day = after.astimezone(ZoneInfo(sub.timezone)).date() - timedelta(days=1)
    for _ in range(16):
        if is_send_day(sub, day):
            moment = send_moment(sub, day)
            if moment > after:
                return moment
        day += timedelta(days=1)
    raise AssertionError("no send day within two weeks")  # every frequency has one each week


def window_days(sub: Timed, default: int) -> int:
    """How many days of papers a digest picks from: a weekly one covers at least the whole week."""
    return max(default, 7) if sub.frequency == "weekly" else default


def describe(sub: Timed) -> str:
    """When the digests go out, in words: "07:30 Europe/Berlin, every day" (or "Monday to Friday", "Fridays")."""
    days = {"daily": "every day", "weekdays": "Monday to Friday", "weekly": f"{sub.weekly_day.capitalize()}s"}[sub.frequency]
    return f"{sub.send_at} {sub.timezone}, {days}"


@dataclass(frozen=True)
class When:
    """A subscriber's timing, as stored in a trigger (plain strings, so it pickles anywhere)."""

    timezone: str
    send_at: str
    frequency: str = "daily"
    weekly_day: str = "monday"

    @classmethod
    def of(cls, sub: Timed) -> When:
        return cls(sub.timezone, sub.send_at, sub.frequency, sub.weekly_day)


class DigestTrigger(BaseTrigger):
    """An APScheduler trigger that fires at each of `next_send`'s instants: once per send day,
    also on the days the clocks change (a plain CronTrigger fires twice on a fall-back day)."""

    def __init__(self, when: When) -> None:
        self.when = when

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is not None and previous_fire_time >= now:
            return next_send(self.when, previous_fire_time)
        # The first instant at or after now (a fire time equal to now is still to come).
        return next_send(self.when, now - timedelta(microseconds=1))

    def __str__(self) -> str:
        return describe(self.when)

    def __repr__(self) -> str:
        return f"<DigestTrigger ({self})>"


# -- one run at a time --------------------------------------------------------------------------


def lease_owner() -> str:
    """host:pid:random, so a lease left by a dead process on this host can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """Is `owner` a process on this host that no longer exists?"""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseBusy(DigestError):
    """Another run holds the daily-run lease."""


class RunLease:
    """The daily-run lease: taken on enter (waiting up to `wait` seconds), renewed every ttl/3 by
    a background thread, released on exit.  `lost` is set if a renewal finds it taken over (this
    process stalled past the expiry), and the run then stops sending."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float,
        wait: float = 0.0,
        name: str = RUN_LEASE,
        owner: str | None = None,
        clock: Clock = wall_clock,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.ttl, self.wait, self.name = store, ttl, wait, name
        self.owner = owner or lease_owner()
        self.clock, self.sleep = clock, sleep
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        deadline = time.monotonic() + self.wait
        while True:
            if self.store.acquire_lease(self.name, self.owner, now=self.clock(), ttl=self.ttl):
                return True
            holder = self.store.lease(self.name)
            if holder is not None and owner_is_dead(holder.owner):
                if self.store.take_over_lease(self.name, self.owner, previous=holder.owner, now=self.clock(), ttl=self.ttl):
                    log.warning("took over the run lease from %s (process gone)", holder.owner)
                    return True
            if time.monotonic() >= deadline:
                return False
            self.sleep(min(1.0, max(0.05, self.ttl / 20)))

    def holder(self) -> str:
        row = self.store.lease(self.name)
        return f"{row.owner} until {row.expires:%Y-%m-%d %H:%M:%S} UTC" if row else "nobody"

    def start(self) -> bool:
        """Take the lease and keep it renewed; False if another run holds it (after waiting)."""
        if not self.acquire():
            return False
        self._thread = threading.Thread(target=self._renew, name="digest-lease", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop renewing and give the lease back (if we hold it).  If the database failed, the lease
        is left to lapse (or to be taken over from this dead process): the run's own error is the
        one to see, not a second one from here."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            try:
                self.store.release_lease(self.name, self.owner)
            except StoreError as e:
                log.info("the run lease was not given back, it lapses by itself: %s", e)

    def __enter__(self) -> RunLease:
        if not self.start():
            raise LeaseBusy(f"another daily run is in progress ({self.holder()}); nothing done")
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.renew_lease(self.name, self.owner, now=self.clock(), ttl=self.ttl):
                    self.lost.set()
                    return
            except StoreError as e:  # the run itself meets the same failure and stops
                log.warning("could not renew the run lease: %s", e)
            except Exception:  # noqa: BLE001 - a failed renewal is retried; expiry is the backstop
                log.exception("could not renew the run lease")

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the scheduler ------------------------------------------------------------------------------


def run_due(config_path: str) -> None:
    """The job: run the daily job as of now for everyone due (this job's subscriber among them).

    Jobs are stored by reference with plain arguments (the config path, never the settings, which
    hold secrets), and each run reads the current config.  If another run holds the lease, this one
    waits for it, so a trigger is never lost to a busy run.
    """
    from digest.pipeline import run_daily

    settings = load_settings(config_path)
    report = run_daily(wall_clock(), settings, lease_wait=settings.schedule.lease_seconds * 5)
    if report.busy:
        log.warning("%s", report.busy)
    for out in report.outcomes:
        if out.status != "not-due":
            log.info("%s: %s %s", out.email, out.status, out.detail)
    if report.fatal:
        log.error("%s", report.fatal)


def _retry_due(settings: Settings, now: datetime) -> bool:
    """Is a pending delivery waiting for a retry whose time has come?"""
    store = Store(settings.database_url)
    try:
        return any(d.next_attempt_at is None or d.next_attempt_at <= now for d in store.pending_deliveries())
    finally:
        store.close()


@dataclass
class Changes:
    added: list[str]
    changed: list[str]
    removed: list[str]


def reconcile(scheduler: BaseScheduler, settings: Settings, config_path: str) -> Changes:
    """Make the stored jobs match the config: one per subscriber, at its time.

    A job whose timing did not change is left alone, so its next run time (and a catch-up it owes)
    is kept; a changed one is rescheduled; a removed subscriber's job goes.
    """
    grace = max(1, int(settings.schedule.catch_up_hours * 3600))
    wanted = {JOB_PREFIX + s.email: s for s in settings.subscribers}
    changes = Changes([], [], [])
    for job in scheduler.get_jobs(jobstore="default"):
        if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
            scheduler.remove_job(job.id, jobstore="default")
            changes.removed.append(job.id.removeprefix(JOB_PREFIX))
    for job_id, sub in wanted.items():
        when = When.of(sub)
        job = scheduler.get_job(job_id, jobstore="default")
        if job is None:
            scheduler.add_job(
                run_due, DigestTrigger(when), args=(config_path,), id=job_id, name=f"digest for {sub.email}",
                jobstore="default", coalesce=True, max_instances=1, misfire_grace_time=grace,
            )
            changes.added.append(sub.email)
            continue
        if job.args != (config_path,) or job.misfire_grace_time != grace:
            scheduler.modify_job(job_id, jobstore="default", args=(config_path,), misfire_grace_time=grace)
        if getattr(job.trigger, "when", None) != when:
            scheduler.reschedule_job(job_id, jobstore="default", trigger=DigestTrigger(when))
            changes.changed.append(sub.email)
    return changes


def reload(scheduler: BaseScheduler, config_path: str, clock: Clock = wall_clock, *, store: Store | None = None) -> None:
    """The periodic tick: re-read the config, reconcile the jobs, and run if a retry is due.

    First `store` (the scheduler's own, open all along) is checked: a database deleted or replaced
    under this process stops it here (StoreError), before the jobs are touched."""
    if store is not None:
        store.check()
    try:
        settings = load_settings(config_path)
    except DigestError as e:
        log.error("config not reloaded, keeping the current jobs: %s", e)
        return
    changes = reconcile(scheduler, settings, config_path)
    for label, emails in (("scheduled", changes.added), ("rescheduled", changes.changed), ("unscheduled", changes.removed)):
        for email in emails:
            log.info("%s %s", label, email)
    reload_job = scheduler.get_job(RELOAD_JOB, jobstore="memory")
    minutes = settings.schedule.reload_minutes
    if reload_job is not None and reload_job.trigger.interval != timedelta(minutes=minutes):
        scheduler.reschedule_job(RELOAD_JOB, jobstore="memory", trigger="interval", minutes=minutes)
    if _retry_due(settings, clock()):
        run_due(config_path)


def build_scheduler(
    settings: Settings, config_path: str | Path, *, store: Store, background: bool = False
) -> BaseScheduler:
    """A scheduler whose subscriber jobs live in the project's database, plus an in-memory reload tick.

    The jobs themselves are added by `reconcile`, on the first tick right after start (a persistent
    store's jobs are only visible once the scheduler runs), after any catch-up owed has fired.
    """
    cls: type[BaseScheduler] = BackgroundScheduler if background else BlockingScheduler
    scheduler = cls(
        jobstores={
            "default": SQLAlchemyJobStore(engine=store.engine, tablename="apscheduler_jobs"),
            "memory": MemoryJobStore(),
        },
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": max(1, int(settings.schedule.catch_up_hours * 3600))},
        timezone=timezone.utc,
    )
    scheduler.add_job(
        reload, "interval", minutes=settings.schedule.reload_minutes, args=(scheduler, str(config_path)),
        kwargs={"store": store}, id=RELOAD_JOB, name="re-read the config", jobstore="memory", next_run_time=wall_clock(),
        coalesce=True, max_instances=1,
    )
    return scheduler


def reload_now(scheduler: BaseScheduler) -> None:
    """Re-read the config at once (what SIGHUP does)."""
    scheduler.modify_job(RELOAD_JOB, jobstore="memory", next_run_time=wall_clock())


def run_forever(settings: Settings, config_path: str | Path, log_line: Callable[[str], None] = print) -> None:
    """`digest run`: schedule every subscriber and keep going until interrupted; SIGHUP reloads.

    A job that meets a StoreError (the database full, read-only, deleted, unreachable) stops the
    scheduler and the error is raised from here, once, instead of the same failure at every tick.
    """
    store = Store(settings.database_url)
    handler = _LineHandler(log_line)
    logging.getLogger("digest").addHandler(handler)
    logging.getLogger("digest").setLevel(logging.INFO)
    scheduler = build_scheduler(settings, Path(config_path).resolve(), store=store)
    failed: list[StoreError] = []

    def stop_on_store_error(event: JobExecutionEvent) -> None:
        if isinstance(event.exception, StoreError) and not failed:
            failed.append(event.exception)
            scheduler.shutdown(wait=False)

    scheduler.add_listener(stop_on_store_error, EVENT_JOB_ERROR)
    executor_log = logging.getLogger("apscheduler.executors.default")
    executor_log.addFilter(_not_a_store_error)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: reload_now(scheduler))
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log_line("stopped")
    finally:
        executor_log.removeFilter(_not_a_store_error)
        logging.getLogger("digest").removeHandler(handler)
        store.close()
    if failed:
        raise failed[0]


def _not_a_store_error(record: logging.LogRecord) -> bool:
    """APScheduler logs a failed job with its traceback; a StoreError is said once, by `run_forever`'s caller."""
    return not (record.exc_info and isinstance(record.exc_info[1], StoreError))


class _LineHandler(logging.Handler):
    def __init__(self, line: Callable[[str], None]) -> None:
        super().__init__()
        self.line = line

    def emit(self, record: logging.LogRecord) -> None:
        self.line(f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S} {record.getMessage()}")


__all__ = [
    "DigestTrigger", "LeaseBusy", "RunLease", "When", "build_scheduler", "due_day", "is_send_day",
    "next_send", "reconcile", "reload", "run_due", "run_forever", "send_moment", "window_days",
]
