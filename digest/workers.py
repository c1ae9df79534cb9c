"""The daily run for a large community: one planner, any number of delivery workers.

The planner does what only needs doing once: ingest, fit the ranker, rank every due subscriber
in blocks, and write one pending delivery row per subscriber with its papers, reasons and
trending list (`Store.plan_deliveries`, in bulk; a subscriber who already has today's row keeps
it).  Workers, on this machine or on others, share those rows through the database
(`Store.claim_deliveries`: FOR UPDATE SKIP LOCKED on PostgreSQL, a guarded UPDATE on SQLite):
each claims a batch, renders it, sends it over its own reused SMTP connection and records the
outcomes and SENT interactions in bulk.  A worker that dies leaves its claim to lapse, and the
rows go to another worker; a digest is sent at most once because a row is claimed by one worker.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from digest.compose import compose, picks_from_row, row_fields
from digest.db import Delivery, DeliveryStatus, Kind, Paper, RunLease, Store, Subscriber
from digest.deliver import (
    RetryPolicy,
    Sender,
    Transport,
    WireMessage,
    make_transport,
    message_bytes,
    message_id,
    parse_sender,
)
from digest.due import Clock, wall_clock
from digest.links import secret_key, unsubscribe_mailto
from digest.pipeline import (
    TRENDING_SIZE,
    Due,
    Progress,
    RunReport,
    SourceReport,
    counted_papers,
    due_subscribers,
    ingest,
    rank_due,
    sync_libraries,
    sync_subscribers,
    trending,
)
from digest.rank import TrainData
from digest.rank.saved import ModelReport
from digest.send import SendResult, free_dead_claims, send_claimed, sender_name
from digest.settings import Settings, mails


@dataclass
class PlanReport:
    planned: int = 0
    not_due: int = 0
    busy: str = ""  # another daily run or planner held the lease: nothing planned
    timings: dict[str, float] = field(default_factory=dict)
    model: ModelReport | None = None  # refitted or updated, and how long it took
    # what the planner took in, as a daily run reports it (see RunReport):
    sources: list[SourceReport] = field(default_factory=list)
    lookup_notes: list[str] = field(default_factory=list)
    unmatched_likes: dict[str, list[str]] = field(default_factory=dict)
    libraries: list[str] = field(default_factory=list)


@dataclass
class WorkReport:
    worker: str
    sent: int = 0
    in_feed: int = 0  # feed-only readers' digests, recorded for their feed, not mailed
    pending: int = 0
    failed: int = 0
    fatal: str = ""
    unreachable: str = ""  # the mail server could not be reached: this worker's rest wait for the retry time
    peak_rss_mb: float = 0.0  # the worker process's own high-water mark (run_workers fills it in)
    eight_bit: bool | None = None  # does the SMTP server take 8bit bodies (asked once)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trending_lists(
    data: TrainData, candidates: Sequence[Paper], due: Sequence[Due], size: int = TRENDING_SIZE
) -> dict[int, list[list[object]]]:
    """Each due subscriber's trending list ([paper id, count], best first) leaving out their own picks
    and what they were sent, liked, disliked or clicked, within their categories and exclusions
    (`pipeline.trending`, the one rule).  The window's counted papers are sorted once."""
    counted = counted_papers(data, candidates)
    lists = {}
    for d in due:
        hidden = {p.paper.id for p in d.picks} | d.seen
        chosen = trending(data, candidates, hidden, size, subscriber=d.subscriber, counted=counted)
        lists[d.subscriber.id] = [[p.id, c] for p, c in chosen]
    return lists


def write_plans(
    store: Store,
    settings: Settings,
    due: Sequence[Due],
    trend: dict[int, list[list[object]]],
    now: datetime,
    *,
    chunk: int = 5_000,
) -> int:
    """Write the pending delivery rows in chunks (never all 100k plans in memory at once); returns how many."""
    sender = parse_sender(settings.smtp.sender)
    planned = 0
    plans: list[dict] = []
    for d in due:
        if not d.picks and settings.delivery.on_empty == "skip":
            continue
        plans.append(
            {
                "subscriber_id": d.subscriber.id,
                "digest_date": d.day,
                "papers": [p.paper.id for p in d.picks],
                "trending": trend.get(d.subscriber.id, []),
                **row_fields(d.picks, d.notes),
                "message_id": message_id(sender, d.subscriber.email, d.day),
            }
        )
        if len(plans) >= chunk:
            store.plan_deliveries(plans, now)
            planned += len(plans)
            plans = []
    if plans:
        store.plan_deliveries(plans, now)
        planned += len(plans)
    return planned


