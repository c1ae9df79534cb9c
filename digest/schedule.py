"""Schedule: when each digest is due, a tick that runs the daily job when someone is, and one run at a time.

Three layers, each usable alone:

* the due rule, pure functions of (subscriber, now): `send_moment`, `due_day`, `next_send`.  A send
  time that does not exist on a spring-forward day (02:30 in Europe/Berlin) happens at the same
  instant an hour "later" (03:30 summer time); one that happens twice on a fall-back day counts once.
* `RunLease`: a database lease (see `Store.acquire_lease`) held, and renewed in the background, by
  the daily run, so two processes started by mistake never run it at once.
* the scheduler (`Scheduler`, `run_forever`): a tick every minute asks the store who is due (every
  active reader in the database, web sign-ups included) and runs the daily job only then.  Nothing
  is kept between restarts but the database: a process that was down at send time catches up once
  because the due rule's window (`schedule.catch_up_hours`) is still open when it comes back.  The
  config is re-read every `schedule.reload_minutes` (or at once on SIGHUP).

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from digest.errors import DigestError, StoreError
from digest.settings import Settings, load_settings
from digest.store import Delivery, Store, Subscriber, aware

log = logging.getLogger("digest.schedule")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RUN_LEASE = "daily-run"

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


# -- the due rule -------------------------------------------------------------------------------


class Timed(Protocol):
    """What the due rule needs of a subscriber (the settings entry, the store row, or a `When`): read only."""

    @property
    def timezone(self) -> str: ...
    @property
    def send_at(self) -> str: ...
    @property
    def frequency(self) -> str: ...
    @property
    def weekly_day(self) -> str: ...


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
    return local.astimezone(UTC)


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
    days = {"daily": "every day", "weekdays": "Monday to Friday", "weekly": f"{sub.weekly_day.capitalize()}s"}[
        sub.frequency
    ]
    return f"{sub.send_at} {sub.timezone}, {days}"


@dataclass(frozen=True)
class When:
    """A subscriber's timing as a value (hashable: subscribers who share one share its due rule)."""

    timezone: str
    send_at: str
    frequency: str = "daily"
    weekly_day: str = "monday"

    @classmethod
    def of(cls, sub: Timed) -> When:
        return cls(sub.timezone, sub.send_at, sub.frequency, sub.weekly_day)


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
            if (
                holder is not None
                and owner_is_dead(holder.owner)
                and self.store.take_over_lease(
                    self.name, self.owner, previous=holder.owner, now=self.clock(), ttl=self.ttl
                )
            ):
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
            except Exception:
                log.exception("could not renew the run lease")

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the scheduler ------------------------------------------------------------------------------

TICK_SECONDS = 60  # send times are whole minutes: a look at each minute finds each one as it comes
SAY_EACH = 20  # more joins (or moves, or leaves) than this in one tick are logged as a count

SendKey = tuple[int, date, When]  # a subscriber's digest for a local date, at the timing that made it due
RetryKey = tuple[int, int, datetime | None]  # a recorded digest, at its attempt count and retry time


def sends_due(subscribers: Iterable[Subscriber], now: datetime, *, catch_up_hours: float) -> set[SendKey]:
    """Each subscriber's digest whose send time has come (less than `catch_up_hours` ago): the due
    rule, worked out once per distinct timing (a large community has few)."""
    days: dict[When, date | None] = {}
    due: set[SendKey] = set()
    for sub in subscribers:
        when = When.of(sub)
        if when not in days:
            days[when] = due_day(when, now, catch_up_hours=catch_up_hours)
        day = days[when]
        if day is not None and sub.id is not None:
            due.add((sub.id, day, when))
    return due


def retries_due(rows: Iterable[Delivery], subscriber_ids: set[int], now: datetime) -> set[RetryKey]:
    """The recorded digests (`Store.pending_deliveries`) of these subscribers whose retry time has come."""
    keys: set[RetryKey] = set()
    for row in rows:
        retry_at = aware(row.next_attempt_at)
        if row.id is not None and row.subscriber_id in subscriber_ids and (retry_at is None or retry_at <= now):
            keys.add((row.id, row.attempts, retry_at))
    return keys


