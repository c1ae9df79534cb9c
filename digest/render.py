"""Render: a digest (picks with reasons) into an HTML email and its plain-text twin.

Templates live in the top-level `templates/` folder (shipped inside the package when installed).
Autoescape is on for HTML because paper text is untrusted; CSS is inlined so mail clients that
drop <style> blocks still show the layout.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote_plus

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from digest.errors import RenderError
from digest.resources import resource_path
from digest.sources.base import arxiv_id

log = logging.getLogger(__name__)


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
    arxiv_id: str = ""  # shown as arXiv:ID, linked to abs_url
    abs_url: str = ""  # its arXiv page
    pdf_url: str = ""  # the paper's PDF, straight (no web front needed)
    code_url: str = ""  # its code repository, where the source named one (Hugging Face)
    highlight: str = ""  # the sentence of its abstract that matters to this reader, shown under the title
    section: str = ""  # the digest section it is in ("" when the digest has none)

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
    unsubscribe_by_mail: bool = False  # no web front: unsubscribe_url is a mailto: to the sender
    feed_url: str = ""  # the reader's Atom feed (only with a web front)
    notes: list[str] = field(default_factory=list)  # follow-ups: "A paper you liked was updated: ..."

    @property
    def sections(self) -> list[tuple[str, list[PaperView]]]:
        """The picks by section, in order: one unnamed section when the digest has none."""
        out: list[tuple[str, list[PaperView]]] = []
        for p in self.picks:
            if out and out[-1][0] == p.section:
                out[-1][1].append(p)
            else:
                out.append((p.section, [p]))
        return out or [("", [])]


def paper_url(paper_id: str, url: str, title: str) -> str:
    """The paper's page: its own URL, its arXiv page, or an arXiv title search."""
    if url.startswith(("http://", "https://")):
        return url
    aid = arxiv_id(paper_id)
    if aid:
        return f"https://arxiv.org/abs/{aid}"
    return f"https://arxiv.org/search/?searchtype=title&query={quote_plus(title)}"


def pdf_url(paper_id: str, url: str) -> str:
    """The paper's PDF: the source's own link, else arXiv's for an arXiv paper, else none."""
    if url.startswith(("http://", "https://")):
        return url
    aid = arxiv_id(paper_id)
    return f"https://arxiv.org/pdf/{aid}" if aid else ""


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
        auto_reload=False,  # no stat() of every template on every render
    )
    env.filters["wrap"] = _wrap
    env.filters["fold"] = _fold
    return env


@lru_cache(maxsize=65536)
def _wrap(text: str, width: int = 76, indent: str = "", first: str | None = None) -> str:
    """textwrap.fill, remembered: the same abstract is wrapped once per run, not once per digest.
    `first` is the first line's indent when it differs ("   » " before a highlight)."""
    import textwrap

    return textwrap.fill(text, width=width, initial_indent=indent if first is None else first, subsequent_indent=indent)


@lru_cache(maxsize=65536)
def _fold(text: str, width: int = 200) -> str:
    """HTML text on lines of about `width` characters, broken only at spaces (so it reads the same):
    the HTML part then keeps its lines under SMTP's 998-byte limit and goes as 8bit, not base64."""
    import textwrap

    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)


_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def render_digest(view: DigestView, *, templates_dir: Path | None = None) -> tuple[str, str]:
    """(plain text, HTML with inline CSS) of one digest.

    The HTML comes from pieces inlined once (`_Pieces`): the page per layout and each paper's row
    per paper, with the per-reader values (name, links, reasons) put in; the result is the same
    string as rendering the whole template and inlining it (`render_digest_reference`), which the
    pieces check on first use, falling back to the reference for templates they cannot split.
    """
    pieces = _pieces(templates_dir)
    try:
        if pieces.ok(view):
            env = environment(templates_dir)
            return env.get_template("email/digest.txt").render(d=view), pieces.html(view)
    except Exception:
        log.exception("the pre-inlined pieces failed for %s; rendering the whole template", view.email)
    return render_digest_reference(view, templates_dir=templates_dir)


