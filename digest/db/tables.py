"""The tables (SQLModel) and the states a row can be in, named once.

Times go in and come out as aware UTC datetimes.  The migrations (digest/migrations) compare
against these tables, so this module imports nothing else of ours that reaches the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, overload

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Table,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel


class Kind(StrEnum):
    """What happened between a reader and a paper: an interactions row's `kind`."""

    LIKE = "like"
    DISLIKE = "dislike"
    SENT = "sent"  # it was in a digest the reader was sent
    CLICKED = "clicked"


class DeliveryStatus(StrEnum):
    """The states of a delivery row: planned PENDING -> (claimed by one sender) -> SENT, PENDING again
    with a doubling wait, or FAILED (a 5xx, or `max_attempts` used up).  UNCONFIRMED: the server took
    the message but never said so (a timeout after DATA): it may have arrived, so it is tried once
    more on a later run only, and fails rather than go a third time.  IN_FEED: a feed-only reader's
    digest, finished by the same send step without mailing it; like SENT, its papers count as sent."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"
    IN_FEED = "in-feed"


WAITING = (DeliveryStatus.PENDING, DeliveryStatus.UNCONFIRMED)  # rows a sender may claim
DELIVERED = (DeliveryStatus.SENT, DeliveryStatus.IN_FEED)  # the reader has it (mailed, or in their feed)


@overload
def _utc(moment: datetime) -> datetime: ...
@overload
def _utc(moment: None) -> None: ...
def _utc(moment: datetime | None) -> datetime | None:
    """An aware UTC datetime (a naive one is taken to be UTC already)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
def aware(moment: datetime | None) -> datetime | None:
    """A stored naive-UTC time as an aware UTC datetime."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Paper(SQLModel, table=True):
    __tablename__ = "papers"

    id: str = Field(primary_key=True, max_length=200)
    title: str
    title_key: str = Field(index=True)
    abstract: str = ""
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    url: str = ""
    pdf_url: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    source: str = ""
    upvotes: int = 0
    comments: int = 0
    doi: str = Field(default="", index=True, max_length=200)
    code_url: str = ""
    journal_ref: str = ""
    version: int = 0
    revised_at: datetime | None = None  # when a new version or journal reference of a known paper arrived
    first_seen: datetime = Field(index=True)
    last_changed: datetime


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscribers"

    id: int = Field(default=None, primary_key=True)  # given by the database on insert
    email: str = Field(unique=True, index=True, max_length=320)
    name: str = ""
    timezone: str = "UTC"
    send_at: str = "07:30"
    frequency: str = Field(default="daily", max_length=16)  # daily, weekdays, weekly
    weekly_day: str = Field(default="monday", max_length=16)
    max_papers: int = 10
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    exclude_keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # none: all
    # named interests ({name, keywords, liked}) and followed authors (names, ORCID iDs):
    topics: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    delivery: str = Field(default="email", max_length=8)  # settings.DeliveryMode: email, feed, both
    feed_key: str = Field(default="", max_length=64)  # in the feed link's token; a new one revokes the old links
    active: bool = True
    origin: str = "config"
    created: datetime


class Interaction(SQLModel, table=True):
    __tablename__ = "interactions"

    id: int = Field(default=None, primary_key=True)  # given by the database on insert
    subscriber_id: int = Field(foreign_key="subscribers.id", index=True)
    paper_id: str = Field(foreign_key="papers.id", index=True, max_length=200)
    kind: str = Field(index=True, max_length=16)
    origin: str = "config"
    at: datetime


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("subscriber_id", "digest_date", name="one_digest_a_day"),)

    id: int = Field(default=None, primary_key=True)  # given by the database on insert
    subscriber_id: int = Field(foreign_key="subscribers.id", index=True)
    digest_date: date = Field(index=True)
    papers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=DeliveryStatus.PENDING, index=True, max_length=16)
    attempts: int = 0
    error: str = ""
    message_id: str = ""
    created: datetime
    sent_at: datetime | None = None
    # Written by the planner so any worker can render the digest from the row alone:
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # one per paper
    trending: list[list[Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # [paper id, count]
    highlights: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # one per paper
    sections: list[list[Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # [name, n papers]
    notes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # follow-up lines
    # A worker's claim on the row (see Store.claim_deliveries); lapses at claimed_until.
    claimed_by: str = Field(default="", max_length=100)
    claimed_until: datetime | None = Field(default=None, index=True)
    next_attempt_at: datetime | None = None  # a pending row waits until then (cross-run backoff)


class Lease(SQLModel, table=True):
    """A named lock with an owner and an expiry; see `Store.acquire_lease`."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=100)
    owner: str = Field(max_length=200)
    acquired: datetime
    expires: datetime


class SourceState(SQLModel, table=True):
    __tablename__ = "source_state"

    name: str = Field(primary_key=True, max_length=200)
    cursor: str | None = None
    last_success: datetime | None = None
    last_error: str = ""


class UsedToken(SQLModel, table=True):
    """A single-use link (like, dislike, confirm) that has been used: its nonce, so a replay changes nothing."""

    __tablename__ = "used_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(max_length=32)
    at: datetime


class RateHit(SQLModel, table=True):
    """One counted use of a rate-limited web action (by client IP or address), so every web process
    on this database shares the limits; rows older than `RATE_HIT_KEEP` seconds are dropped."""

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_key_at", "key", "at"),)

    id: int = Field(default=None, primary_key=True)  # given by the database on insert
    key: str = Field(max_length=200)
    at: float  # seconds since the epoch, from the web front's clock


RATE_HIT_KEEP = 3600.0  # the longest rate-limit window, in seconds


class OptOut(SQLModel, table=True):
    """An address that unsubscribed.  It wins over the preferences file until the reader subscribes again."""

    __tablename__ = "opt_outs"

    email: str = Field(primary_key=True, max_length=320)
    at: datetime


class PendingSignup(SQLModel, table=True):
    """A web sign-up waiting for its confirmation link, found by the link's nonce.  Nothing about
    the address's reader changes until that link is used; then exactly these settings apply."""

    __tablename__ = "pending_signups"

    nonce: str = Field(primary_key=True, max_length=64)
    email: str = Field(index=True, max_length=320)
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # Subscriber columns
    liked: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # paper ids
    # an uploaded library's papers, stored on confirmation:
    library: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    new_reader: bool = False  # this request made the address's (inactive) row, which holds its settings until confirmed
    created: datetime = Field(index=True)


class PaperLookup(SQLModel, table=True):
    """A paper a reader named (a liked arXiv id or URL, a library entry) that the store did not
    have, looked up at its source: whether it was found, and whether its absence was reported (a
    missing one is said once, not on every run)."""

    __tablename__ = "paper_lookups"

    key: str = Field(primary_key=True, max_length=200)  # e.g. "arxiv:2305.18290"
    found: bool = False
    reported: bool = False
    detail: str = ""
    tried_at: datetime = Field(index=True)


PENDING_SIGNUP_KEEP = timedelta(days=7)  # longer than a confirmation link lives (links.CONFIRM_MAX_AGE)


@dataclass
class UpsertCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # paper id -> why the database refused it
    absent: int = 0  # updates for papers not stored, left out (upsert_papers(insert=False))

    def add(self, other: UpsertCounts) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.absent += other.absent
        self.rejected.update(other.rejected)


@dataclass
class LikeRow:
    email: str
    paper_id: str
    kind: str


def table_of(model: type[SQLModel]) -> Table:
    """The SQLAlchemy Table behind a SQLModel table class (for bulk statements)."""
    return SQLModel.metadata.tables[str(model.__tablename__)]
