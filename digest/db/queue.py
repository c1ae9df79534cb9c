"""The delivery queue: the one owner of the `deliveries` rows and their state machine.

A row is planned PENDING (one per reader and local digest date, before anything is sent), claimed
by one sender (`claimed_by`/`claimed_until`, honouring `next_attempt_at`), and finished by
`record_outcome`: SENT, PENDING again with a doubling wait, UNCONFIRMED (a timeout after DATA) or
FAILED, or IN_FEED for a feed-only reader; `requeue_delivery` puts a failed one back.  Every path
that sends goes through here.  The delivered rows (SENT, IN_FEED) are also what a reader's Atom feed
shows (`feed_head`, `feed_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    bindparam,
    func,
    insert,
    update,
)
from sqlalchemy import (
    select as core_select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from digest.db.base import StoreBase
from digest.db.engine import _chunks
from digest.db.tables import (
    DELIVERED,
    WAITING,
    Delivery,
    DeliveryStatus,
    Interaction,
    Kind,
    Subscriber,
    _utc,
    aware,
    table_of,
)
from digest.errors import DigestError

_DELIVERIES = table_of(Delivery)

# A delivery's outcome (Store.record_outcome), built once so each message costs a commit, not a compile.
_OUTCOME = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("row_id"), _DELIVERIES.c.claimed_by.in_([bindparam("worker"), ""]))
    .values(
        status=bindparam("new_status"),
        error=bindparam("new_error"),
        attempts=_DELIVERIES.c.attempts + bindparam("tried"),
        claimed_by="",
        claimed_until=None,
        next_attempt_at=bindparam("next_at"),
        sent_at=func.coalesce(bindparam("sent_at", type_=_DELIVERIES.c.sent_at.type), _DELIVERIES.c.sent_at),
    )
)

_SUBSCRIBERS = table_of(Subscriber)
# A reader's feed validator in one statement (Store.feed_head): cheap enough for every poll.
_FEED_HEAD = (
    core_select(
        _SUBSCRIBERS.c.active,
        _SUBSCRIBERS.c.feed_key,
        _SUBSCRIBERS.c.created,
        func.count(_DELIVERIES.c.id).label("delivered"),
        func.max(_DELIVERIES.c.digest_date).label("newest"),
        func.max(_DELIVERIES.c.sent_at).label("changed"),
    )
    .select_from(
        _SUBSCRIBERS.outerjoin(
            _DELIVERIES,
            (_DELIVERIES.c.subscriber_id == _SUBSCRIBERS.c.id) & _DELIVERIES.c.status.in_([str(d) for d in DELIVERED]),
        )
    )
    .where(_SUBSCRIBERS.c.id == bindparam("sid"))
    .group_by(_SUBSCRIBERS.c.id, _SUBSCRIBERS.c.active, _SUBSCRIBERS.c.feed_key, _SUBSCRIBERS.c.created)
)


@dataclass(frozen=True)
class FeedHead:
    """What a reader's feed depends on, read in one query per poll: whether the reader is active,
    the key their feed links must carry, and their delivered digests' count, newest digest date and
    latest delivery time (nothing else changes the feed: delivered rows are final)."""

    active: bool
    feed_key: str
    created: datetime
    delivered: int
    newest: date | None
    changed: datetime | None


_SENT_PAPERS = insert(table_of(Interaction)).values(
    subscriber_id=bindparam("sid"), paper_id=bindparam("pid"), kind=Kind.SENT, origin="digest", at=bindparam("at")
)


class DeliveryQueue(StoreBase):
    """The `deliveries` rows: plan, claim, finish, requeue."""

    def delivery(self, subscriber_id: int, digest_date: date) -> Delivery | None:
        with self.session() as s:
            return s.exec(
                select(Delivery).where(
                    col(Delivery.subscriber_id) == subscriber_id, col(Delivery.digest_date) == digest_date
                )
            ).first()

    def create_delivery(
        self,
        subscriber_id: int,
        digest_date: date,
        papers: list[str],
        message_id: str,
        now: datetime,
        *,
        reasons: list[str] | None = None,
        trending: list[list[Any]] | None = None,
        highlights: list[str] | None = None,
        sections: list[list[Any]] | None = None,
        notes: list[str] | None = None,
    ) -> Delivery:
        """The pending delivery row, written before the message leaves; returns the existing one if any.
        `reasons` and `highlights` (one per paper), `sections` ([name, count] over the papers in
        order), `notes` (follow-up lines) and `trending` ([paper id, count]) let every later reader
        of the row (a worker, the web page, the feed) show the digest as sent."""
        with self.session() as s:
            row = s.exec(
                select(Delivery).where(
                    col(Delivery.subscriber_id) == subscriber_id, col(Delivery.digest_date) == digest_date
                )
            ).first()
            if row is not None:
                return row
            row = Delivery(
                subscriber_id=subscriber_id,
                digest_date=digest_date,
                papers=papers,
                reasons=list(reasons or []),
                trending=list(trending or []),
                highlights=list(highlights or []),
                sections=list(sections or []),
                notes=list(notes or []),
                message_id=message_id,
                created=_utc(now),
            )
            s.add(row)
            s.commit()
            return row

    def deliveries_on(self, digest_dates: Iterable[date]) -> dict[tuple[int, date], Delivery]:
        """Every delivery row on these digest dates, by (subscriber id, date): one query for a whole run."""
        days = sorted(set(digest_dates))
        found: dict[tuple[int, date], Delivery] = {}
        with self.session() as s:
            for chunk in _chunks(days, 100):
                for row in s.exec(select(Delivery).where(col(Delivery.digest_date).in_(list(chunk)))):
                    found[(row.subscriber_id, row.digest_date)] = row
        return found

    def pending_deliveries(
        self, subscriber_ids: Sequence[int] | None = None, *, now: datetime | None = None
    ) -> list[Delivery]:
        """Deliveries recorded but not yet sent (oldest first): a crash or a transient failure left
        them, or a planner wrote them.  With `now`, rows a sender holds (an unlapsed claim) are left out."""
        with self.session() as s:
            query = (
                select(Delivery)
                .where(col(Delivery.status).in_([str(w) for w in WAITING]))
                .order_by(col(Delivery.digest_date), col(Delivery.id))
            )
            if now is not None:
                query = query.where((col(Delivery.claimed_until) == None) | (col(Delivery.claimed_until) <= _utc(now)))  # noqa: E711
            if subscriber_ids is not None:
                query = query.where(col(Delivery.subscriber_id).in_(list(subscriber_ids)))
            return list(s.exec(query))

    def last_delivery(self, subscriber_id: int) -> Delivery | None:
        """The subscriber's most recent digest, whatever its status."""
        with self.session() as s:
            return s.exec(
                select(Delivery)
                .where(col(Delivery.subscriber_id) == subscriber_id)
                .order_by(col(Delivery.digest_date).desc(), col(Delivery.id).desc())
            ).first()

    def latest_delivery(self, subscriber_id: int, on_or_before: date) -> Delivery | None:
        """The subscriber's most recent digest that went out (mailed or into the feed), up to a date."""
        with self.session() as s:
            return s.exec(
                select(Delivery)
                .where(
                    col(Delivery.subscriber_id) == subscriber_id,
                    col(Delivery.digest_date) <= on_or_before,
                    col(Delivery.status).in_([str(d) for d in DELIVERED]),
                )
                .order_by(col(Delivery.digest_date).desc())
            ).first()

    def feed_head(self, subscriber_id: int) -> FeedHead | None:
        """The reader's feed validator (`FeedHead`), or None for an unknown reader: one query."""
        with self._begin() as conn:
            row = conn.execute(_FEED_HEAD, {"sid": subscriber_id}).first()
        if row is None:
            return None
        return FeedHead(
            bool(row.active), row.feed_key, aware(row.created), int(row.delivered), row.newest, aware(row.changed)
        )

    def feed_rows(self, subscriber_id: int, since: date) -> list[Delivery]:
        """The reader's delivered digests dated `since` or later, newest first: what their feed shows."""
        with self.session() as s:
            return list(
                s.exec(
                    select(Delivery)
                    .where(
                        col(Delivery.subscriber_id) == subscriber_id,
                        col(Delivery.digest_date) >= since,
                        col(Delivery.status).in_([str(d) for d in DELIVERED]),
                    )
                    .order_by(col(Delivery.digest_date).desc(), col(Delivery.id).desc())
                )
            )

    def requeue_delivery(self, subscriber_id: int, digest_date: date | None, now: datetime) -> Delivery:
        """Queue a failed digest again, as it was (same papers, same Message-ID), once its cause is
        fixed: pending, no attempts used, due at `now`, error and claim cleared; the next run or
        worker sends it.  `digest_date` None: the subscriber's latest failed digest.  `created` moves
        to `now` as well, so the catch-up window counts from the requeue (from the first try, the
        next run would give it up at once).  A digest that is not failed is left alone: DigestError."""
        stamp = _utc(now)
        table = table_of(Delivery)
        with self.session() as s:
            query = select(Delivery).where(col(Delivery.subscriber_id) == subscriber_id)
            if digest_date is None:
                query = query.where(col(Delivery.status) == str(DeliveryStatus.FAILED))
            else:
                query = query.where(col(Delivery.digest_date) == digest_date)
            row = s.exec(query.order_by(col(Delivery.digest_date).desc(), col(Delivery.id).desc())).first()
            if row is None:
                raise DigestError(
                    "no failed digest to send again" if digest_date is None else f"no digest for {digest_date}"
                )
            if row.status == DeliveryStatus.SENT:
                when = f" at {aware(row.sent_at):%Y-%m-%d %H:%M} UTC" if row.sent_at else ""
                raise DigestError(f"the digest of {row.digest_date} was sent{when}: nothing to send again")
            if row.status == DeliveryStatus.IN_FEED:
                raise DigestError(f"the digest of {row.digest_date} is in the reader's feed: nothing to send again")
            if row.status != DeliveryStatus.FAILED:
                raise DigestError(
                    f"the digest of {row.digest_date} is {row.status}, not failed: a run sends it by itself"
                )
            done = (
                s.connection()
                .execute(
                    update(table)
                    .where(table.c.id == row.id, table.c.status == str(DeliveryStatus.FAILED))
                    .values(
                        status=str(DeliveryStatus.PENDING),
                        attempts=0,
                        error="",
                        created=stamp,
                        next_attempt_at=stamp,
                        claimed_by="",
                        claimed_until=None,
                        sent_at=None,
                    )
                )
                .rowcount
            )
            s.commit()
            if not done:  # it changed under us (another requeue): say what it is now
                raise DigestError(f"the digest of {row.digest_date} changed meanwhile; see digest status")
            s.refresh(row)
            return row

    def deliveries(self, subscriber_id: int | None = None) -> list[Delivery]:
        with self.session() as s:
            query = select(Delivery).order_by(col(Delivery.digest_date), col(Delivery.id))
            if subscriber_id is not None:
                query = query.where(col(Delivery.subscriber_id) == subscriber_id)
            return list(s.exec(query))

    def plan_deliveries(self, plans: Iterable[dict[str, Any]], now: datetime) -> None:
        """Write many pending deliveries at once, each with everything needed to render it later.

        Each plan has subscriber_id, digest_date, papers, message_id and (optionally) reasons,
        trending, highlights, sections and notes (`compose.row_fields`).  A
        subscriber who already has a row for that day keeps it untouched (INSERT ... ON CONFLICT DO
        NOTHING on the one-digest-a-day constraint), so planning twice never sends twice.
        """
        stamp = _utc(now)
        table = table_of(Delivery)
        dialect_insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(table).on_conflict_do_nothing(index_elements=["subscriber_id", "digest_date"])
        empty: dict[str, Any] = {"reasons": [], "trending": [], "highlights": [], "sections": [], "notes": []}
        rows = [{"created": stamp, **empty, **plan} for plan in plans]
        with self.session() as s:
            for chunk in _chunks(rows, 5_000):
                s.execute(statement, chunk)
            s.commit()

    def claim_deliveries(
        self,
        worker: str,
        now: datetime,
        *,
        limit: int = 100,
        lease: timedelta = timedelta(minutes=15),
        ids: Sequence[int] | None = None,
        ignore_wait: bool = False,
        due_at: datetime | None = None,
    ) -> list[Delivery]:
        """Take up to `limit` waiting deliveries (of `ids`, if given) for `worker`: pending or
        unconfirmed, held by nobody (or by a claim that lapsed), and due (`next_attempt_at` passed
        at `due_at`, by default `now`).

        `now` is the wall clock: every sender, in any process, compares claims on it, so a claim
        made by a `digest send --now` in the past is not taken for a lapsed one.  `due_at` is the
        digest clock of a run that decides itself what is due.

        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so workers on many machines neither wait for
        nor take each other's rows.  SQLite: one guarded UPDATE ... RETURNING, atomic under its
        single writer lock.  A sender that dies leaves its rows to be claimed again after `lease`.
        """
        stamp = _utc(now)
        table = table_of(Delivery)
        free = (
            table.c.status.in_([str(w) for w in WAITING])
            & ((table.c.claimed_until == None) | (table.c.claimed_until <= stamp))  # noqa: E711
        )
        if not ignore_wait:  # (`digest send --force` retries before the wait is over)
            due = _utc(due_at) if due_at is not None else stamp
            free = free & ((table.c.next_attempt_at == None) | (table.c.next_attempt_at <= due))  # noqa: E711
        if ids is not None:
            free = free & table.c.id.in_(list(ids))
        claim = {"claimed_by": worker, "claimed_until": stamp + lease}
        with self.session() as s:
            if self.engine.dialect.name == "postgresql":
                found = list(
                    s.execute(
                        select(table.c.id)
                        .where(free)
                        .order_by(table.c.id)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    ).scalars()
                )
                if found:
                    s.execute(update(table).where(table.c.id.in_(found)).values(**claim))
            else:
                oldest = select(table.c.id).where(free).order_by(table.c.id).limit(limit).scalar_subquery()
                found = list(
                    s.execute(
                        update(table).where(table.c.id.in_(oldest), free).values(**claim).returning(table.c.id)
                    ).scalars()
                )
            s.commit()
            if not found:
                return []
            return list(s.exec(select(Delivery).where(col(Delivery.id).in_(found)).order_by(col(Delivery.id))))

    def record_outcome(
        self,
        row: Delivery,
        status: DeliveryStatus,
        now: datetime,
        *,
        worker: str,
        error: str = "",
        attempted: bool = True,
        next_attempt_at: datetime | None = None,
        sent_later: list[tuple[int, str]] | None = None,
    ) -> None:
        """One delivery's outcome, written as it happens (one transaction): its status and error, one
        more attempt if it was `attempted`, when it may be tried again, its claim given back, and on
        SENT or IN_FEED the papers recorded as sent to the reader (so they are not picked again), or, with
        `sent_later`, added to that list for the caller to write in bulk (`add_interactions_many`):
        a busy worker's ten index updates per digest cost more than the outcome itself."""
        stamp = _utc(now)
        params = {
            "row_id": row.id,
            "worker": worker,
            "new_status": str(status),
            "new_error": error[:2000],
            "tried": 1 if attempted else 0,
            "next_at": _utc(next_attempt_at) if status in WAITING else None,
            "sent_at": stamp if status in DELIVERED else None,
        }
        with self._begin() as conn:  # one transaction, statements built once: a sender writes one per message
            conn.execute(_OUTCOME, params)
            if status in DELIVERED and row.papers and sent_later is not None:
                sent_later.extend((row.subscriber_id, pid) for pid in dict.fromkeys(row.papers))
            elif status in DELIVERED and row.papers:
                conn.execute(
                    _SENT_PAPERS,
                    [{"sid": row.subscriber_id, "pid": pid, "at": stamp} for pid in dict.fromkeys(row.papers)],
                )

    def claim_holders(self, now: datetime) -> list[str]:
        """The senders holding unlapsed claims on deliveries now."""
        with self.session() as s:
            return list(
                s.exec(
                    select(col(Delivery.claimed_by))
                    .where(col(Delivery.claimed_by) != "", col(Delivery.claimed_until) > _utc(now))
                    .distinct()
                )
            )

    def drop_claims_of(self, workers: Sequence[str]) -> int:
        """Give back every claim these senders hold (they are known to be dead); returns how many."""
        if not workers:
            return 0
        table = table_of(Delivery)
        with self.session() as s:
            done = (
                s.connection()
                .execute(
                    update(table).where(table.c.claimed_by.in_(list(workers))).values(claimed_by="", claimed_until=None)
                )
                .rowcount
            )
            s.commit()
        return int(done or 0)

    def delivery_status_counts(self, digest_date: date | None = None) -> dict[str, int]:
        """How many deliveries are in each status (on one digest date, or in all)."""
        with self.session() as s:
            query = select(col(Delivery.status), func.count()).group_by(col(Delivery.status))
            if digest_date is not None:
                query = query.where(col(Delivery.digest_date) == digest_date)
            return dict(s.exec(query).all())
