"""The one settings schema: every setting's name, type, default and help, validated on load.

The preferences file is TOML.  Subscribers are listed inline as `[[subscribers]]` or one file per
subscriber in `subscribers_dir`.  Secrets never live in a file: they come from the environment
(`DIGEST_SMTP_USERNAME`, `DIGEST_SMTP_PASSWORD`, `DIGEST_SECRET_KEY`).  A file that does not fit the
schema raises `ConfigError` naming the file, the field and the problem.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from collections.abc import Mapping
from datetime import time
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from digest.errors import ConfigError

ENV_DATA_DIR = "DIGEST_DATA_DIR"
ENV_SMTP_USERNAME = "DIGEST_SMTP_USERNAME"
ENV_SMTP_PASSWORD = "DIGEST_SMTP_PASSWORD"
ENV_SECRET_KEY = "DIGEST_SECRET_KEY"
ENV_CONFIG = "DIGEST_CONFIG"

_HEADER_UNSAFE = re.compile(r"[\r\n\x00]")
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")
_ADDRESS_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_SEND_AT = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")  # ASCII digits: \d takes any script's
MAX_EMAIL = 254  # RFC 5321's limit on a forward path
MAX_ZONE = 64
MAX_ENTRY = 1000  # characters in one liked entry or keyword


def _no_newlines(value: str) -> str:
    if _HEADER_UNSAFE.search(value):
        raise ValueError("must be a single line (no newline characters)")
    return value


SUBJECT_FIELDS = {"date": "Mon 23 Nov 2026", "count": 10}  # what a digest's subject may name, with examples


def check_template(value: str, fields: Mapping[str, object]) -> str:
    """A str.format template that names only `fields` (no attributes, indexes or conversions
    beyond !s and !r) and formats; else ValueError saying which placeholder is wrong."""
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as e:  # a lone "{" or "}"
        raise ValueError(f"{e} (write {{{{ and }}}} for literal braces)") from e
    known = ", ".join("{" + name + "}" for name in fields)
    for _, name, _spec, conversion in parts:
        if name is None:
            continue
        if name not in fields:
            raise ValueError(f"unknown placeholder {{{name}}}; use {known}")
        if conversion not in (None, "s", "r"):
            raise ValueError(f"placeholder {{{name}!{conversion}}}: unknown conversion !{conversion} (use !s or !r)")
    try:
        value.format(**fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"does not format: {e}") from e
    return value


def check_email(value: str, *, utf8: bool = False) -> str:
    """`value` as delivery will use it (trimmed, lower case), or ValueError saying what is wrong.

    No control or invisible characters; a non-ASCII address only when the mail server takes
    SMTPUTF8 (`smtp.smtputf8`), since without it the message can never be handed over."""
    value = value.strip()
    if len(value) > MAX_EMAIL:
        raise ValueError(f"an email address is at most {MAX_EMAIL} characters")
    if _ADDRESS_CONTROL.search(value):
        raise ValueError("an email address cannot contain control or invisible characters")
    if not _EMAIL.match(value) or len(value.rsplit("@", 1)[0]) > 64:
        raise ValueError(f"{value!r} is not an email address")
    if not utf8 and not value.isascii():
        raise ValueError(
            f"{value!r} has non-ASCII characters, which this digest's mail server cannot deliver to "
            "(set smtp.smtputf8 = true if it offers SMTPUTF8)"
        )
    return value.lower()


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(value: str) -> str:
    """An IANA time-zone name this machine knows, or ValueError (a folder such as "Europe",
    a path or an overlong name included, which ZoneInfo would answer with an OSError)."""
    value = value.strip()
    if len(value) > MAX_ZONE or (value not in _zones() and value != "UTC"):
        shown = value if len(value) <= MAX_ZONE else value[:MAX_ZONE] + "…"
        raise ValueError(f"unknown time zone {shown!r} (use an IANA name such as Europe/Berlin)")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = Field(
        "sqlite:///{data_dir}/digest.db",
        description="SQLAlchemy database URL; {data_dir} is replaced by data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host/dbname (password via the URL's environment, not this file).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_database_url(value.replace("{data_dir}", "/data"))
        return value


def check_database_url(url: str, *, folder: bool = False) -> str:
    """A database URL the store can open: SQLite or PostgreSQL, its driver installed, a SQLite
    file whose folder exists or can be made.  ValueError says what is wrong and what to write."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise ValueError(
            f"{url!r} is not a database URL (e.g. sqlite:///{{data_dir}}/digest.db or "
            "postgresql+psycopg://user@host/dbname)"
        ) from e
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"{url!r}: the database must be sqlite or postgresql, not {backend!r}")
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as e:
        hint = " (pip install 'digest[postgres]' and use postgresql+psycopg://)" if backend == "postgresql" else ""
        raise ValueError(f"{url!r}: no database driver {parsed.drivername!r} is installed{hint}") from e
    if folder and backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        check_folder(Path(parsed.database).expanduser().parent, "the SQLite file's folder")
    return url


