"""Composing one reader's digest: picks in, a signed, rendered message out.

Shared by every path that shows a digest: the daily run, the workers and the web page of a past
digest, so a digest looks and links the same wherever it is read.  Ranking happens before this;
sending after.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from digest import links
from digest.db import (
    Delivery,
    Paper,
    Subscriber,
    aware,
)
from digest.deliver import (
    Envelope,
    message_id,
    parse_sender,
    recipient,
)
from digest.due import wall_clock
from digest.errors import (
    DigestError,
    RenderError,
)
from digest.links import unsubscribe_mailto, unsubscribe_url
from digest.render import (
    DigestView,
    PaperView,
    format_authors,
    format_date,
    paper_url,
    pdf_url,
    render_digest,
    trim,
)
from digest.settings import Settings
from digest.sources.base import arxiv_id, safe_unicode


@dataclass
class Pick:
    paper: Paper
    score: float
    reason: str
    highlight: str = ""  # the abstract's sentence closest to the reader's (or the section's) profile
    section: str = ""  # the digest section it is in ("" when the digest has none)


def sections_of(picks: Sequence[Pick]) -> list[list[Any]]:
    """[name, count] of each run of picks sharing a section, in order ([] when none has one)."""
    out: list[list[Any]] = []
    for p in picks:
        if not p.section:
            return []
        if out and out[-1][0] == p.section:
            out[-1][1] += 1
        else:
            out.append([p.section, 1])
    return out


def row_fields(picks: Sequence[Pick], notes: Sequence[str] = ()) -> dict[str, Any]:
    """What a delivery row keeps of its picks besides their ids, so every path shows them the same:
    reasons, highlights, sections, follow-up notes."""
    return {
        "reasons": [p.reason for p in picks],
        "highlights": [p.highlight for p in picks],
        "sections": sections_of(picks),
        "notes": list(notes),
    }


def picks_from_row(row: Delivery, papers: Mapping[str, Paper]) -> list[Pick]:
    """A recorded digest's picks as it was planned: its papers (those still stored), each with its
    reason, highlight and section from the row."""
    names = [str(name) for name, count in row.sections or [] for _ in range(int(count))]
    reasons, highlights = list(row.reasons or []), list(row.highlights or [])
    return [
        Pick(
            papers[pid],
            0.0,
            reasons[i] if i < len(reasons) else "",
            highlights[i] if i < len(highlights) else "",
            names[i] if i < len(names) else "",
        )
        for i, pid in enumerate(row.papers)
        if pid in papers
    ]


def _view(
    paper: Paper,
    settings: Settings,
    *,
    reason: str = "",
    score: float = 0.0,
    count: int = 0,
    highlight: str = "",
    section: str = "",
) -> PaperView:
    title, url, authors, abstract, day = _paper_fields(
        paper.id,
        paper.title,
        paper.url,
        tuple(paper.authors),
        paper.abstract,
        paper.published,
        paper.first_seen,
        settings.ranking.abstract_chars,
    )
    return PaperView(
        id=paper.id,
        title=title,
        url=url,
        authors=authors,
        abstract=abstract,
        date=day,
        reason=safe_unicode(reason),
        score=score,
        count=count,
        highlight=safe_unicode(highlight),
        section=safe_unicode(section),
        **_paper_links(paper.id, paper.pdf_url, paper.code_url),
    )


@lru_cache(maxsize=32768)
def _paper_links(pid: str, pdf: str, code: str) -> dict[str, str]:
    """The arXiv id, PDF and code links an email shows beside the title, straight to their sites
    (only http(s) addresses; the sources clean them, rows stored earlier are checked again here)."""
    aid = arxiv_id(pid) or ""
    return {
        "arxiv_id": aid,
        "abs_url": f"https://arxiv.org/abs/{aid}" if aid else "",
        "pdf_url": pdf_url(pid, pdf),
        "code_url": code if code.startswith(("http://", "https://")) else "",
    }


@lru_cache(maxsize=32768)
def _paper_fields(
    pid: str,
    title: str,
    url: str,
    authors: tuple[str, ...],
    abstract: str,
    published: datetime | None,
    first_seen: datetime | None,
    abstract_chars: int,
) -> tuple[str, str, str, str, str]:
    """A paper's shown fields, worked out once per run (the same papers recur across digests).

    Text is made safe again here (`safe_unicode`): rows stored before the sources cleaned as they do
    now may hold lone surrogates or private-use characters, which no renderer or mail client takes."""
    title = safe_unicode(title)
    return (
        title,
        paper_url(pid, url, title),
        format_authors([safe_unicode(a) for a in authors]),
        trim(safe_unicode(abstract), abstract_chars),
        format_date(aware(published) or aware(first_seen)),
    )


def compose(
    settings: Settings,
    key: str,
    sub: Subscriber,
    day: date,
    picks: Sequence[Pick],
    trend: Sequence[tuple[Paper, int]],
    new_count: int,
    now: datetime,
    *,
    clock: Callable[[], datetime] = wall_clock,
    notes: Sequence[str] = (),
) -> tuple[Envelope, str, str, str]:
    """(envelope, text, html, unsubscribe url) of one subscriber's digest (`digest_view`, rendered)."""
    view, unsub = digest_view(settings, key, sub, day, picks, trend, new_count, now, clock=clock, notes=notes)
    text, html = render_digest(view)
    sender = parse_sender(settings.smtp.sender)
    envelope = Envelope(
        sender=sender,
        recipient=recipient(sub.name, sub.email),
        subject=view.subject,
        message_id=message_id(sender, sub.email, day),
        when=now,
        digest_date=day,
    )
    return envelope, text, html, unsub


