"""Papers and source checkpoints: upserted as sources fetch them, read by ranking and the web."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    func,
)
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import col, select

from digest.db.base import StoreBase
from digest.db.engine import _chunks
from digest.db.tables import Interaction, Kind, Paper, PaperLookup, SourceState, UpsertCounts, _utc, aware
from digest.sources.base import PaperRecord, arxiv_id, title_key

# What a database raises for one record it cannot hold (a NUL byte on PostgreSQL, a number too
# large, an unencodable string): that record is refused, the rest are stored.  Never the errors of
# the database itself (OperationalError: disk full, read-only, gone), which stop the run.
# When a paper from a reader's library (an old paper) was first seen, as far as the day's candidates
# go: never.  A source that later fetches the paper gives it its real first_seen.
LIBRARY_SEEN = datetime(1970, 1, 1, tzinfo=UTC)

_BAD_RECORD = (DataError, IntegrityError, UnicodeError, OverflowError, ValueError, TypeError)


class Papers(StoreBase):
    """Papers and source checkpoints."""

    def upsert_papers(
        self, records: Iterable[PaperRecord], now: datetime, *, insert: bool = True, old: bool = False
    ) -> UpsertCounts:
        """Insert new papers, update changed ones (a new arXiv version is an update, not a new paper).

        `insert=False` only updates stored papers (an arXiv replacement of a paper we never had is
        left out, counted in `absent`).  `old=True`: papers a reader named (a library's entries, liked
        ids looked up at arXiv), old papers: new rows are first seen at LIBRARY_SEEN (never among the
        day's candidates) and known rows only get their blanks filled.

        A record the database cannot hold is left out and named in `rejected`; the others are
        stored.  The batch goes in one transaction; when it fails on a bad record it is halved until
        the bad records stand alone (a few extra transactions per bad record, not one per record).
        """
        records = list(records)
        try:
            return self._upsert_batch(records, now, insert=insert, old=old)
        except _BAD_RECORD as e:
            if len(records) == 1:
                reason = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
                return UpsertCounts(rejected={records[0].id[:80]: f"{e.__class__.__name__}: {reason}"})
        counts = UpsertCounts()
        half = len(records) // 2
        for part in (records[:half], records[half:]):
            counts.add(self.upsert_papers(part, now, insert=insert, old=old))
        return counts

    def _upsert_batch(self, records: list[PaperRecord], now: datetime, *, insert: bool, old: bool) -> UpsertCounts:
        counts = UpsertCounts()
        stamp = _utc(now)
        with self.session() as s:
            known: dict[str, Paper] = {}  # one query per 500 records, not one per record
            for chunk in _chunks(list(dict.fromkeys(r.id for r in records)), 500):
                known.update((p.id, p) for p in s.exec(select(Paper).where(col(Paper.id).in_(chunk))))
            for rec in records:
                row = known.get(rec.id)
                values: dict[str, Any] = {
                    "title": rec.title,
                    "title_key": title_key(rec.title),
                    "abstract": rec.abstract,
                    "authors": rec.authors,
                    "categories": rec.categories,
                    "url": rec.url,
                    "pdf_url": rec.pdf_url,
                    "published": _utc(rec.published),
                    "updated": _utc(rec.updated),
                    "source": rec.source,
                    "upvotes": rec.upvotes,
                    "comments": rec.comments,
                    "doi": rec.doi,
                    "code_url": rec.code_url,
                    "journal_ref": rec.journal_ref,
                    "version": rec.version,
                }
                if row is None and not insert:
                    counts.absent += 1
                    continue
                if row is None:
                    seen = _utc(LIBRARY_SEEN) if old else stamp
                    known[rec.id] = Paper(id=rec.id, first_seen=seen, last_changed=stamp, **values)
                    s.add(known[rec.id])
                    counts.new += 1
                    continue
                changed = False
                before = (row.version or 0, row.journal_ref or "")
                # A newer version (or an unversioned row) may replace fields; an unversioned or older
                # record (e.g. Hugging Face after arXiv) only fills blanks.  Empty values never erase,
                # and community counts only grow, so no source zeroes another's upvotes.
                row_updated = aware(row.updated)
                rec_updated = values["updated"]
                replace = row_updated is None or (rec_updated is not None and rec_updated >= row_updated)
                replace = replace and not old
                if not old and aware(row.first_seen) <= LIBRARY_SEEN:
                    row.first_seen = stamp  # a library's paper that a source now brings: news from today
                    changed = True
                for key, value in values.items():
                    if key in ("upvotes", "comments", "version"):
                        value = max(value, getattr(row, key) or 0)
                    elif not value:
                        continue  # a poorer source never erases what a richer one gave
                    elif not replace and getattr(row, key):
                        continue
                    if getattr(row, key) != value:
                        setattr(row, key, value)
                        changed = True
                if not old and (
                    (before[0] and (row.version or 0) > before[0]) or (row.journal_ref and row.journal_ref != before[1])
                ):
                    row.revised_at = stamp  # a new version or a journal reference: a follow-up for its readers
                if changed:
                    row.last_changed = stamp
                    counts.updated += 1
                else:
                    counts.unchanged += 1
            s.commit()
        return counts

    def revised_likes(self, subscriber_ids: Sequence[int]) -> dict[int, list[tuple[Paper, datetime]]]:
        """Each reader's liked papers that got a new version or journal reference since they were
        stored (`revised_at` set), with when the reader liked them."""
        out: dict[int, list[tuple[Paper, datetime]]] = {}
        with self.session() as s:
            for chunk in _chunks(list(subscriber_ids), 500):
                query = (
                    select(col(Interaction.subscriber_id), Paper, col(Interaction.at))
                    .join(Paper, col(Paper.id) == col(Interaction.paper_id))
                    .where(
                        col(Interaction.subscriber_id).in_(list(chunk)),
                        col(Interaction.kind) == Kind.LIKE,
                        col(Paper.revised_at) != None,  # noqa: E711
                    )
                    .order_by(col(Interaction.subscriber_id), col(Paper.revised_at), col(Paper.id))
                )
                for sid, paper, at in s.exec(query):
                    mine = out.setdefault(sid, [])
                    if all(p.id != paper.id for p, _ in mine):
                        mine.append((paper, aware(at)))
        return out

    def papers(self, ids: Sequence[str] | None = None) -> list[Paper]:
        """All papers (or the given ones, in the given order, unknown ids left out)."""
        with self.session() as s:
            if ids is None:
                return list(s.exec(select(Paper).order_by(col(Paper.first_seen), col(Paper.id))))
            found = {
                p.id: p
                for chunk in _chunks(list(ids), 500)
                for p in s.exec(select(Paper).where(col(Paper.id).in_(list(chunk))))
            }
        return [found[i] for i in ids if i in found]

    def corpus_rows(self) -> list[tuple[str, str, str, float]]:
        """(id, title, abstract, upvotes) of every paper, in `papers()` order: what ranking needs,
        without building a full row object per paper (200,000 of them are slow and ~1 GB)."""
        query = select(col(Paper.id), col(Paper.title), col(Paper.abstract), col(Paper.upvotes)).order_by(
            col(Paper.first_seen), col(Paper.id)
        )
        with self.session() as s:
            return [(row[0], row[1], row[2], row[3]) for row in s.connection().execute(query)]

    def paper_count(self) -> int:
        with self.session() as s:
            return s.exec(select(func.count()).select_from(Paper)).one()

    def recent_paper_ids(self, since: datetime) -> list[str]:
        """Papers published, or first seen by us, at or after `since`."""
        stamp = _utc(since)
        with self.session() as s:
            rows = s.exec(
                select(col(Paper.id)).where(
                    (col(Paper.first_seen) >= stamp)
                    | (
                        (col(Paper.published) != None)  # noqa: E711
                        & (col(Paper.published) >= stamp)
                        & (col(Paper.first_seen) > _utc(LIBRARY_SEEN))  # a library's paper is not news
                    )
                )
            )
            return list(rows)

    def match_records(self, records: Sequence[PaperRecord]) -> list[PaperRecord]:
        """`records` with the ids of the stored papers they are (by arXiv id, then DOI, then
        normalised title), so an upsert merges with them; the others keep their own ids."""
        out = []
        with self.session() as s:
            for rec in records:
                pid: str | None = None
                if arxiv_id(rec.id) and s.get(Paper, rec.id) is not None:
                    pid = rec.id
                if pid is None and rec.doi:
                    pid = s.exec(select(col(Paper.id)).where(col(Paper.doi) == rec.doi).order_by(col(Paper.id))).first()
                if pid is None and (key := title_key(rec.title)):
                    query = select(col(Paper.id)).where(col(Paper.title_key) == key).order_by(col(Paper.id))
                    pid = s.exec(query).first()
                out.append(dataclasses.replace(rec, id=pid) if pid and pid != rec.id else rec)
        return out

    def resolve_paper(self, entry: str) -> str | None:
        """The paper an arXiv id, arXiv/HF URL or exact title (case and spacing aside) names."""
        with self.session() as s:
            aid = arxiv_id(entry)
            if aid and s.get(Paper, aid) is not None:
                return aid
            if s.get(Paper, entry.strip()) is not None:
                return entry.strip()
            key = title_key(entry)
            if not key:
                return None
            return s.exec(select(col(Paper.id)).where(col(Paper.title_key) == key)).first()

    def search_papers(self, query: str, limit: int = 20) -> list[Paper]:
        """Papers whose title contains every word of `query` (any case), newest first."""
        words = [w for w in query.lower().split() if w][:8]
        if not words:
            return []
        with self.session() as s:
            stmt = select(Paper)
            for w in words:
                escaped = w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                stmt = stmt.where(func.lower(col(Paper.title)).like(f"%{escaped}%", escape="\\"))
            return list(s.exec(stmt.order_by(col(Paper.first_seen).desc(), col(Paper.id)).limit(limit)))

    def paper_lookups(self, keys: Sequence[str]) -> dict[str, PaperLookup]:
        """The saved outcome of earlier lookups of these keys ("arxiv:2305.18290"), by key."""
        with self.session() as s:
            return {
                row.key: row
                for chunk in _chunks(list(dict.fromkeys(keys)), 500)
                for row in s.exec(select(PaperLookup).where(col(PaperLookup.key).in_(list(chunk))))
            }

    def save_lookup(self, key: str, *, found: bool, reported: bool, detail: str, now: datetime) -> None:
        """Remember one lookup: found or not, and whether its absence has been reported."""
        with self.session() as s:
            row = s.get(PaperLookup, key) or PaperLookup(key=key, tried_at=_utc(now))
            row.found, row.reported, row.detail, row.tried_at = found, reported, detail[:500], _utc(now)
            s.add(row)
            s.commit()

    def source_state(self, name: str) -> SourceState | None:
        """A source's saved checkpoint, last success and last error (None before its first run)."""
        with self.session() as s:
            return s.get(SourceState, name)

    def source_cursor(self, name: str) -> str | None:
        with self.session() as s:
            row = s.get(SourceState, name)
            return row.cursor if row else None

    def save_source_state(self, name: str, *, cursor: str | None, now: datetime, error: str = "") -> None:
        """Remember how far a source got (on success) or why it failed (cursor kept unless one is given)."""
        with self.session() as s:
            row = s.get(SourceState, name) or SourceState(name=name)
            if error:
                row.last_error = error[:2000]
                if cursor is not None:  # progress a partly failed run did make
                    row.cursor = cursor
            else:
                row.cursor = cursor
                row.last_success = _utc(now)
                row.last_error = ""
            s.add(row)
            s.commit()