class Scheduler:
    """`digest run`: at each tick, ask the store who is due, and run the daily job only if someone is.

    Everyone the database knows is looked at, so a reader who signs up on the web is scheduled from
    the next tick, and the config's readers are mirrored into the database whenever the config is
    read.  A tick that finds nobody due costs a few queries: no ingest, no ranker.  The scheduler
    remembers what it already ran the daily job for, so work that a run leaves undone on purpose (no
    new papers with on_empty = "skip", a refused login) does not start a run, and an ingest, every
    minute: a send is not tried twice for the same date and timing, a retry once per config reload.
    The daily job itself (`run_daily`: its lease, one row per digest) is what keeps a digest from
    going out twice; the scheduler is only the trigger.
    """

    def __init__(self, config_path: Path, store: Store, settings: Settings, *, clock: Clock = wall_clock) -> None:
        self.config_path, self.store, self.settings, self.clock = config_path, store, settings, clock
        self.reload_at: datetime | None = None  # None: read the config at the next tick
        self.known: dict[int, tuple[str, When]] = {}  # subscriber id -> (email, timing) at the last tick
        self.tried_sends: set[SendKey] = set()
        self.tried_retries: set[RetryKey] = set()

    def ask_reload(self) -> None:
        """Re-read the config at the next tick (what SIGHUP does)."""
        self.reload_at = None

    def reload(self, now: datetime) -> None:
        """Re-read the config (a broken one is said, and the current one kept), mirror its readers into
        the database, and let the retries already tried go once more (a refused login may be fixed)."""
        try:
            self.settings = load_settings(self.config_path)
        except DigestError as e:
            log.error("config not reloaded, keeping the current one: %s", e)
        else:
            self.store.sync_subscribers(self.settings.subscribers, now)
        self.tried_retries.clear()
        self.reload_at = now + timedelta(minutes=self.settings.schedule.reload_minutes)

    def tick(self) -> bool:
        """One look at who is due now; runs the daily job if anyone's digest is due and not already
        tried.  True if it ran.  A StoreError (the database gone, full, read-only) is raised."""
        self.store.check()  # a database deleted or replaced under this process stops it here
        now = self.clock()
        if self.reload_at is None or now >= self.reload_at:
            self.reload(now)
        subscribers = self.store.subscribers()
        self._say_changes(subscribers)
        sends = sends_due(subscribers, now, catch_up_hours=self.settings.schedule.catch_up_hours)
        self.tried_sends &= sends  # a digest out of its window never comes back into it
        fresh = sends - self.tried_sends
        if fresh:  # a digest already recorded is the row's business (sent, failed, or its retry below)
            recorded = self.store.deliveries_on({day for _, day, _ in fresh})
            done = {key for key in fresh if key[:2] in recorded}
            self.tried_sends |= done
            fresh -= done
        waiting = self.store.pending_deliveries(now=now)  # those no sender holds
        retries = retries_due(waiting, {s.id for s in subscribers if s.id is not None}, now)
        self.tried_retries &= retries
        if not fresh and not retries - self.tried_retries:
            return False
        if not self._run(now):
            return False  # another run held the lease: ask again at the next tick
        self.tried_sends |= fresh
        self.tried_retries |= retries
        return True

    def _run(self, now: datetime) -> bool:
        """The daily job as of `now` (waiting for a busy lease a while); False if it never got the lease."""
        from digest.pipeline import run_daily

        settings = self.settings
        try:
            report = run_daily(
                now, settings, store=self.store, lease_wait=settings.schedule.lease_seconds * 5, clock=self.clock
            )
        except StoreError:
            raise
        except Exception:
            log.exception("the daily run failed")
            return True
        if report.busy:
            log.warning("%s", report.busy)
            return False
        for out in report.outcomes:
            if out.status != "not-due":
                log.info("%s: %s%s", out.email, out.status, f" - {out.detail}" if out.detail else "")
        if report.unreachable:
            log.warning("mail server unreachable, the rest wait for the next run: %s", report.unreachable)
        if report.fatal:
            log.error("%s", report.fatal)
        return True

    def _say_changes(self, subscribers: Sequence[Subscriber]) -> None:
        """Log who joined, moved or left since the last tick (a web sign-up shows up here)."""
        now_known = {s.id: (s.email, When.of(s)) for s in subscribers if s.id is not None}
        changes = (
            ("scheduled", [v for k, v in now_known.items() if k not in self.known]),
            ("rescheduled", [v for k, v in now_known.items() if k in self.known and self.known[k][1] != v[1]]),
            ("unscheduled", [v for k, v in self.known.items() if k not in now_known]),
        )
        self.known = now_known
        for label, entries in changes:
            if len(entries) > SAY_EACH:
                log.info("%s %d subscribers", label, len(entries))
                continue
            for email, when in entries:
                log.info("%s %s (%s)", label, email, describe(when))


def seconds_to_next_tick(now: datetime) -> float:
    """Until just after the next whole minute (a send time at hh:mm goes out at hh:mm)."""
    return TICK_SECONDS - now.timestamp() % TICK_SECONDS + 0.5


def run_forever(
    settings: Settings,
    config_path: str | Path,
    log_line: Callable[[str], None] = print,
    *,
    clock: Clock = wall_clock,
    wait: Callable[[float], object] | None = None,
) -> None:
    """`digest run`: a tick every minute, and one at once on SIGHUP (which re-reads the config),
    until interrupted.

    A StoreError (the database full, read-only, deleted, unreachable) stops the loop and is raised
    from here, once, instead of the same failure at every tick.  `clock` and `wait` (called with the
    seconds until the next tick) are parameters so a test can run a day of ticks in seconds.
    """
    store = Store(settings.database_url)
    handler = _LineHandler(log_line)
    logging.getLogger("digest").addHandler(handler)
    logging.getLogger("digest").setLevel(logging.INFO)
    scheduler = Scheduler(Path(config_path).resolve(), store, settings, clock=clock)
    wake = threading.Event()

    def hang_up(*_: object) -> None:
        scheduler.ask_reload()
        wake.set()

    def pause(seconds: float) -> None:
        wake.wait(seconds)
        wake.clear()

    previous = signal.signal(signal.SIGHUP, hang_up) if hasattr(signal, "SIGHUP") else None
    try:
        while True:
            scheduler.tick()
            (wait or pause)(seconds_to_next_tick(clock()))
    except KeyboardInterrupt:
        log_line("stopped")
    finally:
        # A caller's own SIGHUP handler comes back; the default one does not, so a hang-up while the
        # process exits (say, after a StoreError) cannot kill it before it has said why it stopped.
        if previous not in (None, signal.SIG_DFL):
            signal.signal(signal.SIGHUP, previous)
        logging.getLogger("digest").removeHandler(handler)
        store.close()


class _LineHandler(logging.Handler):
    def __init__(self, line: Callable[[str], None]) -> None:
        super().__init__()
        self.line = line

    def emit(self, record: logging.LogRecord) -> None:
        self.line(f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S} {record.getMessage()}")


__all__ = [
    "LeaseBusy",
    "RunLease",
    "Scheduler",
    "When",
    "due_day",
    "is_send_day",
    "next_send",
    "retries_due",
    "run_forever",
    "send_moment",
    "sends_due",
    "window_days",
]
