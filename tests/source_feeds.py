"""Builders for arXiv Atom pages and Hugging Face daily-papers JSON shaped like the real answers,
plus the config snippets that point a source at the local test server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

DATA = Path(__file__).parent / "data" / "sources"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def atom_entry(
    aid: str,
    title: str,
    *,
    published: str = "2026-11-22T10:00:00Z",
    updated: str | None = None,
    summary: str = "An abstract.",
    authors: tuple[str, ...] = ("Ada Lovelace",),
    categories: tuple[str, ...] = ("cs.LG",),
) -> str:
    """One <entry> as the arXiv API writes it (`aid` with its version, e.g. 2611.00001v1)."""
    people = "".join(f"<author><name>{escape(a)}</name></author>" for a in authors)
    cats = "".join(f'<category term="{c}" scheme="http://arxiv.org/schemas/atom"/>' for c in categories)
    return (
        f"<entry><id>http://arxiv.org/abs/{aid}</id><title>{escape(title)}</title>"
        f"<updated>{updated or published}</updated><published>{published}</published>"
        f"<summary>{escape(summary)}</summary>{people}"
        f'<link href="http://arxiv.org/abs/{aid}" rel="alternate" type="text/html"/>'
        f'<link title="pdf" href="http://arxiv.org/pdf/{aid}" rel="related" type="application/pdf"/>'
        f"{cats}</entry>"
    )


def atom_feed(entries: list[str], *, total: int | None = None, start: int = 0) -> str:
    """A whole API answer around `entries`; `total` is opensearch:totalResults."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
        "<id>https://arxiv.org/api/test</id><title>arXiv Query</title><updated>2026-11-23T00:00:00Z</updated>"
        f"<opensearch:totalResults>{len(entries) if total is None else total}</opensearch:totalResults>"
        f"<opensearch:startIndex>{start}</opensearch:startIndex>" + "".join(entries) + "</feed>"
    )


def hf_item(
    aid: str,
    title: str,
    *,
    upvotes: int = 1,
    comments: int = 0,
    published: str = "2026-11-22T09:00:00.000Z",
    summary: str = "A summary.",
    github: str | None = None,
) -> dict:
    """One daily-papers item as the Hugging Face API answers it (`githubRepo`: the code repository's
    URL the authors linked, with `githubStars`; null or absent when there is none)."""
    return {
        "paper": {
            "id": aid,
            "authors": [{"_id": "x1", "name": "Grace Hopper", "hidden": False}],
            "publishedAt": published,
            "title": title,
            "summary": summary,
            "upvotes": upvotes,
            **({"githubRepo": github, "githubStars": 12} if github is not None else {}),
        },
        "publishedAt": published,
        "title": title,
        "numComments": comments,
    }


def hf_json(*items: dict) -> str:
    return json.dumps(list(items))


def arxiv_source(base_url: str, **extra: object) -> str:
    """A [[sources]] block for arXiv at the test server: small pages, no pauses, quick retries."""
    settings = {"page_size": 2, "request_delay": 0, "backoff": 0, "max_attempts": 3, "timeout": 5} | extra
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    return f'\n[[sources]]\nkind = "arxiv"\nname = "arxiv"\ncategories = ["cs.LG", "cs.CV"]\nbase_url = "{base_url}"\n{lines}'


def hf_source(base_url: str, **extra: object) -> str:
    """A [[sources]] block for Hugging Face Daily Papers at the test server."""
    settings = {"max_days": 3, "request_delay": 0, "backoff": 0, "max_attempts": 3, "timeout": 5} | extra
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    return f'\n[[sources]]\nkind = "hf_daily"\nname = "hf"\nbase_url = "{base_url}"\n{lines}'


def arxiv_rss_source(base_url: str, categories: tuple[str, ...] = ("cs.LG",), **extra: object) -> str:
    """A [[sources]] block for arXiv's daily listing at the test server (also its /api/query for lookups)."""
    settings = {"request_delay": 0, "backoff": 0, "max_attempts": 2, "timeout": 5} | extra
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    return (
        f'\n[[sources]]\nkind = "arxiv_rss"\nname = "arxiv"\ncategories = {json.dumps(list(categories))}\n'
        f'base_url = "{base_url}"\n{lines}'
    )
