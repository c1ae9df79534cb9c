"""Schedule: `digest run`, a tick that runs the daily job when someone is due.

It asks the due rule (`digest.due`, pure functions) who is due and the run lease
(`digest.db.RunLease`) keeps two runs from overlapping.

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
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from digest.db import Delivery, Store, Subscriber, aware
from digest.due import Clock, When, describe, due_day, wall_clock
from digest.errors import DigestError, StoreError
from digest.pipeline import run_daily
from digest.settings import Settings, load_settings

log = logging.getLogger("digest.schedule")


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


__all__ = ["Scheduler", "retries_due", "run_forever", "sends_due"]
