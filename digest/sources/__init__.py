"""Sources: where new papers come from.  Each kind is one function `(source settings, ...) -> FetchResult`.

Only this package reads paper input from disk or the network; the store saves what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from digest.resources import sample_corpus_path
from digest.settings import Settings, SourceSettings
from digest.sources.base import FetchResult, PaperRecord
from digest.sources.files import read_jsonl
from digest.sources.listing import listing_files, read_listings

Fetcher = Callable[[SourceSettings, Settings, str | None, datetime], FetchResult]


def _sample(src: SourceSettings, settings: Settings, cursor: str | None, now: datetime) -> FetchResult:
    return read_jsonl(sample_corpus_path(), source=src.label)


def _jsonl(src: SourceSettings, settings: Settings, cursor: str | None, now: datetime) -> FetchResult:
    return read_jsonl(settings.resolve(src.path), source=src.label)


def _listing(src: SourceSettings, settings: Settings, cursor: str | None, now: datetime) -> FetchResult:
    return read_listings(listing_files(settings.resolve(src.path)), source=src.label)


FETCHERS: dict[str, Fetcher] = {"sample": _sample, "jsonl": _jsonl, "listing": _listing}


def fetch(src: SourceSettings, settings: Settings, *, cursor: str | None, now: datetime) -> FetchResult:
    """Papers from one configured source since `cursor` (the source's own checkpoint)."""
    return FETCHERS[src.kind](src, settings, cursor, now)


__all__ = ["FETCHERS", "FetchResult", "PaperRecord", "fetch"]
