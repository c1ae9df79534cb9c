"""Render: a digest (picks with reasons) into an HTML email and its plain-text twin.

Templates live in the top-level `templates/` folder (shipped inside the package when installed).
Autoescape is on for HTML because paper text is untrusted; CSS is inlined so mail clients that
drop <style> blocks still show the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote_plus

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from digest.resources import resource_path
from digest.sources.base import arxiv_id


@dataclass
class PaperView:
    """One paper as the email shows it."""

    id: str
    title: str
    url: str
    authors: str
    abstract: str
    date: str
    reason: str = ""
    score: float = 0.0
    count: int = 0  # for trending entries: upvotes or likes
    click_url: str = ""  # the paper link through the web front, which counts the click
    more_url: str = ""  # "more like this"
    fewer_url: str = ""  # "fewer like this"

    @property
    def href(self) -> str:
        return self.click_url or self.url


@dataclass
class DigestView:
    """Everything a digest email shows."""

    name: str
    email: str
    digest_date: date
    picks: list[PaperView]
    new_count: int
    unsubscribe_url: str
    subject: str
    trending: list[PaperView] = field(default_factory=list)
    manage_url: str = ""
    trending_label: str = "upvotes"
    browser_url: str = ""  # the same digest as a web page
    origin: str = ""  # how the reader came to be subscribed: "config" (the file) or "web" (signed up), for the footer


def paper_url(paper_id: str, url: str, title: str) -> str:
    """The paper's page: its own URL, its arXiv page, or an arXiv title search."""
    if url.startswith(("http://", "https://")):
        return url
    aid = arxiv_id(paper_id)
    if aid:
        return f"https://arxiv.org/abs/{aid}"
    return f"https://arxiv.org/search/?searchtype=title&query={quote_plus(title)}"


def trim(text: str, limit: int) -> str:
    """At most about `limit` characters, cut at a word, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


def format_authors(authors: list[str], limit: int = 6) -> str:
    if len(authors) <= limit:
        return ", ".join(authors)
    return ", ".join(authors[:limit]) + f" and {len(authors) - limit} more"


def format_date(moment: datetime | date | None) -> str:
    return moment.strftime("%d %b %Y").lstrip("0") if moment else ""


@lru_cache(maxsize=4)
def environment(templates_dir: Path | None = None) -> Environment:
    folder = templates_dir or resource_path("templates")
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["wrap"] = _wrap
    return env


def _wrap(text: str, width: int = 76, indent: str = "") -> str:
    import textwrap

    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent)


_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def render_digest(view: DigestView, *, templates_dir: Path | None = None) -> tuple[str, str]:
    """(plain text, HTML with inline CSS) of one digest."""
    env = environment(templates_dir)
    text = env.get_template("email/digest.txt").render(d=view)
    html = env.get_template("email/digest.html").render(d=view)
    return text, _INLINER.inline(html)
