"""What every source hands to the store: clean `PaperRecord`s plus a count of what it skipped.

Paper text is untrusted input.  `clean_text` strips markup and control characters and caps absurd
lengths here, once, so every source and every later stage sees the same tidy strings.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

MAX_TITLE_CHARS = 500
MAX_ABSTRACT_CHARS = 10_000
MAX_AUTHORS = 100

_TAG = re.compile(r"<[^>]{0,2000}>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACE = re.compile(r"\s+")
_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")


def clean_text(value: str | None, limit: int) -> str:
    """Plain single-spaced text: no tags, no scripts, no control characters, at most `limit` chars."""
    if not value:
        return ""
    text = _SCRIPT.sub(" ", value[: limit * 4])
    text = html.unescape(_TAG.sub(" ", text))
    text = _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text


def title_key(title: str) -> str:
    """A title reduced to what identifies it: case, accents, punctuation and spacing ignored."""
    text = unicodedata.normalize("NFKD", title).casefold()
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.findall(r"\w+", text))


def title_id(title: str) -> str:
    """A stable id for a paper known only by its title (saved pages, files without ids)."""
    return "t-" + hashlib.blake2b(title_key(title).encode(), digest_size=8).hexdigest()


def arxiv_id(value: str) -> str | None:
    """The version-less arXiv id in an id or an arXiv / Hugging Face URL, or None."""
    value = value.strip()
    m = re.search(r"(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/|^arxiv:)([^\s?#]+?)(?:\.pdf)?/?(?:[?#].*)?$", value, re.I)
    candidate = m.group(1) if m else value
    if _ARXIV_ID.match(candidate):
        return re.sub(r"v\d+$", "", candidate)
    return None


@dataclass
class PaperRecord:
    """One paper as a source saw it, cleaned; `id` is the arXiv id when there is one."""

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    url: str = ""
    pdf_url: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    categories: list[str] = field(default_factory=list)
    source: str = ""
    upvotes: int = 0
    comments: int = 0

    @classmethod
    def make(cls, *, title: str, id: str | None = None, abstract: str | None = "", **rest) -> PaperRecord:
        """A cleaned record; the id falls back to the arXiv id in `id`, then to the title's id."""
        clean_title = clean_text(title, MAX_TITLE_CHARS)
        if not clean_title:
            raise ValueError("missing title")
        raw_id = (id or "").strip()
        pid = arxiv_id(raw_id) or raw_id[:200] or title_id(clean_title)
        authors = [clean_text(a, 200) for a in (rest.pop("authors", None) or [])][:MAX_AUTHORS]
        return cls(
            id=pid,
            title=clean_title,
            abstract=clean_text(abstract, MAX_ABSTRACT_CHARS),
            authors=[a for a in authors if a],
            **rest,
        )


def sane_date(value: datetime | None, now: datetime) -> datetime | None:
    """`value` as aware UTC if it is plausible for a paper (1990 to a day from now), else None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    if value.year < 1990 or value > now + timedelta(days=1):
        return None
    return value


@dataclass
class FetchResult:
    """What one source produced in one run: records, skipped entries by reason, and a checkpoint.

    `error` set means the source failed part way: `records` are good and `cursor` marks only what
    was fully fetched (the old cursor when nothing was), so the next run resumes there.
    """

    source: str
    records: list[PaperRecord] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    cursor: str | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class FetchOptions:
    """How a run asks: a start date overriding the checkpoint, the sleep to wait with, a progress hook."""

    since: date | None = None
    sleep: Callable[[float], None] = time.sleep
    progress: Callable[[int, int], None] | None = None  # (pages or days done, total)

    def advance(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)