def plan_day(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    force: bool = False,
    ingest_sources: bool = True,
    progress: Progress | None = None,
    clock: Clock = wall_clock,
) -> PlanReport:
    """Rank every due subscriber and write their pending deliveries for the workers to send.

    The same due rule as the daily run (`due_subscribers`: send day and time, the catch-up window,
    recorded digests waiting for a retry, the weekly window): recorded ones are left for the workers
    to claim when their retry time comes; fresh ones are ranked and written.  Planning holds the
    daily run's lease, as `digest send` does: a second planner (or a send) started at the same
    moment plans nothing and says so (`report.busy`); its workers send what the first one planned."""
    report = PlanReport()
    lease = RunLease(store, ttl=settings.schedule.lease_seconds, clock=clock)
    if not lease.start():
        report.busy = f"another daily run or planner is in progress ({lease.holder()}); nothing planned"
        return report
    try:
        _plan(
            store,
            settings,
            now.astimezone(UTC),
            report,
            force=force,
            ingest_sources=ingest_sources,
            progress=progress,
            clock=clock,
        )
    finally:
        lease.stop()
    return report


def _plan(
    store: Store,
    settings: Settings,
    now: datetime,
    report: PlanReport,
    *,
    force: bool,
    ingest_sources: bool,
    progress: Progress | None,
    clock: Clock,
) -> None:
    timer = time.perf_counter
    start = timer()
    if ingest_sources:
        report.sources = ingest(store, settings, now, progress)
        report.unmatched_likes = sync_subscribers(store, settings, now, notes=report.lookup_notes)
        report.libraries = sync_libraries(store, settings, now)
    free_dead_claims(store, clock())
    report.timings["ingest"] = timer() - start
    start = timer()
    subscribers = store.subscribers()
    run = RunReport(now)
    due = [
        d
        for d in due_subscribers(
            store,
            subscribers,
            now,
            run,
            force=force,
            only=None,
            dry_run=False,
            catch_up_hours=settings.schedule.catch_up_hours,
        )
        if d.existing is None
    ]
    report.not_due = len(subscribers) - len(due)
    if not due:
        return
    data, report.model, candidates = rank_due(
        store,
        settings,
        subscribers,
        due,
        now,
        progress=progress,
        processes=settings.ranking.processes or os.cpu_count() or 1,
    )
    report.timings["rank"] = timer() - start
    start = timer()
    trend = trending_lists(data, candidates, due)
    report.planned = write_plans(store, settings, due, trend, now)
    report.timings["plan"] = timer() - start


def work(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    worker: str | None = None,
    transport: Transport | None = None,
    batch: int = 50,
    clock: Clock = wall_clock,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] | None = None,
) -> WorkReport:
    """Claim, render, send and record pending deliveries until none is left for this worker.

    The same send step as the daily run (`send_claimed`): one `Sender` (pacing, in-run retries with
    backoff), each outcome recorded as it happens (a worker killed mid-batch leaves only the message
    in flight in doubt), an unreachable server makes the rest of this worker's claim wait for its
    retry time, a refused login stops it.  Rows whose retry time has not come are not claimed.
    """
    worker = worker or sender_name()
    now = now.astimezone(UTC)
    own_transport = transport is None
    transport = transport or make_transport(settings)
    cfg = settings.delivery
    job = _Sending(
        store,
        settings,
        secret_key(settings),
        transport,
        Sender(
            transport,
            attempts=cfg.attempts_per_run,
            backoff=cfg.retry_backoff,
            per_second=cfg.max_per_second,
            sleep=sleep,
        ),
        RetryPolicy.of(settings),
        now,
        clock,
        WorkReport(worker),
        new_count=len(store.recent_paper_ids(now - timedelta(days=settings.ranking.window_days))),
    )
    free_dead_claims(store, clock())
    try:
        while not (job.report.fatal or job.report.unreachable):
            claimed = store.claim_deliveries(worker, clock(), limit=batch)
            if not claimed:
                break
            job.load(claimed)
            sent: list[tuple[int, str]] = []  # the batch's sent papers, written together after it
            try:
                job.send_batch(claimed, sent, progress)
            finally:
                store.add_interactions_many(sent, Kind.SENT, now, origin="digest")
    finally:
        if own_transport:
            transport.close()
    return job.report


