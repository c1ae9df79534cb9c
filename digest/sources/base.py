"""What every source hands to the store: clean `PaperRecord`s plus a count of what it skipped.

Paper text is untrusted input.  Every field is cleaned here, once, in `PaperRecord.make`, so every
source and every later stage sees the same tidy values: strings are valid Unicode (no lone
surrogates, control, private-use or bidi-override characters, no markup), capped in length; ids and
URLs are single tokens (URLs http or https only); counts are finite whole numbers the store can
hold.  JSON is parsed with a depth limit (`load_json`).  What still cannot be a record raises
ValueError, which the source counts under `FetchResult.skipped` and names in `examples`.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import time
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

MAX_TITLE_CHARS = 500
MAX_ABSTRACT_CHARS = 10_000
MAX_AUTHORS = 100
MAX_AUTHOR_CHARS = 200
MAX_ID_CHARS = 200
MAX_URL_CHARS = 2000
MAX_CATEGORIES = 20
MAX_CATEGORY_CHARS = 50
MAX_COUNT = 2**31 - 1  # fits every store's INTEGER column
MAX_JSON_DEPTH = 64
MAX_EXAMPLES = 5  # locations named per skip reason

_TAG = re.compile(r"<[^>]{0,2000}>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# C0 and C1 controls (tab, newline and carriage return become spaces below), lone surrogates,
# private-use and non-characters, and the invisible bidi/format controls used for spoofing.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\ufdd0-\ufdef\ufff0-\ufffb\ufffe\uffff"
    "\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
    "\U000f0000-\U0010ffff\U000e0000-\U000e007f]"
    "|[\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe\U0003ffff]"
)
_SPACE = re.compile(r"\s+")
_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")
_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$", re.IGNORECASE)


def safe_unicode(value: str) -> str:
    """`value` without the characters no paper text needs and some programs choke on: lone
    surrogates (a title cut mid-emoji, a stray JSON escape), controls, private-use characters,
    non-characters and invisible bidi overrides; NFC-normalised."""
    if value.isascii() and value.isprintable():
        return value
    return unicodedata.normalize("NFC", _UNSAFE.sub("", value))


def clean_text(value: Any, limit: int) -> str:
    """Plain single-spaced text: no tags, no scripts, no unsafe characters, at most `limit` chars.

    A number becomes its digits; anything that is not text (a list, an object) becomes ""."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        value = str(value) if math.isfinite(value) else ""
    if not isinstance(value, str) or not value:
        return ""
    text = _SCRIPT.sub(" ", safe_unicode(value[: limit * 4]))
    text = safe_unicode(html.unescape(_TAG.sub(" ", text)))  # &#xd800; and friends come back out here
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text


def clean_token(value: Any, limit: int) -> str:
    """A single-token value (an id, a category): cleaned text with no spaces, or "" if too long."""
    text = clean_text(value, limit * 2)
    if not text or " " in text or len(text) > limit:
        return ""
    return text


def clean_url(value: Any) -> str:
    """An http(s) URL with a host, or "" (javascript:, data:, relative or overlong addresses)."""
    text = clean_token(value, MAX_URL_CHARS)
    return text if _URL.match(text) else ""