def digest_view(
    settings: Settings,
    key: str,
    sub: Subscriber,
    day: date,
    picks: Sequence[Pick],
    trend: Sequence[tuple[Paper, int]],
    new_count: int,
    now: datetime,
    *,
    clock: Callable[[], datetime] = wall_clock,
    notes: Sequence[str] = (),
) -> tuple[DigestView, str]:
    """(what the digest shows, its unsubscribe url).

    Every link that acts for the reader (paper click, more/fewer like this, preferences, unsubscribe)
    carries a token that names the subscriber (and the paper), signed as of `now` but never later
    than the real `clock`: a digest made with a `--now` in the future must not carry links that the
    web front refuses as not yet valid until then.

    Without a web front (`[web] base_url` empty) there are none of those links: titles go straight
    to the papers, there are no buttons, and unsubscribing is a mailto: to the sender (the
    unsubscribe url returned is then "", and the List-Unsubscribe header carries the mailto alone).
    """
    sender = parse_sender(settings.smtp.sender)
    signed = links.at(min(now, clock()))
    web = bool(settings.web.base_url)
    unsub = unsubscribe_url(settings, key, sub.email, clock=signed) if web else ""
    subject = settings.delivery.subject.format(date=day.strftime("%a %-d %b %Y"), count=len(picks))
    view = DigestView(
        name=sub.name,
        email=sub.email,
        digest_date=day,
        picks=[
            _view(p.paper, settings, reason=p.reason, score=p.score, highlight=p.highlight, section=p.section)
            for p in picks
        ],
        trending=[_view(p, settings, count=c) for p, c in trend],
        trending_label="likes" if not any(p.upvotes for p, _ in trend) else "upvotes",
        new_count=new_count,
        unsubscribe_url=unsub or unsubscribe_mailto(sender.addr_spec, sub.email),
        subject=subject,
        manage_url=links.manage_url(settings, key, sub.email, clock=signed) if web else "",
        browser_url=links.manage_url(settings, key, sub.email, clock=signed, path="/digest") if web else "",
        origin=sub.origin,
        unsubscribe_by_mail=not web,
        feed_url=links.feed_url(settings, key, sub.id, sub.feed_key, clock=signed)
        if web and sub.id is not None
        else "",
        notes=[safe_unicode(n) for n in notes],
    )
    if sub.id is not None and web:
        signer = links.DigestLinks(settings, key, sub.id, clock=signed)
        for pv in view.picks + view.trending:
            pv.click_url, pv.more_url, pv.fewer_url = signer.for_paper(pv.id)
    return view, unsub


def as_render_error(error: Exception, email: str) -> DigestError:
    """A failure while making one reader's message, as the error recorded for that reader: our own
    errors as they are, anything else (text a renderer or the email package refuses) as a RenderError."""
    if isinstance(error, DigestError):
        return error
    return RenderError(f"could not build the digest for {email}: {error.__class__.__name__}: {str(error)[:200]}")


def save_html(settings: Settings, day: date, email: str, html: str) -> Path:
    """Keep a copy of a digest as an HTML file under data_dir/digests/DATE/."""
    path = settings.data_path / "digests" / day.isoformat() / f"{re.sub(r'[^A-Za-z0-9@._-]', '_', email)}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
