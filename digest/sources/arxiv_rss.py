"""arXiv's daily announcement: each category's RSS listing, as arXiv announces it.

`GET {base_url}/rss/<category>` (https://rss.arxiv.org by default) answers an RSS 2.0 channel
whose `pubDate` is the announcement day and whose items carry `guid` "oai:arXiv.org:2508.13426v1",
`arxiv:announce_type` (new, cross, replace, replace-cross), `dc:creator` (the authors, comma
separated), `category` tags, an optional `arxiv:DOI` / `arxiv:journal_reference`, and a
`description` that starts "arXiv:2508.13426v1 Announce Type: new Abstract: ...".

New papers and cross-lists are today's papers (a cross-list is new to the category it is listed
in; its categories come whole with it).  Replacements only update a paper we already have: they
go in `FetchResult.updates`, which the store applies to stored papers alone, so an old paper's
new version is never sent as new.  On weekends and arXiv holidays the feed is valid but empty:
"arXiv announced nothing on Saturday 2026-12-05" is a note, and the checkpoint records it (for
`digest status`), distinct from a failed fetch, which raises or sets `error`.

The checkpoint is JSON: the last announcement day read and how many entries it had.  Every run
reads the current listing again (it changes once a day; re-reading changes nothing).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from digest.errors import SourceError
from digest.settings import SourceSettings
from digest.sources.arxiv import parse_feed
from digest.sources.base import FetchOptions, FetchResult, PaperRecord, arxiv_id, sane_date
from digest.sources.http import Http, policy_for

DEFAULT_BASE_URL = "https://rss.arxiv.org"
NEW_TYPES = frozenset({"new", "cross"})
UPDATE_TYPES = frozenset({"replace", "replace-cross"})


def feed_categories(src: SourceSettings) -> list[str]:
    """The categories whose listings this source reads, each once (`sources.wanted_categories`
    has already added the readers' to the first source of the kind)."""
    return list(dict.fromkeys(src.categories))


def _day(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    try:
        return parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None


def _abstract(description: str) -> str:
    """The abstract without arXiv's "arXiv:... Announce Type: ... Abstract:" preamble."""
    head, sep, rest = description.partition("Abstract:")
    return rest if sep and "Announce Type" in head else description


def parse_item(item: Any, *, source: str, now: datetime) -> tuple[PaperRecord, str]:
    """One listing item as (record, announce type); ValueError names why it cannot be one."""
    raw_id = str(item.get("id") or item.get("guid") or "")
    token = raw_id.removeprefix("oai:arXiv.org:").strip()
    pid = arxiv_id(token)
    if not pid:
        raise ValueError("missing or unknown arXiv id")
    kind = str(item.get("arxiv_announce_type") or "").strip().lower()
    if kind not in NEW_TYPES | UPDATE_TYPES:
        raise ValueError("unknown announce type")
    version = token.rsplit("v", 1)[1] if token != pid and "v" in token else 0
    announced = sane_date(_day(item.get("published")), now)
    creators = str(item.get("dc_creator") or item.get("author") or "")
    record = PaperRecord.make(
        id=pid,
        title=str(item.get("title") or ""),
        abstract=_abstract(str(item.get("summary") or "")),
        authors=[a.strip() for a in creators.split(",")],
        categories=[str(t.get("term")) for t in item.get("tags") or [] if t.get("term")][:20],
        url=str(item.get("link") or "") or f"https://arxiv.org/abs/{pid}",
        pdf_url=f"https://arxiv.org/pdf/{pid}",
        # A replacement's date is the day of the update, not of the paper: it never becomes `published`.
        published=announced if kind in NEW_TYPES else None,
        updated=announced,
        source=source,
        doi=item.get("arxiv_doi") or "",
        journal_ref=item.get("arxiv_journal_reference") or "",
        version=version,
    )
    return record, kind


def announced_nothing(day: date) -> str:
    return f"arXiv announced nothing on {day:%A %Y-%m-%d}"


def status_line(cursor: str | None) -> str:
    """What the checkpoint says about the last announcement read, for `digest status`."""
    try:
        saved = json.loads(cursor or "")
        day = date.fromisoformat(saved["announced"])
        entries = int(saved["entries"])
    except (ValueError, KeyError, TypeError):
        return "no announcement read yet"
    return announced_nothing(day) if entries == 0 else f"{entries} entries announced on {day:%A %Y-%m-%d}"


def fetch_arxiv_rss(src: SourceSettings, cursor: str | None, now: datetime, options: FetchOptions) -> FetchResult:
    """Today's listing of every category; see the module docstring."""
    result = FetchResult(src.label, cursor=cursor)
    base = src.base_url or DEFAULT_BASE_URL
    categories = feed_categories(src)
    found: dict[str, PaperRecord] = {}
    updates: dict[str, PaperRecord] = {}
    days: list[date] = []
    read = 0
    entries = 0
    quiet: list[str] = []  # categories whose listing was empty
    failure: SourceError | None = None
    with Http(policy_for(src), sleep=options.sleep) as http:
        for i, category in enumerate(categories):
            options.advance(i, len(categories))
            url = f"{base}/rss/{category}"
            try:
                body = http.get(url)
            except SourceError as e:
                failure = failure or e
                continue
            feed = parse_feed(body, item="item")
            if not feed.version.startswith("rss") or feed.cut_off:
                failure = failure or SourceError(
                    f"{url}: the answer is not a whole RSS listing (cut off, or another page)"
                )
                if not feed.entries:
                    continue
            read += 1
            day = sane_date(_day(feed.feed.get("published")), now)
            if day is not None:
                days.append(day.date())
            for where in feed.malformed:
                result.skip("malformed entry", f"{category} {where}"[:80])
            entries += len(feed.entries) + len(feed.malformed)
            if not feed.entries and not feed.malformed:
                quiet.append(category)
            for item in feed.entries:
                try:
                    rec, kind = parse_item(item, source=src.label, now=now)
                except ValueError as e:
                    result.skip(str(e), f"{category} {str(item.get('id') or '')[:60]}")
                    continue
                target = found if kind in NEW_TYPES else updates
                if rec.id in found and target is updates:
                    continue  # new in one category, replaced in another: it is new
                if rec.id in updates and target is found:
                    updates.pop(rec.id)
                old = target.get(rec.id)
                if old is not None:
                    rec.categories = list(dict.fromkeys(old.categories + rec.categories))[:20]
                target[rec.id] = rec
        else:
            options.advance(len(categories), len(categories))
    if failure is not None and read == 0:
        raise failure  # no listing could be read: nothing to save
    if failure is not None:
        result.error = str(failure)
    result.records = list(found.values())
    result.updates = list(updates.values())
    announced = max(days, default=min(now, options.clock()).date())
    if failure is None and entries == 0:  # every listing read, and all were empty: not a failure
        result.notes.append(announced_nothing(announced))
    elif quiet and entries:
        result.notes.append(f"nothing announced in {', '.join(quiet)}")
    if failure is None:
        result.cursor = json.dumps({"announced": announced.isoformat(), "entries": entries})
    return result