def check_folder(path: Path, what: str) -> Path:
    """A folder that exists, or that could be made: its nearest existing ancestor is a folder we may
    write to.  ValueError otherwise (a path under a file, a read-only or missing place)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{what} {path} cannot exist: {probe} is a file, not a folder")
    if probe != path and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} cannot be made: {probe} is not writable")
    return path


class SmtpSettings(_Section):
    host: str = Field("localhost", description="SMTP server host name.")
    port: int = Field(25, ge=1, le=65535, description="SMTP server port (25, 587 for STARTTLS, 465 for SSL).")
    sender: str = Field(
        "Paper digest <digest@localhost>",
        description="From: header, 'Name <address>' or a bare address.",
    )
    starttls: bool = Field(
        False,
        description="Upgrade the connection with STARTTLS before sending.  The server's certificate is always "
        "checked against the system's CAs (a private CA: point SSL_CERT_FILE at its PEM file).",
    )
    ssl: bool = Field(False, description="Connect with implicit TLS (SMTPS, usually port 465).")
    smtputf8: bool = Field(
        False,
        description="The server offers SMTPUTF8, so addresses may have non-ASCII characters (user@bücher.example); "
        "without it such addresses are refused when read, since no message could reach them.",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for the SMTP server before giving up.")

    _single_line = field_validator("host", "sender")(_no_newlines)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        from email.utils import parseaddr

        _, address = parseaddr(value)
        if "@" not in address or any(c.isspace() for c in address):
            raise ValueError(f"{value!r} has no email address (write 'Name <address>' or a bare address)")
        if _ADDRESS_CONTROL.search(value):
            raise ValueError("cannot contain control or invisible characters")
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpSettings:
        if self.starttls and self.ssl:
            raise ValueError("choose one of starttls and ssl, not both")
        return self


class DeliverySettings(_Section):
    method: Literal["smtp", "outbox"] = Field(
        "smtp", description='"smtp" sends through [smtp]; "outbox" writes .eml files to outbox_dir instead.'
    )
    outbox_dir: str = Field(
        "{data_dir}/outbox", description='Folder for .eml files when method = "outbox"; {data_dir} is replaced.'
    )
    subject: str = Field(
        "Your paper digest for {date}",
        description="Subject line; {date} is the subscriber's local date, {count} the number of papers.",
    )
    max_attempts: int = Field(
        5, ge=1, le=50, description="Delivery attempts for one digest before it is marked failed."
    )
    on_empty: Literal["skip", "send"] = Field(
        "skip",
        description='With no new papers for a reader: "skip" sends nothing (the run report says why), '
        '"send" sends a short digest saying there were none.',
    )
    retry_after_minutes: float = Field(
        10.0,
        ge=0,
        le=1440,
        description="After a run could not deliver a digest (server down, 4xx), wait this long before the next "
        "run retries it; doubled after each failed run.",
    )
    attempts_per_run: int = Field(
        3, ge=1, le=10, description="Tries of one message within a run (transient errors), with backoff and jitter."
    )
    retry_backoff: float = Field(
        1.0, ge=0, le=60, description="Seconds before the second try within a run; doubled for each further try."
    )
    max_per_second: float = Field(
        0.0, ge=0, le=10000, description="At most this many messages per second leave (0 for no limit)."
    )

    _single_line = field_validator("subject")(_no_newlines)

    @field_validator("subject")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        return check_template(value, SUBJECT_FIELDS)


class WebSettings(_Section):
    base_url: str = Field(
        "",
        description="Public address of `digest serve`, reachable by readers; empty (no web front): emails carry "
        "plain paper links, no click tracking or More/Fewer buttons, and unsubscribe by email.",
    )
    subscribe_limit: int = Field(
        5, ge=1, le=10_000, description="Sign-up attempts allowed per client IP address in 10 minutes."
    )
    link_limit: int = Field(
        60,
        ge=1,
        le=100_000,
        description="Uses of signed links (feedback, unsubscribe, preferences, feed polls) per client IP per minute.",
    )
    allow_signups: bool = Field(True, description="Show the subscribe page; false serves only the links in emails.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value:
            return value
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must start with http:// or https:// and name a host")
        return value.rstrip("/")


class ScheduleSettings(_Section):
    catch_up_hours: float = Field(
        12.0,
        ge=0.25,
        le=48,
        description="A digest not sent at its time (process down, server down) still goes out within this many "
        "hours of it, once; later, that day's digest is skipped.",
    )
    reload_minutes: float = Field(
        5.0,
        gt=0,
        le=1440,
        description="`digest run` re-reads this file this often and follows its new, changed or "
        "removed subscribers (web sign-ups are seen within a minute).",
    )
    lease_seconds: int = Field(
        120,
        ge=5,
        le=86400,
        description="A daily run holds a database lease (renewed while it works) so only one runs at a time; "
        "a crashed run's lease lapses after this long.",
    )


class RankingSettings(_Section):
    ranker: Literal["hybrid", "content", "collaborative", "trending", "popularity", "random", "svm"] = Field(
        "hybrid",
        description="Ranker for the personal picks: hybrid (content + collaborative + trending), content, "
        "collaborative, trending or popularity.",
    )
    diversity: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Maximal marginal relevance trade-off for the picks: 1 ranks by score alone, lower values "
        "push near-duplicates of a paper already picked further down.",
    )
    window_days: int = Field(
        7, ge=1, le=365, description="Only papers published or first seen within this many days are candidates."
    )
    refit_days: float = Field(
        7.0,
        ge=0.0,
        le=365.0,
        description="Refit the ranker from scratch when its saved fit (in <data_dir>/models) is this many days old; "
        "between refits each run folds the day's new papers, readers and likes into it. 0 refits every run.",
    )
    processes: int = Field(
        0,
        ge=0,
        le=256,
        description="Processes that rank readers in parallel in the planner (digest worker --plan), for more than "
        "1,024 readers; 0 means one per CPU core.",
    )
    abstract_chars: int = Field(420, ge=80, le=5000, description="Abstracts are trimmed to about this many characters.")
    min_score: float | Literal["auto"] = Field(
        "auto",
        description="The relevance floor of the daily digest: a candidate whose score (the one that decides the "
        "order: the hybrid's weighted mean of its parts' per-reader z-scores, the content ranker's cosine) is below this is not picked, so a "
        "thin day sends fewer papers, or none (then delivery.on_empty applies), rather than off-topic filler. "
        '"auto": the ranker\'s measured floor (hybrid 0.5, content 0.03; the others none); -1e9 turns it off.',
    )
    find_interests: bool = Field(
        True,
        description="Look for a reader's interests in their liked papers when they name no topics (10 or more "
        "likes in 2-5 clear clusters: a digest section each); false: only named topics give sections.",
    )
    embeddings: Literal["minilm", "minilm-torch", "none"] = Field(
        "minilm",
        description='Sentence embeddings of the papers for the hybrid ranker: "minilm" (all-MiniLM-L6-v2, built in: '
        'onnxruntime, int8, no torch), "minilm-torch" (the same model in full precision; needs the optional extra: '
        "pip install 'digest[embeddings]', about 1.4 GB more), \"none\" (TF-IDF only: weaker picks). Vectors are "
        'cached in <data_dir>/cache/embeddings. true and false (the old form) mean "minilm" and "none".',
    )

    @field_validator("embeddings", mode="before")
    @classmethod
    def _embeddings_bool(cls, value: object) -> object:
        if isinstance(value, bool):  # the setting was a switch before the model was built in
            return "minilm" if value else "none"
        return value


class SourceSettings(_Section):
    kind: Literal["sample", "jsonl", "listing", "arxiv", "arxiv_rss", "hf_daily"] = Field(
        description='Where papers come from: "sample" (the bundled sample corpus), '
        '"jsonl" (a file of {"id","title","abstract",...} lines), "listing" (saved listing pages: title line, abstract line), '
        '"arxiv" (the arXiv API, new papers in `categories`, also for backfill), '
        '"arxiv_rss" (arXiv\'s daily announcement of `categories`, new and cross-listed papers; replacements update), '
        '"hf_daily" (Hugging Face Daily Papers, with upvotes).'
    )
    name: str = Field("", description="A name for progress and reports; defaults to the kind.")
    path: str = Field(
        "", description="File for jsonl; file or folder of .txt pages for listing (relative to this config file)."
    )
    categories: list[str] = Field(
        default_factory=list,
        description='arxiv / arxiv_rss: the categories to follow, e.g. ["cs.LG", "cs.CV"]; the first source of each '
        "kind also fetches every reader's categories, so it may leave this empty when the readers list theirs.",
    )
    base_url: str = Field(
        "",
        description="arxiv / arxiv_rss / hf_daily: the API's address; empty means https://export.arxiv.org, "
        "https://rss.arxiv.org or https://huggingface.co (set it for a mirror or a test server; an arxiv_rss "
        "server set here also answers the id lookups of liked papers, /api/query).",
    )
    page_size: int = Field(100, ge=1, le=2000, description="arxiv: papers asked for per request (max_results).")
    max_pages: int = Field(
        10, ge=1, le=1000, description="arxiv: at most this many pages per run; older papers wait for --since."
    )
    max_days: int = Field(
        7, ge=1, le=365, description="arxiv / hf_daily: on the first run (no checkpoint yet) look back this many days."
    )
    request_delay: float = Field(
        3.0, ge=0, le=600, description="arxiv / hf_daily: seconds between two requests (arXiv asks for 3)."
    )
    timeout: float = Field(30.0, gt=0, le=600, description="arxiv / hf_daily: seconds to wait for one answer.")
    max_attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="arxiv / hf_daily: tries per request on timeouts, 429 and 5xx before the source fails.",
    )
    backoff: float = Field(
        2.0,
        ge=0,
        le=600,
        description="arxiv / hf_daily: seconds before the first retry, doubled after each (Retry-After wins).",
    )
    max_wait: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="arxiv / hf_daily: the longest single wait between retries, Retry-After included.",
    )
    contact_email: str = Field(
        "", description="arxiv / hf_daily: an address put in our User-Agent so the API's operators can reach you."
    )

    _single_line = field_validator("contact_email", "base_url")(_no_newlines)

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must start with http:// or https:// and name a host")
        return value.rstrip("/")

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        return check_categories(value)

    @model_validator(mode="after")
    def _needs_per_kind(self) -> SourceSettings:
        if self.kind in ("jsonl", "listing") and not self.path:
            raise ValueError(f'a source of kind "{self.kind}" needs a path')
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


def check_categories(value: list[str]) -> list[str]:
    """arXiv-category-like tokens (cs.LG, math.ST, hep-th), stripped, repeats dropped."""
    cleaned = [v.strip() for v in value]
    bad = [v for v in cleaned if not re.match(r"^[A-Za-z-]+(\.[A-Za-z-]+)?$", v)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not an arXiv category such as cs.LG")
    return list(dict.fromkeys(cleaned))


class DeliveryMode(StrEnum):
    """How a reader takes their digest (`[[subscribers]] delivery`, `subscribers.delivery`): by
    email, only in their Atom feed (ranked and recorded, never mailed), or both.  The feed is served
    by the web front, so "feed" and "both" need `[web] base_url`."""

    EMAIL = "email"
    FEED = "feed"
    BOTH = "both"


def mails(delivery: str) -> bool:
    """Does a reader with this `delivery` get the digest by email? (Only "feed" does not.)"""
    return delivery != DeliveryMode.FEED


MAX_TOPICS = 8  # named interests per reader (each a short section of the digest)
MAX_AUTHORS = 50  # followed authors per reader
_ORCID = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")


def _clean_entries(value: list[str]) -> list[str]:
    """Entries stripped; blank, control characters or over-long entries refused."""
    cleaned = [v.strip() for v in value]
    if any(not v for v in cleaned):
        raise ValueError("entries must not be empty")
    if any(_ADDRESS_CONTROL.search(v) for v in cleaned):
        raise ValueError("entries cannot contain control or invisible characters")
    if any(len(v) > MAX_ENTRY for v in cleaned):
        raise ValueError(f"entries are at most {MAX_ENTRY} characters each")
    return cleaned


class TopicSettings(_Section):
    name: str = Field(description="The interest's name, the title of its section in the digest.")
    keywords: list[str] = Field(default_factory=list, description="Words and phrases of this interest.")
    liked: list[str] = Field(
        default_factory=list,
        description="Papers of this interest (arXiv ids, URLs or exact titles, as in liked); they count as likes too.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = _no_newlines(value).strip()
        if not value:
            raise ValueError("a topic needs a name")
        if len(value) > 80 or _ADDRESS_CONTROL.search(value):
            raise ValueError("a topic's name is one line of at most 80 characters")
        return value

    @field_validator("keywords", "liked")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        return _clean_entries(value)

    @model_validator(mode="after")
    def _something(self) -> TopicSettings:
        if not self.keywords and not self.liked:
            raise ValueError(f"topic {self.name!r} needs keywords or liked papers to rank by")
        return self


def check_author(value: str) -> str:
    """A followed author: a name of at least two words ("Yoshua Bengio", "Y. Bengio", "Bengio, Yoshua")
    or an ORCID iD (0000-0002-1825-0097, with or without https://orcid.org/)."""
    value = " ".join(value.split())
    bare = value.removeprefix("https://orcid.org/").removeprefix("orcid.org/")
    if _ORCID.match(bare.upper()):
        return bare.upper()
    if len(value.replace(",", " ").split()) < 2 or not any(c.isalpha() for c in value):
        raise ValueError(f'{value!r} is not a full name (given and family name, e.g. "Yoshua Bengio") or an ORCID iD')
    return value


class SubscriberSettings(_Section):
    email: str = Field(description="Where the digest goes.")
    name: str = Field("", description="How the digest greets the reader.")
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Berlin.")
    send_at: str = Field("07:30", description='Local time to send the digest, "HH:MM" (24h).')
    frequency: Literal["daily", "weekdays", "weekly"] = Field(
        "daily",
        description='"daily", "weekdays" (Monday to Friday) or "weekly" (on weekly_day, covering the whole week).',
    )
    weekly_day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        "monday", description='The day a "weekly" digest goes out.'
    )
    max_papers: int = Field(10, ge=1, le=100, description="Personal picks per digest.")
    delivery: DeliveryMode = Field(
        DeliveryMode.EMAIL,
        description='"email", "feed" (only in your Atom feed: ranked and recorded, never mailed) or "both"; '
        "the feed needs [web] base_url.",
    )
    liked: list[str] = Field(
        default_factory=list,
        description="Papers you liked: arXiv ids (2106.09685), arXiv or Hugging Face paper URLs, or exact titles.",
    )
    library: list[str] = Field(
        default_factory=list,
        description="Your reference library as liked papers: BibTeX, RIS or CSL-JSON exports (Zotero, Mendeley, "
        "JabRef), relative to this file; re-read when a file changes.",
    )
    keywords: list[str] = Field(default_factory=list, description="Topics you care about; they pull papers up.")
    exclude_keywords: list[str] = Field(
        default_factory=list, description="Papers whose title or abstract contains any of these are never sent."
    )
    categories: list[str] = Field(
        default_factory=list,
        description='Only papers in at least one of these arXiv categories (cross-lists count), e.g. ["cs.CL"]; '
        "empty: papers of every category. The arxiv sources fetch the union of every reader's categories.",
    )
    topics: list[TopicSettings] = Field(
        default_factory=list,
        description="Named interests, each a short section of the digest ranked for it, sharing max_papers; "
        "none: found by clustering your liked papers when there are enough of them.",
    )
    authors: list[str] = Field(
        default_factory=list,
        description='Authors you follow, by full name or ORCID iD: their new papers lead the digest ("From authors '
        'you follow"). Names are matched normalised ("Y. Bengio" = "Yoshua Bengio" when no other followed name fits, '
        "a different first name never); two people of one name are confused, and our sources rarely give ORCID iDs.",
    )

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[TopicSettings]) -> list[TopicSettings]:
        if len(value) > MAX_TOPICS:
            raise ValueError(f"at most {MAX_TOPICS} topics")
        names = [t.name.casefold() for t in value]
        if len(set(names)) < len(names):
            raise ValueError("each topic needs its own name")
        return value

    @field_validator("authors")
    @classmethod
    def _authors(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_AUTHORS:
            raise ValueError(f"at most {MAX_AUTHORS} authors")
        return list(dict.fromkeys(check_author(v) for v in _clean_entries(value)))

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        return check_categories(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value, utf8=True)  # non-ASCII is checked against smtp.smtputf8 by Settings

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if _ADDRESS_CONTROL.search(_no_newlines(value)):
            raise ValueError("cannot contain control or invisible characters")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str) -> str:
        if not _SEND_AT.match(value):
            raise ValueError(f'{value!r} is not a time of day as "HH:MM" (24h), e.g. "07:30"')
        return value

    @field_validator("delivery", mode="before")
    @classmethod
    def _delivery(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in tuple(DeliveryMode):
            return value.strip().lower()
        if isinstance(value, str):
            raise ValueError(f'{value!r} is not a delivery; use "email", "feed" (the Atom feed only) or "both"')
        return value

    @field_validator("frequency", "weekly_day", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("liked", "library", "keywords", "exclude_keywords")
    @classmethod
    def _no_blank(cls, value: list[str]) -> list[str]:
        return _clean_entries(value)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def send_time(self) -> time:
        hour, minute = self.send_at.split(":")
        return time(int(hour), int(minute))


class Settings(_Section):
    data_dir: str = Field(
        "",
        description="Folder for the database, outbox and keys; empty means $DIGEST_DATA_DIR or the user data folder.",
    )
    subscribers_dir: str = Field(
        "", description="Folder of one-subscriber TOML files (relative to this config file); empty for none."
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="Where the store lives.")
    smtp: SmtpSettings = Field(default_factory=SmtpSettings, description="Outgoing mail server.")
    delivery: DeliverySettings = Field(default_factory=DeliverySettings, description="How digests leave.")
    web: WebSettings = Field(default_factory=WebSettings, description="The web front for links in emails.")
    ranking: RankingSettings = Field(default_factory=RankingSettings, description="How papers are picked.")
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings, description="When and how runs happen.")
    sources: list[SourceSettings] = Field(default_factory=list, description="Where papers come from.")
    subscribers: list[SubscriberSettings] = Field(default_factory=list, description="Who gets a digest.")

    # Filled by the loader, never from a file.
    config_path: Path | None = Field(None, exclude=True)
    smtp_username: SecretStr | None = Field(None, exclude=True)
    smtp_password: SecretStr | None = Field(None, exclude=True)
    secret_key: SecretStr | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _categories_to_fetch(self) -> Settings:
        """A category source (arxiv, arxiv_rss) fetches its own categories and, the first of its
        kind, the readers' too; one with none of its own needs a reader who has some."""
        readers = any(sub.categories for sub in self.subscribers)
        for i, src in enumerate(self.sources):
            if src.kind in ("arxiv", "arxiv_rss") and not src.categories and not readers:
                raise ValueError(
                    f'sources[{i}].categories: a source of kind "{src.kind}" needs categories, on the source '
                    '(e.g. categories = ["cs.LG"]) or on a [[subscribers]] entry'
                )
        return self

    @model_validator(mode="after")
    def _unique_emails(self) -> Settings:
        seen: set[str] = set()
        for i, sub in enumerate(self.subscribers):
            if sub.email in seen:
                raise ValueError(f"subscribers[{i}].email: {sub.email} is listed twice")
            seen.add(sub.email)
            if not self.smtp.smtputf8:
                try:
                    check_email(sub.email)
                except ValueError as e:
                    raise ValueError(f"subscribers[{i}].email: {e}") from e
            if sub.delivery != DeliveryMode.EMAIL and not self.web.base_url:
                raise ValueError(
                    f'subscribers[{i}].delivery: "{sub.delivery}" needs [web] base_url: the feed is served by '
                    '`digest serve`; without a web front there is no feed (use delivery = "email")'
                )
        return self

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def database_url(self) -> str:
        return self.database.url.replace("{data_dir}", self.data_path.as_posix())

    @property
    def outbox_path(self) -> Path:
        return Path(self.delivery.outbox_dir.replace("{data_dir}", self.data_path.as_posix())).expanduser()

    def resolve(self, path: str) -> Path:
        """A path from the config, taken relative to the config file's folder."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.config_path is not None:
            p = self.config_path.parent / p
        return p

    def subscriber(self, email: str) -> SubscriberSettings | None:
        return next((s for s in self.subscribers if s.email == email.lower()), None)


SECRET_FIELDS = ("config_path", "smtp_username", "smtp_password", "secret_key")


def example_config_path() -> Path:
    """The documented example config, from the installed package or the source checkout."""
    from digest.resources import resource_path

    return resource_path("config/digest.example.toml")


def user_config_path() -> Path:
    """digest.toml in the user's config folder (e.g. ~/.config/digest), where `digest init` writes."""
    return Path(platformdirs.user_config_dir("digest")) / "digest.toml"


def default_config_path(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The config a command uses without --config: $DIGEST_CONFIG, else config/digest.toml under the
    working folder, else digest.toml in the user config folder.  Never the bundled example (a cron
    job would quietly send the demo to nobody): with none of them, a ConfigError says what to do."""
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    tried = [(cwd or Path.cwd()) / "config" / "digest.toml", user_config_path()]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no config file: none at {tried[0]} or {tried[1]}, and ${ENV_CONFIG} is not set; "
        "run `digest init` to write one, or pass --config FILE"
    )


def starter_config() -> str:
    """The file `digest init` writes: the example config, every setting with its comment, but for one
    placeholder reader, papers from arXiv, and the outbox (a first try sends nothing by mistake)."""
    text = example_config_path().read_text(encoding="utf-8")
    rest = text.split("\n", 1)[1]  # its first line calls it the example
    steps = [
        (r'(?m)^method = "[a-z]+"$', 'method = "outbox"'),
        (r'(?m)^kind = "sample"$', 'kind = "arxiv"'),
        (r'(?m)^name = "sample"$', 'name = "arxiv"'),
        (r"(?m)^categories = \[\]$", 'categories = ["cs.LG", "cs.CL"]'),
        (r"(?ms)^# New machine-learning and vision papers from arXiv.*?(?=^# The papers the Hugging Face)", ""),
        (r'(?m)^email = "[^"]*"$', 'email = "you@example.org"'),
        (r'(?m)^name = "Ada"$', 'name = ""'),
        (r"(?ms)^liked = \[.*?^\]$", 'liked = []  # e.g. ["2106.09685", "Attention Is All You Need"]'),
        (r"(?m)^keywords = \[[^\]]*\]$", 'keywords = ["language models"]'),
        (r"(?m)^exclude_keywords = \[[^\]]*\]$", "exclude_keywords = []"),
    ]
    for pattern, new in steps:
        rest, n = re.subn(pattern, new.replace("\\", "\\\\"), rest, count=1)
        if n != 1:  # tests/test_init.py fails first
            raise ConfigError(f"the example config no longer has {pattern!r}", path=str(example_config_path()))
    head = (
        "# digest: your configuration, written by `digest init` from the documented example.\n"
        "# Put your address and the papers you like under [[subscribers]] and your arXiv categories under\n"
        "# [[sources]]; `digest check-config` validates it, `digest send --dry-run` renders a first digest.\n"
    )
    return head + rest


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError("file not found", path=str(path)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the file ({e})", path=str(path)) from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=str(path)) from e
    except RecursionError as e:
        raise ConfigError("not valid TOML: arrays or tables nested too deep", path=str(path)) from e


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# A problem found by a model-level check names its field at the start of the message.
_FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.*)$", re.S)
_SUBSCRIBER_FIELD = re.compile(r"^subscribers\[(\d+)\]\.?(.*)$")


def _problems(e: ValidationError, path: Path, origins: list[tuple[Path, str]] | None = None) -> list[ConfigError]:
    """Every problem pydantic found, each naming its file and field.  `origins[i]` says which file
    subscriber i came from (the main file or a `subscribers_dir` file) and its name there."""
    out = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        msg = err["msg"]
        for noise in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(noise)
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling against config/digest.example.toml)"
        elif err["type"] == "missing":
            msg = "is required but missing"
        field = _field_name(loc)
        if not field and (m := _FIELD_PREFIX.match(msg)):
            field, msg = m.group(1), m.group(2)
        where = path
        if origins is not None and (m := _SUBSCRIBER_FIELD.match(field)) and int(m.group(1)) < len(origins):
            where, name = origins[int(m.group(1))]
            field = ".".join(p for p in (name, m.group(2)) if p).replace(".[", "[")
        out.append(ConfigError(msg, path=str(where), field=field or None))
    return out


def _config_error(e: ValidationError, path: Path) -> ConfigError:
    """One ConfigError listing every problem of `e` (kept for callers that validate one model)."""
    return ConfigError.many(_problems(e, path))


def _subscriber_files(path: Path, folder: Any, problems: list[ConfigError]) -> list[tuple[Path, dict[str, Any]]]:
    """The tables of every `*.toml` in `subscribers_dir`, each checked against the subscriber schema."""
    if not folder:
        return []
    if not isinstance(folder, str):
        problems.append(ConfigError("must be a folder path as text", path=str(path), field="subscribers_dir"))
        return []
    directory = Path(folder).expanduser()
    directory = directory if directory.is_absolute() else path.parent / directory
    if not directory.is_dir():
        problems.append(ConfigError(f"folder {directory} does not exist", path=str(path), field="subscribers_dir"))
        return []
    found = []
    for sub_path in sorted(directory.glob("*.toml")):
        try:
            sub_raw = _read_toml(sub_path)
            SubscriberSettings.model_validate(sub_raw)
        except ConfigError as e:
            problems.append(e)
            continue
        except ValidationError as e:
            problems.extend(_problems(e, sub_path))
            continue
        found.append((sub_path, sub_raw))
    return found


def load_settings(
    path: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, validate and complete a config file; `overrides` replace top-level keys (e.g. data_dir).

    Everything is checked before anything runs (placeholders, ranker names, the database URL and
    the folders the run will write to); a bad file raises one ConfigError listing every problem."""
    env = os.environ if env is None else env
    path = Path(path).expanduser()
    raw = _read_toml(path)
    raw.update(overrides or {})
    problems: list[ConfigError] = []
    inline = raw.get("subscribers", [])
    if not isinstance(inline, list):
        problems.append(ConfigError("must be a list of [[subscribers]] tables", path=str(path), field="subscribers"))
        inline = []
    origins = [(path, f"subscribers[{i}]") for i in range(len(inline))]
    from_files = _subscriber_files(path, raw.get("subscribers_dir") or "", problems)
    if not isinstance(raw.get("subscribers_dir", ""), str):
        raw["subscribers_dir"] = ""  # said once above
    origins += [(sub_path, "") for sub_path, _ in from_files]
    raw["subscribers"] = inline + [sub_raw for _, sub_raw in from_files]
    if not raw.get("data_dir"):
        raw["data_dir"] = env.get(ENV_DATA_DIR) or platformdirs.user_data_dir("digest")
    elif isinstance(raw["data_dir"], str) and not Path(raw["data_dir"]).expanduser().is_absolute():
        raw["data_dir"] = str(path.parent / raw["data_dir"])
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        problems.extend(_problems(e, path, origins))
    if settings is not None:
        problems.extend(_places(settings, path))
    if problems:
        raise ConfigError.many(problems)
    assert settings is not None
    secrets = {
        "config_path": path.resolve(),
        "smtp_username": env.get(ENV_SMTP_USERNAME) or None,
        "smtp_password": env.get(ENV_SMTP_PASSWORD) or None,
        "secret_key": env.get(ENV_SECRET_KEY) or None,
    }
    return settings.model_copy(update={k: SecretStr(v) if isinstance(v, str) else v for k, v in secrets.items()})


def _places(settings: Settings, path: Path) -> list[ConfigError]:
    """The folders a run writes to must exist or be makeable, checked before the run changes anything."""
    checks = [
        ("data_dir", "", lambda: check_folder(settings.data_path, "the folder")),
        ("database.url", settings.database.url, lambda: check_database_url(settings.database_url, folder=True)),
    ]
    if settings.delivery.method == "outbox":
        checks.append(
            (
                "delivery.outbox_dir",
                settings.delivery.outbox_dir,
                lambda: check_folder(settings.outbox_path, "the outbox folder"),
            )
        )
    out: list[ConfigError] = []
    for field, template, check in checks:
        if out and "{data_dir}" in template:
            continue  # data_dir itself is wrong: said once
        try:
            check()
        except ValueError as e:
            out.append(ConfigError(str(e), path=str(path), field=field))
    return out


def settings_fields(model: type[BaseModel] = Settings, prefix: str = "") -> list[tuple[str, Any]]:
    """Every documented setting as (dotted name, field info); lists are named with [] (e.g. sources[].kind)."""
    out: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        dotted = f"{prefix}{name}"
        ann: Annotated[Any, None] = info.annotation
        inner = getattr(ann, "__args__", (None,))[0] if getattr(ann, "__origin__", None) is list else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(settings_fields(ann, dotted + "."))
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            out.extend(settings_fields(inner, dotted + "[]."))
        else:
            out.append((dotted, info))
    return out
