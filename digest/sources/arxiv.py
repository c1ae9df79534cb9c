"""arXiv: new papers in the configured categories, from the export API's Atom feed, newest first.

The checkpoint is the newest submission time seen, never later than the real clock (an entry
dated ahead, accepted by a run with `--now` in the future, must not make the real runs skip the
entries submitted before it).  A run pages back (`max_pages` at most, a `request_delay` pause
between requests, as arXiv asks) until entries are older than the checkpoint, or on the first run
older than `max_days`.  The id is the arXiv id without its version, so a new
version updates the paper instead of adding one.  The checkpoint only moves when every page was
read whole: after a failure or a cut-off page the next run reads the same span again.  A page
whose XML is broken is read entry by entry (`parse_feed`), so one malformed entry is skipped and
named while the others are kept, each exactly as served.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import feedparser
from feedparser.exceptions import CharacterEncodingOverride, NonXMLContentType

from digest.errors import SourceError
from digest.settings import SourceSettings
from digest.sources.base import FetchOptions, FetchResult, PaperRecord, arxiv_id, sane_date
from digest.sources.http import Http, policy_for

DEFAULT_BASE_URL = "https://export.arxiv.org"


@dataclass
class ParsedFeed:
    """A feed read entry by entry: its header fields, the entries that parsed, the ones that did not."""

    feed: dict[str, Any]
    entries: list[Any]
    malformed: list[str] = field(default_factory=list)  # where each broken entry was (its id, or "entry N")
    cut_off: bool = False  # the document ends before its closing tag: the rest of it never arrived
    version: str = ""  # feedparser's name for the format ("rss20", "atom10"); "" when it is neither


_BENIGN = (CharacterEncodingOverride, NonXMLContentType)


def _well_formed(parsed: Any) -> bool:
    return not parsed.get("bozo") or isinstance(parsed.get("bozo_exception"), _BENIGN)


def parse_feed(body: bytes, *, item: str = "entry") -> ParsedFeed:
    """Parse an Atom (`item="entry"`) or RSS (`item="item"`) document with feedparser.

    A well-formed document is parsed once.  A broken one is cut at each `<entry>` (`<item>`) and
    the pieces parsed strictly inside the document's own header, halves apart until each broken
    entry stands alone, so it cannot swallow its neighbours (feedparser's lenient mode merges
    them) and is named instead."""
    whole = feedparser.parse(body)
    if _well_formed(whole):
        return ParsedFeed(
            dict(whole.get("feed") or {}), list(whole.get("entries") or []), version=str(whole.get("version") or "")
        )
    text = body.decode("utf-8", errors="replace")
    starts = [m.start() for m in re.finditer(rf"<{item}[\s>]", text)]
    closing = "</feed>" if item == "entry" else "</channel>"
    tail = "</feed>" if item == "entry" else "</channel></rss>"
    end = text.rfind(closing)
    cut_off = end < 0
    if not starts:
        return ParsedFeed(dict(whole.get("feed") or {}), [], ["the document"], cut_off, str(whole.get("version") or ""))
    head = text[: starts[0]]
    header = feedparser.parse((head + tail).encode())
    result = ParsedFeed(dict(header.get("feed") or {}), [], [], cut_off, str(header.get("version") or ""))
    bounds = [*starts[1:], end if end > starts[-1] else len(text)]
    pieces = [text[a:b] for a, b in zip(starts, bounds, strict=True)]
    if cut_off:
        pieces.pop()  # the cut-off last one is the page's fault, not its own
    _parse_pieces(head, tail, pieces, 0, item, result)
    return result


def _xml_ok(doc: bytes) -> bool:
    """Is `doc` well-formed, namespaces included (expat, as feedparser's strict parser)?"""
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    try:
        parser.Parse(doc, True)
    except xml.parsers.expat.ExpatError:
        return False
    return True


def _parse_pieces(head: str, tail: str, pieces: list[str], first: int, item: str, result: ParsedFeed) -> None:
    """Parse entries `pieces` together; when that fails, each half on its own, down to the single
    broken entries (a few parses per broken entry, not one per entry)."""
    if not pieces:
        return
    doc = (head + "".join(pieces) + tail).encode()
    parsed = feedparser.parse(doc) if _xml_ok(doc) else None  # expat first: feedparser's lenient retry is slow
    entries = list(parsed.get("entries") or []) if parsed is not None else []
    if parsed is not None and _well_formed(parsed) and len(entries) == len(pieces):
        result.entries.extend(entries)
    elif len(pieces) == 1:
        found = re.search(r"<(?:id|guid)[^>]*>\s*([^<\s]{1,100})", pieces[0])
        result.malformed.append(found.group(1) if found else f"{item} {first + 1}")
    else:
        half = len(pieces) // 2
        _parse_pieces(head, tail, pieces[:half], first, item, result)
        _parse_pieces(head, tail, pieces[half:], first + half, item, result)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _links(entry: Any) -> tuple[str, str]:
    url = pdf = ""
    for link in entry.get("links") or []:
        href = str(link.get("href") or "")
        if link.get("title") == "pdf" or link.get("type") == "application/pdf":
            pdf = pdf or href
        elif link.get("rel") == "alternate":
            url = url or href
    return url, pdf


def parse_entry(entry: Any, *, source: str, now: datetime) -> PaperRecord:
    """One Atom entry as a record; ValueError names why it cannot be one."""
    raw_id = str(entry.get("id") or "")
    pid = arxiv_id(raw_id)
    if not pid:
        raise ValueError("missing or unknown arXiv id")
    published = sane_date(_when(entry.get("published")), now)
    if published is None:
        raise ValueError("missing or absurd date")
    updated = sane_date(_when(entry.get("updated")), now) or published
    url, pdf = _links(entry)
    version = re.search(r"v(\d+)$", raw_id.strip())
    return PaperRecord.make(
        id=pid,
        title=str(entry.get("title") or ""),
        abstract=str(entry.get("summary") or ""),
        authors=[str(a.get("name") or "") for a in entry.get("authors") or []],
        categories=[str(t.get("term")) for t in entry.get("tags") or [] if t.get("term")][:20],
        url=url or f"https://arxiv.org/abs/{pid}",
        pdf_url=pdf or f"https://arxiv.org/pdf/{pid}",
        published=published,
        updated=max(updated, published),
        source=source,
        doi=entry.get("arxiv_doi") or "",
        journal_ref=entry.get("arxiv_journal_ref") or "",
        version=int(version.group(1)) if version else 0,
    )


def _floor(cursor: str | None, options: FetchOptions, now: datetime, max_days: int) -> datetime:
    """Entries submitted before this moment were fetched by an earlier run (or are too old)."""
    if options.since is not None:
        return datetime.combine(options.since, time(), tzinfo=UTC)
    saved = _when(cursor)
    if saved is not None:
        return saved if saved.tzinfo else saved.replace(tzinfo=UTC)
    return now - timedelta(days=max_days)


def fetch_arxiv(src: SourceSettings, cursor: str | None, now: datetime, options: FetchOptions) -> FetchResult:
    """New and updated papers in `src.categories` since the checkpoint; see the module docstring."""
    result = FetchResult(src.label, cursor=cursor)
    floor = _floor(cursor, options, now, src.max_days)
    newest = _when(cursor)
    url = f"{src.base_url or DEFAULT_BASE_URL}/api/query"
    query = " OR ".join(f"cat:{c}" for c in src.categories)
    seen: set[str] = set()
    whole = True  # every page read cleanly so far
    done = False
    with Http(policy_for(src), sleep=options.sleep) as http:
        for page in range(src.max_pages):
            options.advance(page, src.max_pages)
            params = {
                "search_query": query,
                "sortBy": "submittedDate",
                "sortOrder": "descending",
                "start": page * src.page_size,
                "max_results": src.page_size,
            }
            try:
                content = http.get(url, params)
            except SourceError as e:
                if not result.records:
                    raise  # the source is down: nothing to save
                result.error = str(e)
                return result  # the cursor stays: the next run reads this span again
            feed = parse_feed(content)
            entries = feed.entries
            if any("/api/errors" in str(e.get("id") or "") for e in entries):
                result.error = f"{url}: arXiv rejected the query: {entries[0].get('summary', '').strip()[:300]}"
                return result
            if feed.cut_off:
                result.skipped["broken feed page"] += 1
                whole = False
            for where in feed.malformed:
                result.skip("malformed entry", where[:80])
            for entry in entries:
                try:
                    rec = parse_entry(entry, source=src.label, now=now)
                except ValueError as e:
                    result.skip(str(e), str(entry.get("id") or f"page {page + 1}")[:80])
                    continue
                if rec.published is not None and rec.published < floor:
                    done = True  # sorted newest first: the rest was fetched before
                    continue
                if rec.id in seen:
                    result.skipped["duplicate id"] += 1
                    continue
                seen.add(rec.id)
                result.records.append(rec)
                if rec.published is not None and (newest is None or rec.published > newest):
                    newest = rec.published
            total = _int(feed.feed.get("opensearch_totalresults"))
            if done or not entries or (total is not None and (page + 1) * src.page_size >= total):
                done = True
                break
        options.advance(page + 1, page + 1)
    if not done:
        result.notes.append(
            f"stopped after max_pages = {src.max_pages} pages; papers older than "
            f"{min((r.published for r in result.records if r.published), default=floor):%Y-%m-%d %H:%M} "
            "were not fetched (raise max_pages, or use --since)"
        )
    if whole and newest is not None:
        newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
        result.cursor = min(newest, options.clock()).isoformat()
    elif not whole:
        result.notes.append("a page was cut off: the checkpoint stays, the next run reads these pages again")
    return result


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


@dataclass
class IdLookup:
    """What the API said about some ids: the papers found, the ids it does not have, and the ids
    it could not be asked about (`error` says why; ask again later)."""

    records: list[PaperRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str = ""


ID_BATCH = 50  # ids per id_list request


def fetch_ids(src: SourceSettings, ids: list[str], now: datetime, options: FetchOptions) -> IdLookup:
    """Look up version-less arXiv ids through the API's `id_list`, `ID_BATCH` at a time, paced and
    retried by the source's policy.  An id the API answers nothing for (or calls malformed) is
    missing; ids of a batch that failed or came back cut off are `failed`, never missing."""
    out = IdLookup()
    url = f"{src.base_url or DEFAULT_BASE_URL}/api/query"
    batches = [ids[i : i + ID_BATCH] for i in range(0, len(ids), ID_BATCH)]
    with Http(policy_for(src), sleep=options.sleep) as http:
        for n, batch in enumerate(batches):
            if out.error:
                out.failed.extend(batch)
                continue
            pending = list(batch)
            while pending:
                try:
                    body = http.get(url, {"id_list": ",".join(pending), "max_results": len(pending)})
                except SourceError as e:
                    out.error = str(e)
                    out.failed.extend(pending)
                    break
                feed = parse_feed(body)
                bad = [
                    str(e.get("id") or "").split("incorrect_id_format_for_", 1)[1]
                    for e in feed.entries
                    if "incorrect_id_format_for_" in str(e.get("id") or "")
                ]
                if bad:  # one malformed id fails the whole request: drop it and ask for the rest
                    named = [i for i in pending if i in bad] or pending[:1]
                    out.missing.extend(named)
                    pending = [i for i in pending if i not in named]
                    continue
                if any("/api/errors" in str(e.get("id") or "") for e in feed.entries):
                    out.error = f"{url}: arXiv rejected the lookup: {feed.entries[0].get('summary', '')[:200]}"
                    out.failed.extend(pending)
                    break
                seen: set[str] = set()
                for entry in feed.entries:
                    try:
                        rec = parse_entry(entry, source="arxiv lookup", now=now)
                    except ValueError:
                        continue  # an empty entry for an id it does not have (an older API answer)
                    if rec.id in pending and rec.id not in seen:
                        seen.add(rec.id)
                        out.records.append(rec)
                unseen = [i for i in pending if i not in seen]
                if feed.cut_off or feed.malformed or not feed.version:
                    out.failed.extend(unseen)  # the answer was broken: ask again next time
                else:
                    out.missing.extend(unseen)
                break
            options.advance(n + 1, len(batches))
    return out