def clean_count(value: Any) -> int:
    """A community count as the store can hold it: a finite number, clamped to 0..MAX_COUNT
    (1e999, NaN, 10**30, "12" or a list all give something sane; non-numbers give 0)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 12:
        value = int(value.strip())
    if isinstance(value, int):
        return max(0, min(value, MAX_COUNT))
    if isinstance(value, float) and math.isfinite(value):
        return max(0, min(int(value), MAX_COUNT))
    return 0


def json_depth_ok(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Does `text` nest arrays and objects at most `limit` deep?  A linear scan that skips strings,
    so a hostile line 100,000 levels deep is refused before the parser recurses into it."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.count("[") + text.count("{") <= limit:
        return True
    depth = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        token = m.group(0)
        if token in "[{":
            depth += 1
            if depth > limit:
                return False
        elif token in "]}":
            depth -= 1
    return True


def load_json(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` with a nesting limit; ValueError (a JSONDecodeError for bad syntax) otherwise."""
    if not json_depth_ok(text, limit):
        raise ValueError(f"JSON nested more than {limit} deep")
    try:
        return json.loads(text)
    except RecursionError as e:  # a parser built without the C scanner recurses sooner
        raise ValueError(f"JSON nested too deep ({e})") from e


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
    m = re.search(
        r"(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/|^arxiv:)([^\s?#]+?)(?:\.pdf)?/?(?:[?#].*)?$", value, re.I
    )
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
    doi: str = ""  # lower case, without a resolver prefix ("10.48550/arxiv.2305.18290")
    code_url: str = ""  # the code repository, where a source knows it (Hugging Face's githubRepo)
    journal_ref: str = ""  # where it was published, where a source says ("NeurIPS 2026")
    version: int = 0  # the arXiv version, 0 when unknown

    @classmethod
    def make(
        cls,
        *,
        title: Any,
        id: Any = None,
        abstract: Any = "",
        authors: Iterable[Any] | None = None,
        url: Any = "",
        pdf_url: Any = "",
        published: datetime | None = None,
        updated: datetime | None = None,
        categories: Iterable[Any] | None = None,
        source: str = "",
        upvotes: Any = 0,
        comments: Any = 0,
        doi: Any = "",
        code_url: Any = "",
        journal_ref: Any = "",
        version: Any = 0,
    ) -> PaperRecord:
        """A record with every field cleaned (see the module docstring); the id falls back to the
        arXiv id in `id`, then to the title's id.  ValueError when no title is left."""
        clean_title = clean_text(title, MAX_TITLE_CHARS)
        if not any(c.isalnum() for c in clean_title):
            raise ValueError("missing title")
        raw_id = clean_token(id, MAX_ID_CHARS)
        pid = arxiv_id(raw_id) or raw_id or title_id(clean_title)
        names = [clean_text(a, MAX_AUTHOR_CHARS) for a in list(authors or [])[: MAX_AUTHORS * 2]]
        tags = [clean_token(c, MAX_CATEGORY_CHARS) for c in list(categories or [])[: MAX_CATEGORIES * 2]]
        return cls(
            id=pid,
            title=clean_title,
            abstract=clean_text(abstract, MAX_ABSTRACT_CHARS),
            authors=[a for a in names if a][:MAX_AUTHORS],
            url=clean_url(url),
            pdf_url=clean_url(pdf_url),
            published=published if isinstance(published, datetime) else None,
            updated=updated if isinstance(updated, datetime) else None,
            categories=list(dict.fromkeys(t for t in tags if t))[:MAX_CATEGORIES],
            source=source,
            upvotes=clean_count(upvotes),
            comments=clean_count(comments),
            doi=clean_doi(doi),
            code_url=clean_url(code_url),
            journal_ref=clean_text(journal_ref, MAX_TITLE_CHARS),
            version=min(clean_count(version), 1000),
        )


_DOI = re.compile(r"10\.\d{4,9}/\S+")


def clean_doi(value: Any) -> str:
    """A DOI as "10.xxxx/suffix", lower case (DOIs are case-insensitive), from a bare DOI, a
    "doi:" one or a resolver URL; "" when there is none."""
    text = clean_text(value, MAX_ID_CHARS * 2) if isinstance(value, str) else ""
    found = _DOI.search(urllib.parse.unquote(text))
    return found.group(0).rstrip(".,;").lower()[:MAX_ID_CHARS] if found else ""


def sane_date(value: datetime | None, now: datetime) -> datetime | None:
    """`value` as aware UTC if it is plausible for a paper (1990 to a day from now), else None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
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
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> where (first few)
    updates: list[PaperRecord] = field(default_factory=list)  # for stored papers only (arXiv replacements)

    def skip(self, reason: str, where: str = "") -> None:
        """Count one skipped entry under `reason`, naming where it was (a line, an id) for the first few."""
        self.skipped[reason] += 1
        if where:
            named = self.examples.setdefault(reason, [])
            if len(named) < MAX_EXAMPLES:
                named.append(where)


def real_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FetchOptions:
    """How a run asks: a start date overriding the checkpoint, the sleep to wait with, a progress
    hook, and the real clock (a run's `now` may be in the future, `--now`; no checkpoint moves past
    the real clock, or the real runs after it would skip what they have not fetched)."""

    since: date | None = None
    sleep: Callable[[float], None] = time.sleep
    progress: Callable[[int, int], None] | None = None  # (pages or days done, total)
    clock: Callable[[], datetime] = real_now
    reader_categories: tuple[str, ...] = ()  # what the readers follow (`sources.wanted_categories`)

    def advance(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)
