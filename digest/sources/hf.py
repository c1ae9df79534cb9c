"""Hugging Face Daily Papers: the community's picks of the day, with upvotes and comment counts.

`GET {base_url}/api/daily_papers?date=YYYY-MM-DD` answers a JSON list of items, each with a `paper`
object (`id` = arXiv id, `title`, `summary`, `authors` as objects with `name`, `publishedAt`,
`upvotes`, and `githubRepo`: the code repository's URL where the authors linked one, else null
or absent) and the item's own `numComments`, `title` and `publishedAt`.  The checkpoint is the last
day fully fetched; a run fetches each day after it up to today (at most `max_days` days, oldest
first), and never checkpoints today itself, whose list and upvotes still grow.  "Today" is the
run's, or the real one if the run's is later (`digest send --now` in the future).  A day that fails
or answers garbage stops the checkpoint there, so the next run fetches it again.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from digest.errors import SourceError
from digest.settings import SourceSettings
from digest.sources.base import FetchOptions, FetchResult, PaperRecord, arxiv_id, load_json, sane_date
from digest.sources.http import Http, policy_for

DEFAULT_BASE_URL = "https://huggingface.co"
PAPER_PAGE = "https://huggingface.co/papers/{id}"


def _when(value: Any, now: datetime) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return sane_date(datetime.fromisoformat(value.strip().replace("Z", "+00:00")), now)
    except ValueError:
        return None


def parse_item(item: Any, *, source: str, now: datetime) -> PaperRecord:
    """One daily-papers item as a record; ValueError names why it cannot be one."""
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    paper = item.get("paper")
    if not isinstance(paper, dict):
        raise ValueError("no paper object")
    raw_id = paper.get("id")
    pid = arxiv_id(raw_id) if isinstance(raw_id, str) else None
    if not pid:
        raise ValueError("missing or unknown arXiv id")
    title = paper.get("title") or item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("missing title")
    raw_date = paper.get("publishedAt") or item.get("publishedAt")
    published = _when(raw_date, now)
    if raw_date and published is None:
        raise ValueError("missing or absurd date")
    authors = paper.get("authors")
    comments = item.get("numComments", paper.get("numComments"))
    return PaperRecord.make(  # cleans and bounds every field (counts clamped, text made safe)
        id=pid,
        title=title,
        abstract=paper.get("summary") or "",
        authors=[a.get("name") for a in authors if isinstance(a, dict)] if isinstance(authors, list) else [],
        url=PAPER_PAGE.format(id=pid),
        pdf_url=f"https://arxiv.org/pdf/{pid}",
        published=published,
        source=source,
        upvotes=paper.get("upvotes"),
        comments=comments,
        code_url=paper.get("githubRepo") or "",  # the repository URL the authors linked, or null
    )


def days_to_fetch(cursor: str | None, options: FetchOptions, today: date, max_days: int) -> tuple[list[date], date]:
    """The days this run fetches, oldest first, and the first day it would have wanted."""
    if options.since is not None:
        start = options.since
    else:
        try:
            start = date.fromisoformat(cursor) + timedelta(days=1) if cursor else today - timedelta(days=max_days - 1)
        except ValueError:
            start = today - timedelta(days=max_days - 1)
    wanted = start
    start = max(start, today - timedelta(days=max_days - 1))
    return [start + timedelta(days=i) for i in range((today - start).days + 1)], wanted


def fetch_hf_daily(src: SourceSettings, cursor: str | None, now: datetime, options: FetchOptions) -> FetchResult:
    """Each day's papers since the checkpoint; see the module docstring."""
    result = FetchResult(src.label, cursor=cursor)
    real_today = options.clock().date()
    today = min(now.date(), real_today)  # a later day has no list yet, whatever `now` says
    ahead = _date_or_none(cursor)
    if ahead is not None and ahead >= real_today:  # left by an older version's run with --now ahead
        cursor = result.cursor = (real_today - timedelta(days=1)).isoformat()
        result.notes.append(f"the checkpoint {ahead} was in the future: moved back to {cursor}")
    days, wanted = days_to_fetch(cursor, options, today, src.max_days)
    if days and wanted < days[0]:
        result.notes.append(
            f"days {wanted} to {days[0] - timedelta(days=1)} skipped: at most max_days = {src.max_days} days a run"
        )
    url = f"{src.base_url or DEFAULT_BASE_URL}/api/daily_papers"
    found: dict[str, PaperRecord] = {}  # a paper listed on two days: the later listing's counts win
    complete_through: date | None = None  # the last day of an unbroken run of good days
    broken = False
    failure: SourceError | None = None
    with Http(policy_for(src), sleep=options.sleep) as http:
        for i, day in enumerate(days):
            options.advance(i, len(days))
            try:
                content = http.get(url, {"date": day.isoformat()})
            except SourceError as e:
                failure = e
                break
            good = _read_day(content, result, found, src=src, now=now)
            if good and not broken:
                complete_through = day
            broken = broken or not good
        else:
            options.advance(len(days), len(days))
    result.records = list(found.values())
    if complete_through is not None:
        last_whole = min(complete_through, today - timedelta(days=1))
        old = _date_or_none(cursor)
        result.cursor = (last_whole if old is None else max(old, last_whole)).isoformat()
    if failure is not None:
        if not result.records and result.cursor == cursor:
            raise failure  # the source is down: nothing to save
        result.error = str(failure)
    if broken:
        result.notes.append("a day answered malformed data: the checkpoint stops before it, the next run asks again")
    return result


def _date_or_none(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _read_day(
    body: bytes, result: FetchResult, found: dict[str, PaperRecord], *, src: SourceSettings, now: datetime
) -> bool:
    """Add one day's papers to `found` (skips to `result`); False when the answer was not a JSON list."""
    try:
        items = load_json(body)
    except (ValueError, UnicodeDecodeError):  # bad syntax, bad bytes or nested absurdly deep
        result.skipped["invalid JSON"] += 1
        return False
    if not isinstance(items, list):
        result.skipped["unexpected JSON (not a list)"] += 1
        return False
    for n, item in enumerate(items):
        try:
            rec = parse_item(item, source=src.label, now=now)
        except ValueError as e:
            paper = item.get("paper") if isinstance(item, dict) else None
            pid = paper.get("id") if isinstance(paper, dict) else None
            result.skip(str(e), f"{pid!r}"[:40] if isinstance(pid, str) else f"item {n + 1}")
            continue
        found.pop(rec.id, None)
        found[rec.id] = rec
    return True