def render_digest_reference(view: DigestView, *, templates_dir: Path | None = None) -> tuple[str, str]:
    """(plain text, HTML): the whole templates rendered and the CSS inlined, per digest (slow, simple).

    Raises RenderError (naming the reader) when even this fails, so only that reader's digest waits."""
    env = environment(templates_dir)
    try:
        text = env.get_template("email/digest.txt").render(d=view)
        html = env.get_template("email/digest.html").render(d=view)
        return text, _INLINER.inline(html)
    except Exception as e:
        raise RenderError(
            f"could not render the digest for {view.email}: {e.__class__.__name__}: {str(e)[:200]}"
        ) from e


# -- the HTML from pre-inlined pieces -----------------------------------------------------------

# A slot is private-use characters around a random nonce and its name: never escaped, never in our
# templates, and never in paper text (the sources drop private-use characters, and no text can
# guess the nonce, so a title such as "\ue000zzz\ue001" stays text instead of becoming a slot).
_NONCE = secrets.token_hex(6)
_MARK = "\ue000" + _NONCE + "{}\ue001"
_SLOT = re.compile("\ue000" + _NONCE + "([a-z_]+)\ue001")
_PAGE_SLOTS = ("name", "email", "subject", "unsubscribe_url", "manage_url", "browser_url", "feed_url")
_ROW_SLOTS = ("href", "reason", "more_url", "fewer_url", "highlight")


def _serialized(value: str, attribute: bool) -> str:
    """`value` as it comes out of autoescape -> HTML parse -> serialize (what the inliner does)."""
    value = (
        value.replace("\r\n", "\n")
        .replace("\r", "\n")
        .replace("\x00", "\ufffd")
        .replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
    )
    if attribute:
        return value.replace('"', "&quot;")
    return value.replace("<", "&lt;").replace(">", "&gt;")


Parts = list[tuple[str, str, bool]]  # (literal, slot name, attribute?) ... of a piece with slots


def _split(html: str) -> Parts:
    """[(literal, slot name, attribute?)...] of a piece with slots; the last slot name is ""."""
    out: Parts = []
    last = 0
    for m in _SLOT.finditer(html):
        before = html[last : m.start()]
        out.append((before, m.group(1), before.endswith('="')))
        last = m.end()
    out.append((html[last:], "", False))
    return out


def _fill(parts: list[tuple[str, str, bool]], values: dict[str, str]) -> list[str]:
    out = []
    for literal, slot, attribute in parts:
        out.append(literal)
        if slot:
            out.append(_serialized(values[slot], attribute))
    return out


