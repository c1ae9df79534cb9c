"""Sources: where new papers come from.  Each kind is one function `(source settings, ...) -> FetchResult`.

Only this package reads paper input from disk or the network; the store saves what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from digest.resources import sample_corpus_path
from digest.settings import Settings, SourceSettings
from digest.sources.arxiv import fetch_arxiv
from digest.sources.arxiv_rss import fetch_arxiv_rss
from digest.sources.base import FetchOptions, FetchResult, PaperRecord
from digest.sources.files import read_jsonl
from digest.sources.hf import fetch_hf_daily
from digest.sources.listing import listing_files, read_listings

Fetcher = Callable[[SourceSettings, Settings, str | None, datetime, FetchOptions], FetchResult]


def _sample(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    return read_jsonl(sample_corpus_path(), source=src.label)


def _jsonl(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    return read_jsonl(settings.resolve(src.path), source=src.label)


def _listing(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    return read_listings(listing_files(settings.resolve(src.path)), source=src.label)


def _arxiv(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    return fetch_arxiv(src, cursor, now, options)


def _arxiv_rss(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    return fetch_arxiv_rss(src, cursor, now, options)


def _hf_daily(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    return fetch_hf_daily(src, cursor, now, options)


FETCHERS: dict[str, Fetcher] = {
    "sample": _sample,
    "jsonl": _jsonl,
    "listing": _listing,
    "arxiv": _arxiv,
    "arxiv_rss": _arxiv_rss,
    "hf_daily": _hf_daily,
}


def fetch(
    src: SourceSettings,
    settings: Settings,
    *,
    cursor: str | None,
    now: datetime,
    options: FetchOptions | None = None,
) -> FetchResult:
    """Papers from one configured source since `cursor` (the source's own checkpoint)."""
    return FETCHERS[src.kind](src, settings, cursor, now, options or FetchOptions())


__all__ = ["FETCHERS", "FetchOptions", "FetchResult", "PaperRecord", "fetch"]