@dataclass
class _Sending:
    """One worker's sending: what every digest it sends shares, and the readers and papers of the
    rows it claimed so far (each fetched once)."""

    store: Store
    settings: Settings
    key: str
    transport: Transport
    sender: Sender
    policy: RetryPolicy
    now: datetime
    clock: Callable[[], datetime]
    report: WorkReport
    new_count: int = 0
    subscribers: dict[int, Subscriber] = field(default_factory=dict)
    papers: dict[str, Paper] = field(default_factory=dict)

    def load(self, claimed: Sequence[Delivery]) -> None:
        """The readers and papers of `claimed` not fetched yet."""
        missing = {r.subscriber_id for r in claimed} - self.subscribers.keys()
        if missing:
            self.subscribers.update((s.id, s) for s in self.store.subscribers_by_id(sorted(missing)))
        wanted = {pid for r in claimed for pid in [*r.papers, *(t[0] for t in r.trending)]} - self.papers.keys()
        if wanted:
            self.papers.update((p.id, p) for p in self.store.papers(sorted(wanted)))

    def send_batch(
        self, claimed: Sequence[Delivery], sent: list[tuple[int, str]], progress: Callable[[int], None] | None
    ) -> None:
        """Send one claimed batch, each outcome recorded as it happens; after an unreachable server
        or a refused login the rest go back untried (after the retry wait, or at once)."""
        report = self.report
        for row in claimed:
            sub = self.subscribers.get(row.subscriber_id)
            if (report.fatal or report.unreachable) and (sub is None or mails(sub.delivery)):
                # the rest go back (at once, or after the retry wait); feed-only ones need no mail server
                wait = None if report.fatal else self.clock() + self.policy.retry_after
                self.store.record_outcome(
                    row,
                    DeliveryStatus.PENDING,
                    self.clock(),
                    worker=report.worker,
                    attempted=False,
                    error=report.fatal or report.unreachable,
                    next_attempt_at=wait,
                )
                continue
            result = self.send_one(row, sent)
            counter = {
                DeliveryStatus.SENT: "sent",
                DeliveryStatus.IN_FEED: "in_feed",
                DeliveryStatus.FAILED: "failed",
            }.get(result.status, "pending")
            setattr(report, counter, getattr(report, counter) + 1)
            report.fatal = report.fatal or result.fatal
            report.unreachable = report.unreachable or result.unreachable
            if progress:
                progress(1)

    def send_one(self, row: Delivery, sent: list[tuple[int, str]]) -> SendResult:
        """Render one planned digest from its row alone, and send and record it (`send_claimed`)."""
        worker = self.report.worker
        sub = self.subscribers.get(row.subscriber_id)
        if sub is None or not sub.active:
            self.store.record_outcome(
                row,
                DeliveryStatus.FAILED,
                self.clock(),
                worker=worker,
                error="subscriber no longer active",
                attempted=False,
            )
            return SendResult(DeliveryStatus.FAILED, "subscriber no longer active")
        picks = picks_from_row(row, self.papers)
        trend = [(self.papers[pid], int(count)) for pid, count in row.trending if pid in self.papers]

        def build() -> WireMessage:
            report = self.report
            if report.eight_bit is None:
                report.eight_bit = bool(getattr(self.transport, "takes_8bit", lambda: False)())
            envelope, text, html, unsub = compose(
                self.settings, self.key, sub, row.digest_date, picks, trend, self.new_count, self.now, notes=row.notes
            )
            envelope = replace(envelope, message_id=row.message_id or envelope.message_id)
            mailto = unsubscribe_mailto(envelope.sender.addr_spec, sub.email)
            data = message_bytes(
                envelope, text, html, unsubscribe_url=unsub, unsubscribe_mailto=mailto, eight_bit=report.eight_bit
            )
            return WireMessage(
                envelope.sender.addr_spec,
                envelope.recipient.addr_spec,
                data,
                row.digest_date,
                eight_bit=report.eight_bit,
            )

        return send_claimed(
            self.store,
            self.sender,
            row,
            build,
            self.clock(),
            worker=worker,
            policy=self.policy,
            email=sub.email,
            mail=mails(sub.delivery),
            sent_later=sent,
        )


def _worker_main(settings: Settings, now: str, worker: str) -> WorkReport:
    """One worker process: its own store and SMTP connection (spawned, so nothing is shared)."""
    store = Store(settings.database_url)
    try:
        report = work(store, settings, datetime.fromisoformat(now), worker=worker)
    finally:
        store.close()
    report.peak_rss_mb = peak_rss_mb()
    return report


def run_workers(settings: Settings, now: datetime, count: int) -> list[WorkReport]:
    """Start `count` worker processes on this machine and wait for them to drain the day's rows."""
    context = multiprocessing.get_context("spawn")
    host = socket.gethostname()
    args = [(settings, now.isoformat(), f"{host}:w{i}") for i in range(count)]
    with context.Pool(count) as pool:
        return pool.starmap(_worker_main, args)


__all__ = ["PlanReport", "WorkReport", "plan_day", "run_workers", "trending_lists", "work", "write_plans"]