class _Pieces:
    """Inlined pieces of digest.html: the page per layout and each paper's row, with slots."""

    def __init__(self, templates_dir: Path | None) -> None:
        self.env = environment(templates_dir)
        self.pages: dict[tuple[Any, ...], tuple[list[Parts], Parts, Parts] | None] = {}
        self.rows: dict[tuple[Any, ...], Parts] = {}
        self.checked: bool | None = None

    def ok(self, view: DigestView) -> bool:
        if self.checked is None:
            try:
                self.checked = self.html(view) == _INLINER.inline(
                    self.env.get_template("email/digest.html").render(d=view)
                )
            except Exception:
                self.checked = False
        return self.checked

    def _style(self) -> str:
        source = self.env.get_template("email/digest.html").render(d=_sample_view())
        found = re.search(r"<style[^>]*>.*?</style>", source, re.S)
        return found.group(0) if found else ""

    def row(self, p: PaperView, label: str) -> list:
        key = (
            p.id,
            p.title,
            p.url,
            p.authors,
            p.abstract,
            p.date,
            p.count,
            p.arxiv_id,
            p.abs_url,
            p.pdf_url,
            p.code_url,
            label,
            bool(p.reason),
            bool(p.highlight),
            bool(p.click_url),
            bool(p.more_url),
            bool(p.fewer_url),
        )
        parts = self.rows.get(key)
        if parts is None:
            if len(self.rows) > 100_000:
                self.rows.clear()
            parts = _split(self._inline_row(p, label))
            self.rows[key] = parts
        return parts

    def _inline_row(self, p: PaperView, label: str) -> str:
        slotted = replace(
            p,
            reason=_MARK.format("reason") if p.reason else "",
            highlight=_MARK.format("highlight") if p.highlight else "",
            click_url=_MARK.format("href"),
            more_url=_MARK.format("more_url") if p.more_url else "",
            fewer_url=_MARK.format("fewer_url") if p.fewer_url else "",
        )
        row = self.env.get_template("email/_paper.html").render(p=slotted, label=label)
        if not hasattr(self, "style"):
            self.style = self._style()
        doc = f"<html><head>{self.style}</head><body><table><tbody><!--row-->{row}<!--end--></tbody></table></body></html>"
        out = _INLINER.inline(doc)
        return out[out.index("<!--row-->") + 10 : out.index("<!--end-->")]

    def page(self, view: DigestView) -> tuple[list[Parts], Parts, Parts] | None:
        """(the piece before each pick, the one between picks and trending, the one after) for this
        view's layout: section headings and follow-up notes sit in the pieces before their picks."""
        key = (
            view.digest_date,
            view.new_count,
            tuple(p.section for p in view.picks),
            tuple(view.notes),
            bool(view.trending),
            view.trending_label,
            view.origin,
            view.unsubscribe_by_mail,
            bool(view.name),
            bool(view.manage_url),
            bool(view.browser_url),
            bool(view.feed_url),
        )
        if key in self.pages:
            return self.pages[key]
        pick = PaperView(id="\ue000p", title="\ue000pick", url="", authors="", abstract="", date="")
        hot = PaperView(id="\ue000t", title="\ue000hot", url="", authors="", abstract="", date="", count=1)
        slotted = replace(
            view,
            picks=[replace(pick, section=p.section) for p in view.picks],
            trending=[hot] if view.trending else [],
            **cast(
                dict[str, Any],
                {
                    n: _MARK.format(n) if getattr(view, n) or n in ("email", "subject", "unsubscribe_url") else ""
                    for n in _PAGE_SLOTS
                },
            ),
        )
        out = _INLINER.inline(self.env.get_template("email/digest.html").render(d=slotted))
        rows = ["".join(_fill(self.row(pick, ""), {"href": ""}))] * len(view.picks)
        if view.trending:
            rows.append("".join(_fill(self.row(hot, view.trending_label), {"href": ""})))
        pieces, rest = [], out
        for r in rows:  # each placeholder row must be found in order
            at = rest.find(r)
            if at < 0:
                self.pages[key] = None
                return None
            pieces.append(rest[:at])
            rest = rest[at + len(r) :]
        pieces.append(rest)
        npick = len(view.picks)
        before = [_split(piece) for piece in pieces[:npick]]
        middle = _split(pieces[npick]) if view.trending else [("", "", False)]
        result = (before, middle, _split(pieces[-1]))
        if len(self.pages) > 1000:
            self.pages.clear()
        self.pages[key] = result
        return result

    def html(self, view: DigestView) -> str:
        page = self.page(view)
        if page is None:
            return _INLINER.inline(self.env.get_template("email/digest.html").render(d=view))
        before, middle, after = page
        values = {n: getattr(view, n) for n in _PAGE_SLOTS}
        out: list[str] = []
        for piece, p in zip(before, view.picks):
            out += _fill(piece, values)
            out += _fill(self.row(p, ""), _row_values(p))
        if view.trending:
            out += _fill(middle, values)
            for p in view.trending:
                out += _fill(self.row(p, view.trending_label), _row_values(p))
        out += _fill(after, values)
        return "".join(out)


def _row_values(p: PaperView) -> dict[str, str]:
    return {
        "href": p.href,
        "reason": p.reason,
        "more_url": p.more_url,
        "fewer_url": p.fewer_url,
        "highlight": p.highlight,
    }


def _sample_view() -> DigestView:
    return DigestView(
        name="", email="a@b", digest_date=date(2000, 1, 1), picks=[], new_count=0, unsubscribe_url="", subject=""
    )


@lru_cache(maxsize=4)
def _pieces(templates_dir: Path | None) -> _Pieces:
    return _Pieces(templates_dir)
