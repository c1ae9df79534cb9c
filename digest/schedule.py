"""Schedule: keep the daily job going with APScheduler, one cron job per subscriber in their zone.

Each job runs `run_daily` for its subscriber only; the one-digest-a-day rule lives in the pipeline,
so a job that fires twice (restart, clock change) still sends once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from digest.settings import Settings


def subscriber_job(settings: Settings, email: str, log: Callable[[str], None]) -> None:
    from digest.pipeline import run_daily

    report = run_daily(datetime.now(timezone.utc), settings, only=[email])
    for out in report.outcomes:
        log(f"{out.email}: {out.status} {out.detail}".rstrip())


def build_scheduler(settings: Settings, log: Callable[[str], None] = print) -> BlockingScheduler:
    """A scheduler with one job per subscriber at send_at in the subscriber's time zone."""
    scheduler = BlockingScheduler(timezone=timezone.utc)
    for sub in settings.subscribers:
        hour, minute = sub.send_at.split(":")
        scheduler.add_job(
            subscriber_job,
            CronTrigger(hour=int(hour), minute=int(minute), timezone=sub.zone),
            args=(settings, sub.email, log),
            id=f"digest:{sub.email}",
            name=f"digest for {sub.email}",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
    return scheduler


def run_forever(settings: Settings, log: Callable[[str], None] = print) -> None:
    scheduler = build_scheduler(settings, log)
    for job in scheduler.get_jobs():
        log(f"scheduled {job.name}")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log("stopped")
