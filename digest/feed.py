"""A reader's picks as an Atom feed (RFC 4287): the same papers, reasons and order as their digests.

Researchers ask for a personal feed to read their picks where they read everything else.  The
feed is built from the reader's delivered `deliveries` rows alone (papers, reasons and, when the
ranker wrote them, highlights), newest digest first, over the `FEED_DAYS` days up to the newest
digest, so it changes only when a digest is delivered (mailed, or IN_FEED for a feed-only reader).
Its validator (`validator`: ETag and Last-Modified) therefore comes from one cheap query
(`Store.feed_head`), and a poll that brings it back gets 304 without anything being built
(`not_modified`).

Entries keep the digest's order for readers that sort by date: the digest's delivery time, one
second earlier per rank.  Each entry's `link rel="alternate"` is the paper's own page (never our
server), its `content` HTML from `templates/feed/_entry.html` (autoescaped, then escaped again as
XML text, as type="html" wants), its id a tag: URI (RFC 4151) per reader, day and paper.  The
document is `templates/feed/atom.xml`, autoescaped; characters XML cannot carry are dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote, urlsplit

from jinja2 import Environment

from digest.compose import _view
from digest.db import Delivery, Paper, Subscriber, aware
from digest.db.queue import FeedHead
from digest.deliver import parse_sender
from digest.settings import Settings

FEED_DAYS = 30  # the feed shows the digests of the 30 days up to the newest one
FORMAT = "1"  # part of the ETag: change it when the feed's markup changes, so readers fetch it again
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
MAX_AUTHORS = 20  # <author> elements per entry (the content shows the first six, as the email does)

# Characters XML 1.0 cannot carry at all (the sources drop most of them; reasons and highlights
# are checked here too, so no paper text can make the document ill-formed).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Validator:
    """A feed's HTTP validators: a strong ETag (quoted) and the time its newest digest was delivered."""

    etag: str
    last_modified: datetime | None

    def headers(self) -> dict[str, str]:
        out = {"ETag": self.etag}
        if self.last_modified is not None:
            out["Last-Modified"] = format_datetime(self.last_modified.astimezone(UTC), usegmt=True)
        return out


def validator(subscriber_id: int, head: FeedHead) -> Validator:
    """The validator of a reader's feed, from what it depends on (`FeedHead`), without building it."""
    raw = f"{FORMAT}|{subscriber_id}|{head.delivered}|{head.newest}|{head.changed}|{FEED_DAYS}"
    etag = '"' + hashlib.blake2b(raw.encode(), digest_size=12).hexdigest() + '"'
    changed = head.changed.replace(microsecond=0) if head.changed is not None else None
    return Validator(etag, changed)


def not_modified(current: Validator, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Does a conditional GET already hold this feed (RFC 9110 13.1)?  If-None-Match, when sent,
    decides alone (weak comparison, "*" or a list); else If-Modified-Since, to the second."""
    if if_none_match is not None:
        tags = [t.strip() for t in if_none_match.split(",")]
        return any(t == "*" or t.removeprefix("W/") == current.etag for t in tags)
    if if_modified_since is None or current.last_modified is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False  # not an HTTP-date: ignored, as RFC 9110 says
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return current.last_modified <= since


def window_start(head: FeedHead) -> date | None:
    """The oldest digest date the feed shows (None: the reader has no delivered digest yet)."""
    return head.newest - timedelta(days=FEED_DAYS - 1) if head.newest is not None else None


def _text(value: str) -> str:
    return _NOT_XML.sub("", value)


def _tag_authority(settings: Settings) -> str:
    return urlsplit(settings.web.base_url).hostname or "localhost"


def entry_id(settings: Settings, sub: Subscriber, day: date, paper_id: str) -> str:
    """A stable, unique id for one pick: tag:HOST,READER-SINCE:feed/READER/DAY/PAPER (RFC 4151)."""
    since = aware(sub.created).date().isoformat()
    return f"tag:{_tag_authority(settings)},{since}:feed/{sub.id}/{day.isoformat()}/{quote(paper_id, safe=':@-._~')}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_feed(
    settings: Settings,
    env: Environment,
    sub: Subscriber,
    head: FeedHead,
    rows: Sequence[Delivery],
    papers: Mapping[str, Paper],
    *,
    self_url: str,
) -> bytes:
    """The Atom document (UTF-8 bytes) of `rows` (the reader's delivered digests, newest first),
    from `templates/feed/atom.xml`: one render for the whole feed (a render per entry, or an
    ElementTree, cost twice as much for a 300-entry feed)."""
    entries = []
    for row in rows:
        moment = aware(row.sent_at) or aware(row.created)
        reasons, highlights = list(row.reasons or []), list(row.highlights or [])
        rank = 0
        for i, pid in enumerate(row.papers):
            paper = papers.get(pid)
            if paper is None:
                continue
            rank += 1
            view = _view(paper, settings, reason=reasons[i] if i < len(reasons) else "")
            if not view.title:
                view.title = pid
            entries.append(
                {
                    "id": entry_id(settings, sub, row.digest_date, pid),
                    "p": view,
                    "updated": _stamp(moment - timedelta(seconds=rank - 1)),
                    "authors": [a.strip() for a in paper.authors[:MAX_AUTHORS] if a.strip()],
                    "categories": [c.strip() for c in paper.categories if c.strip()],
                    "highlight": highlights[i] if i < len(highlights) else "",
                    "day": row.digest_date.isoformat(),
                    "rank": rank,
                }
            )
    since = aware(sub.created).date().isoformat()
    document = env.get_template("feed/atom.xml").render(
        feed_id=f"tag:{_tag_authority(settings)},{since}:feed/{sub.id}",
        title=f"Paper picks for {sub.name}" if sub.name else "Your paper picks",
        subtitle=f"The papers of your digests, in their order, newest digest first (last {FEED_DAYS} days)",
        updated=_stamp(head.changed or aware(sub.created)),
        author=parse_sender(settings.smtp.sender).display_name or "Paper digest",
        self_url=self_url,
        entries=entries,
    )
    return _text(document).encode("utf-8")
