"""The due rule: when each reader's digest is due, as pure functions of (reader's timing, now).

One rule for every path: the scheduler's tick, the planner and `digest send` all ask these.  A send
time that does not exist on a spring-forward day (02:30 in Europe/Berlin) happens at the same
instant an hour "later" (03:30 summer time); one that happens twice on a fall-back day counts once.
A weekly digest covers the whole week (`window_days`); a missed send time is caught up within
`schedule.catch_up_hours`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


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


def local_date(now: datetime, tz_name: str) -> date:
    """The date it is in `tz_name` at `now`."""
    return now.astimezone(ZoneInfo(tz_name)).date()


def is_due(sub: Timed, now: datetime) -> bool:
    """Is today (local) a send day for the subscriber, and has their send time passed?"""
    day = local_date(now, sub.timezone)
    return is_send_day(sub, day) and now >= send_moment(sub, day)
