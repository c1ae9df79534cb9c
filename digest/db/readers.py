"""Readers and what they did: subscribers (config and web), likes, dislikes, clicks, opt-outs and
sign-ups waiting for their confirmation link.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    insert,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from digest.db.base import StoreBase
from digest.db.engine import _chunks
from digest.db.tables import (
    PENDING_SIGNUP_KEEP,
    Interaction,
    Kind,
    LikeRow,
    OptOut,
    Paper,
    PendingSignup,
    Subscriber,
    _utc,
    table_of,
)
from digest.errors import StoreError
from digest.heap import cyclic_gc_paused


class Readers(StoreBase):
    """Readers, their interactions and sign-ups."""

    def sync_subscribers(self, subscribers: Iterable[Any], now: datetime) -> dict[str, int]:
        """Make the config's subscribers exist and match the file; returns email -> id.

        Subscribers that came from the config and are no longer in it are deactivated, not deleted,
        so their history stays.  An address that unsubscribed (opt_outs) stays inactive whatever the
        file says; web sign-ups (origin "web") are left alone.
        """
        ids: dict[str, int] = {}
        stamp = _utc(now)
        with self.session() as s:
            opted_out = set(s.exec(select(col(OptOut.email))))
            for sub in subscribers:
                row = s.exec(select(Subscriber).where(col(Subscriber.email) == sub.email)).first()
                fields = {
                    "name": sub.name,
                    "timezone": sub.timezone,
                    "send_at": sub.send_at,
                    "frequency": sub.frequency,
                    "weekly_day": sub.weekly_day,
                    "max_papers": sub.max_papers,
                    "keywords": list(sub.keywords),
                    "exclude_keywords": list(sub.exclude_keywords),
                    "categories": list(sub.categories),
                    "delivery": str(sub.delivery),
                    "topics": [t.model_dump() for t in getattr(sub, "topics", [])],
                    "authors": list(getattr(sub, "authors", [])),
                }
                if row is None:
                    row = Subscriber(email=sub.email, created=stamp, origin="config", **fields)
                    row.active = sub.email not in opted_out
                    s.add(row)
                else:
                    for key, value in fields.items():
                        setattr(row, key, value)
                    if row.origin == "config":
                        row.active = sub.email not in opted_out  # an unsubscribe wins over the file
                s.flush()
                assert row.id is not None  # the flush gave it one
                ids[sub.email] = row.id
            for row in s.exec(select(Subscriber).where(col(Subscriber.origin) == "config")):
                if row.email not in ids:
                    row.active = False
            s.commit()
        return ids

    def set_topics(self, subscriber_id: int, topics: list[dict[str, Any]]) -> None:
        """A reader's named interests as ranking reads them: liked papers as stored paper ids."""
        with self.session() as s:
            row = s.get(Subscriber, subscriber_id)
            if row is not None and row.topics != topics:
                row.topics = topics
                s.commit()

    def reader_categories(self) -> list[str]:
        """Every category an active subscriber follows (web sign-ups included), each once."""
        with self.session() as s:
            rows = s.exec(select(Subscriber.categories).where(col(Subscriber.active) == True))  # noqa: E712
            return list(dict.fromkeys(c for cats in rows for c in cats or ()))

    def subscribers(self, *, active_only: bool = True) -> list[Subscriber]:
        # 100,000 rows that live on: 3.3-3.5 s with the cycle collector walking the growing heap, 1.7 s without
        with cyclic_gc_paused(), self.session() as s:
            query = select(Subscriber).order_by(col(Subscriber.id))
            if active_only:
                query = query.where(col(Subscriber.active) == True)  # noqa: E712
            return list(s.exec(query))

    def add_interactions(
        self,
        subscriber_id: int,
        paper_ids: Iterable[str],
        kind: str,
        now: datetime,
        *,
        origin: str,
        unique: bool = True,
    ) -> int:
        """Record interactions; with `unique`, one of a kind per (subscriber, paper). Returns how many were new."""
        added = 0
        stamp = _utc(now)
        with self.session() as s:
            existing: set[str] = set()
            if unique:
                existing = set(
                    s.exec(
                        select(col(Interaction.paper_id)).where(
                            col(Interaction.subscriber_id) == subscriber_id, col(Interaction.kind) == kind
                        )
                    )
                )
            for pid in dict.fromkeys(paper_ids):
                if pid in existing:
                    continue
                s.add(Interaction(subscriber_id=subscriber_id, paper_id=pid, kind=kind, origin=origin, at=stamp))
                added += 1
            s.commit()
        return added

    def replace_interactions(
        self, subscriber_id: int, paper_ids: Iterable[str], kind: str, now: datetime, *, origin: str
    ) -> None:
        """Make this origin's interactions of a kind exactly `paper_ids` (the config's likes follow the file)."""
        wanted = list(dict.fromkeys(paper_ids))
        with self.session() as s:
            rows = list(
                s.exec(
                    select(Interaction).where(
                        col(Interaction.subscriber_id) == subscriber_id,
                        col(Interaction.kind) == kind,
                        col(Interaction.origin) == origin,
                    )
                )
            )
            have = {r.paper_id for r in rows}
            for r in rows:
                if r.paper_id not in wanted:
                    s.delete(r)
            for pid in wanted:
                if pid not in have:
                    s.add(
                        Interaction(subscriber_id=subscriber_id, paper_id=pid, kind=kind, origin=origin, at=_utc(now))
                    )
            s.commit()

    def interaction_origins(self, subscriber_id: int, kind: str, *, prefix: str = "") -> list[str]:
        """The origins of a subscriber's interactions of a kind (those starting with `prefix`)."""
        with self.session() as s:
            rows = s.exec(
                select(col(Interaction.origin))
                .where(
                    col(Interaction.subscriber_id) == subscriber_id,
                    col(Interaction.kind) == kind,
                    col(Interaction.origin).startswith(prefix, autoescape=True),
                )
                .distinct()
            )
            return sorted(rows)

    def interactions(self, kinds: Sequence[str]) -> list[LikeRow]:
        """(email, paper, kind) of every interaction of the given kinds, for active subscribers."""
        with self.session() as s:
            rows = s.exec(
                select(col(Subscriber.email), col(Interaction.paper_id), col(Interaction.kind))
                .join(Subscriber, col(Subscriber.id) == col(Interaction.subscriber_id))
                .where(col(Interaction.kind).in_(list(kinds)), col(Subscriber.active) == True)  # noqa: E712
            )
            return [LikeRow(*row) for row in rows]

    def interaction_chunks(self, kind: str, size: int = 100_000) -> Iterator[tuple[list[int], list[str]]]:
        """(subscriber ids, paper ids) of every interaction of this kind, for active subscribers, in
        chunks of `size` rows straight from the driver (millions of rows at scale: SQLAlchemy's row
        objects cost 3x the query, and all rows at once ~1 GB)."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = (
            "SELECT i.subscriber_id, i.paper_id FROM interactions i JOIN subscribers s ON s.id = i.subscriber_id "
            f"WHERE i.kind = {mark} AND s.active"
        )
        with self.session() as s:
            cursor = s.connection().connection.cursor()
            try:
                cursor.execute(sql, (kind,))
                while rows := cursor.fetchmany(size):
                    yield [r[0] for r in rows], [r[1] for r in rows]
            finally:
                cursor.close()

    def papers_seen(
        self, subscriber_ids: Sequence[int], paper_ids: Sequence[str], kinds: Sequence[str]
    ) -> dict[int, set[str]]:
        """For each subscriber, which of `paper_ids` they already have an interaction of `kinds` with."""
        seen: dict[int, set[str]] = {}
        if not subscriber_ids or not paper_ids:
            return seen
        wanted = set(subscriber_ids)
        kind_set = set(kinds)
        with self.session() as s:
            for start in range(0, len(paper_ids), 500):
                # by paper only (the kind is checked here): otherwise SQLite may pick the kind index,
                # which matches every like and was a scan of millions of rows at 100k readers
                rows = s.exec(
                    select(col(Interaction.subscriber_id), col(Interaction.paper_id), col(Interaction.kind)).where(
                        col(Interaction.paper_id).in_(list(paper_ids[start : start + 500])),
                    )
                )
                for sid, pid, kind in rows:
                    if kind in kind_set and sid in wanted:
                        seen.setdefault(sid, set()).add(pid)
        return seen

    def paper_ids_for(self, subscriber_id: int, kinds: Sequence[str]) -> set[str]:
        with self.session() as s:
            return set(
                s.exec(
                    select(col(Interaction.paper_id)).where(
                        col(Interaction.subscriber_id) == subscriber_id, col(Interaction.kind).in_(list(kinds))
                    )
                )
            )

    def add_subscribers(
        self, rows: Iterable[dict[str, Any]], now: datetime, *, origin: str = "import"
    ) -> dict[str, int]:
        """Insert many new subscribers in one transaction (an import, a benchmark); returns email -> id."""
        stamp = _utc(now)
        with self.session() as s:
            added = [Subscriber(created=stamp, origin=origin, **row) for row in rows]
            s.add_all(added)
            s.commit()
            return {row.email: row.id for row in added if row.id is not None}

    def add_interactions_many(self, pairs: Iterable[tuple[int, str]], kind: str, now: datetime, *, origin: str) -> int:
        """Record many (subscriber id, paper id) interactions in one transaction, without checking for repeats."""
        stamp = _utc(now)
        rows = [
            {"subscriber_id": sid, "paper_id": pid, "kind": kind, "origin": origin, "at": stamp} for sid, pid in pairs
        ]
        with self.session() as s:
            for chunk in _chunks(rows, 20_000):
                s.execute(insert(table_of(Interaction)), chunk)
            s.commit()
        return len(rows)

    def subscribers_by_id(self, ids: Sequence[int]) -> list[Subscriber]:
        """The given subscribers (active or not), in no particular order."""
        found: list[Subscriber] = []
        with self.session() as s:
            for chunk in _chunks(list(ids), 500):
                found.extend(s.exec(select(Subscriber).where(col(Subscriber.id).in_(chunk))))
        return found

    def subscriber(self, *, id: int | None = None, email: str | None = None) -> Subscriber | None:
        """One subscriber by id or email, active or not."""
        with self.session() as s:
            if id is not None:
                return s.get(Subscriber, id)
            return s.exec(select(Subscriber).where(col(Subscriber.email) == (email or "").lower())).first()

    def set_feedback(self, subscriber_id: int, paper_id: str, kind: str, now: datetime, *, origin: str = "web") -> bool:
        """Like or dislike a paper (the opposite opinion is dropped); False if it was already so."""
        opposite = Kind.DISLIKE if kind == Kind.LIKE else Kind.LIKE
        with self.session() as s:
            rows = list(
                s.exec(
                    select(Interaction).where(
                        col(Interaction.subscriber_id) == subscriber_id,
                        col(Interaction.paper_id) == paper_id,
                        col(Interaction.kind).in_([Kind.LIKE, Kind.DISLIKE]),
                    )
                )
            )
            for r in rows:
                if r.kind == opposite:
                    s.delete(r)
            changed = not any(r.kind == kind for r in rows)
            if changed:
                s.add(
                    Interaction(subscriber_id=subscriber_id, paper_id=paper_id, kind=kind, origin=origin, at=_utc(now))
                )
            s.commit()
        return changed

    def remove_interaction(self, subscriber_id: int, paper_id: str, kind: str, *, origin: str) -> int:
        """Forget one subscriber's interaction of a kind and origin with a paper; returns how many went."""
        with self.session() as s:
            rows = list(
                s.exec(
                    select(Interaction).where(
                        col(Interaction.subscriber_id) == subscriber_id,
                        col(Interaction.paper_id) == paper_id,
                        col(Interaction.kind) == kind,
                        col(Interaction.origin) == origin,
                    )
                )
            )
            for r in rows:
                s.delete(r)
            s.commit()
            return len(rows)

    def liked_papers(self, subscriber_id: int, kind: str = Kind.LIKE) -> list[tuple[Paper, str]]:
        """(paper, origin) of a subscriber's likes (or dislikes), newest first."""
        with self.session() as s:
            rows = s.exec(
                select(Paper, col(Interaction.origin))
                .join(Interaction, col(Interaction.paper_id) == col(Paper.id))
                .where(col(Interaction.subscriber_id) == subscriber_id, col(Interaction.kind) == kind)
                .order_by(col(Interaction.at).desc(), col(Interaction.id).desc())
            )
            return [(paper, origin) for paper, origin in rows]

    def request_subscription(
        self,
        email: str,
        fields: dict[str, Any],
        liked: Sequence[str],
        now: datetime,
        *,
        nonce: str = "",
        library: Sequence[dict[str, Any]] = (),
    ) -> Subscriber:
        """A web sign-up, kept under `nonce` (its confirmation link's) for `confirm_subscription`.

        Nothing about a reader who exists changes here: anyone can type an address into the form.
        An active reader is returned as is and nothing is kept (the caller sends a "you already get
        it" notice instead of a link); a new address gets an inactive web row with these settings
        and likes, which sends nothing until confirmed.  An uploaded `library` (parsed, as JSON
        data) waits with the sign-up: its papers are stored only when the link is used.
        """
        stamp = _utc(now)
        email = email.lower()
        liked = list(dict.fromkeys(liked))
        with self.session() as s:
            s.exec(delete(PendingSignup).where(col(PendingSignup.created) < stamp - PENDING_SIGNUP_KEEP))
            row = s.exec(select(Subscriber).where(col(Subscriber.email) == email)).first()
            if row is not None and row.active:
                s.commit()
                return row
            new_reader = row is None
            try:
                if row is None:
                    row = Subscriber(email=email, created=stamp, origin="web", active=False, **fields)
                    s.add(row)
                    s.flush()
                    assert row.id is not None  # the flush gave it one
                    for pid in liked:
                        s.add(Interaction(subscriber_id=row.id, paper_id=pid, kind=Kind.LIKE, origin="web", at=stamp))
                if nonce:
                    s.add(
                        PendingSignup(
                            nonce=nonce,
                            email=email,
                            fields=fields,
                            liked=liked,
                            library=list(library),
                            new_reader=new_reader,
                            created=stamp,
                        )
                    )
                s.commit()
            except IntegrityError:
                if not new_reader:
                    raise
                s.rollback()  # the same new address signed up twice at once: the other request made the row
                return self.request_subscription(email, fields, liked, now, nonce=nonce, library=library)
            return row

    def pending_library(self, nonce: str) -> list[dict[str, Any]]:
        """The library uploaded with the sign-up that `nonce` names (empty when none)."""
        with self.session() as s:
            row = s.get(PendingSignup, nonce)
            return list(row.library) if row is not None else []

    def confirm_subscription(self, email: str, now: datetime, *, nonce: str = "") -> Subscriber | None:
        """Activate a confirmed address (and forget an earlier unsubscribe), applying the sign-up its
        link's `nonce` names; None when the address has no row.

        A web reader takes exactly that sign-up's settings and adds its likes to their own (a row an
        earlier, unconfirmed sign-up made holds that stranger's likes: they go); a reader from the
        preferences file keeps the file's.  The address's other pending sign-ups are dropped, so an
        older link only activates and never brings back stale settings.
        """
        stamp = _utc(now)
        email = email.lower()
        with self.session() as s:
            row = s.exec(select(Subscriber).where(col(Subscriber.email) == email)).first()
            if row is None:
                return None
            assert row.id is not None  # a stored row
            pending = list(s.exec(select(PendingSignup).where(col(PendingSignup.email) == email)))
            chosen = next((p for p in pending if nonce and p.nonce == nonce), None)
            if chosen is not None and row.origin == "web":
                for key, value in chosen.fields.items():
                    setattr(row, key, value)
                mine = list(
                    s.exec(
                        select(Interaction).where(
                            col(Interaction.subscriber_id) == row.id,
                            col(Interaction.kind).in_([Kind.LIKE, Kind.DISLIKE]),
                        )
                    )
                )
                placeholder = any(p.new_reader and p is not chosen for p in pending)
                for r in mine:
                    if (r.kind == Kind.DISLIKE and r.paper_id in chosen.liked) or (
                        placeholder and r.kind == Kind.LIKE and r.origin == "web"
                    ):
                        s.delete(r)
                kept = {r.paper_id for r in mine if r.kind == Kind.LIKE and not (placeholder and r.origin == "web")}
                for pid in chosen.liked:
                    if pid not in kept:
                        s.add(Interaction(subscriber_id=row.id, paper_id=pid, kind=Kind.LIKE, origin="web", at=stamp))
            row.active = True
            opt_out = s.get(OptOut, row.email)
            if opt_out is not None:
                s.delete(opt_out)
            for p in pending:
                s.delete(p)
            s.commit()
            return row

    def unsubscribe(self, email: str, now: datetime) -> bool:
        """Stop sending to an address, for good (the opt-out wins over the preferences file)."""
        email = email.lower()
        with self.session() as s:
            row = s.exec(select(Subscriber).where(col(Subscriber.email) == email)).first()
            if row is not None:
                row.active = False
            if s.get(OptOut, email) is None:
                s.add(OptOut(email=email, at=_utc(now)))
            s.commit()
            return row is not None

    def new_feed_key(self, subscriber_id: int, feed_key: str) -> Subscriber:
        """Give a reader (from the web or the file) a new feed key: every feed link made before stops working."""
        with self.session() as s:
            row = s.get(Subscriber, subscriber_id)
            if row is None:
                raise StoreError(f"subscriber {subscriber_id} does not exist")
            row.feed_key = feed_key
            s.commit()
            s.refresh(row)
            return row

    def update_preferences(self, subscriber_id: int, fields: dict[str, Any]) -> Subscriber:
        """Change a web subscriber's preferences; a config subscriber's come from the file (StoreError)."""
        with self.session() as s:
            row = s.get(Subscriber, subscriber_id)
            if row is None:
                raise StoreError(f"subscriber {subscriber_id} does not exist")
            if row.origin != "web":
                raise StoreError(f"{row.email} is set in the preferences file; change it there")
            for key, value in fields.items():
                setattr(row, key, value)
            s.commit()
            return row
