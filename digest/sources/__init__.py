"""Sources: where new papers come from.  Each kind is one function `(source settings, ...) -> FetchResult`.

Only this package reads paper input from disk or the network; the store saves what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def wanted_categories(src: SourceSettings, settings: Settings, reader_categories: Iterable[str]) -> list[str]:
    """The categories a category source fetches: its own, and on the first configured source of its
    kind also every reader's category that no source of that kind lists (so each is fetched once)."""
    own = list(src.categories)
    same = [s for s in settings.sources if s.kind == src.kind]
    if not same or same[0].label != src.label:
        return own
    listed = {c for s in same for c in s.categories}
    return own + [c for c in dict.fromkeys(reader_categories) if c not in listed]


def _arxiv(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    wanted = wanted_categories(src, settings, options.reader_categories)
    return fetch_arxiv(src.model_copy(update={"categories": wanted}), cursor, now, options)


def _arxiv_rss(
    src: SourceSettings, settings: Settings, cursor: str | None, now: datetime, options: FetchOptions
) -> FetchResult:
    wanted = wanted_categories(src, settings, options.reader_categories)
    return fetch_arxiv_rss(src.model_copy(update={"categories": wanted}), cursor, now, options)


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


__all__ = ["FETCHERS", "FetchOptions", "FetchResult", "PaperRecord", "fetch", "wanted_categories"]
