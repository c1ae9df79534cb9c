"""Papers a reader named that the store does not have, looked up at arXiv by id and stored.

A liked arXiv id or URL (or, later, a library entry) that no source brought in is asked for
through the arXiv API's `id_list` (`digest.sources.arxiv.fetch_ids`), with the settings of the
first configured arXiv source (`arxiv` or `arxiv_rss`: its base_url, pacing and retry policy);
with none configured nothing is looked up.  A found paper is stored as first seen when it was
published, so it counts as a like but is never one of today's new papers.  An id arXiv does not
have is recorded in `paper_lookups` and reported once; it is asked for again, quietly, after
`RETRY_MISSING_AFTER`.  A lookup that failed (network, a broken answer) is reported as such and
tried again on the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from digest.db import Store, aware
from digest.settings import Settings, SourceSettings
from digest.sources.arxiv import fetch_ids
from digest.sources.base import FetchOptions

RETRY_MISSING_AFTER = timedelta(days=7)
QUICK_TIMEOUT = 10.0  # seconds a web form waits for arXiv
ARXIV_KINDS = ("arxiv", "arxiv_rss")


def arxiv_lookup_source(settings: Settings) -> SourceSettings | None:
    """The settings lookups use: the first arXiv source's, or None (no lookups)."""
    return next((s for s in settings.sources if s.kind in ARXIV_KINDS), None)


@dataclass
class LookupReport:
    found: list[str] = field(default_factory=list)  # looked up and stored now
    missing: list[str] = field(default_factory=list)  # arXiv has no such paper: said now, once
    known_missing: list[str] = field(default_factory=list)  # already said before: not again
    failed: list[str] = field(default_factory=list)  # could not ask: tried again next run
    error: str = ""
    off: bool = False  # no arXiv source is configured, so nothing was looked up

    def lines(self, what: str = "liked entry") -> list[str]:
        """One line per problem, for the run report."""
        out = [f"{what} {pid} does not exist on arXiv" for pid in self.missing]
        if self.failed:
            out.append(
                f"{what} {', '.join(self.failed)}: the arXiv lookup failed ({self.error or 'no answer'}); "
                "tried again on the next run"
            )
        return out


def lookup_arxiv(
    ids: Iterable[str],
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    sleep: Callable[[float], None] = time.sleep,
    quick: bool = False,
) -> LookupReport:
    """Fetch and store the version-less arXiv `ids` the store lacks; see the module docstring.

    `quick` (a web form waiting for the answer): one try of at most QUICK_TIMEOUT seconds, not the
    source's whole retry policy, so a slow arXiv holds a web thread for seconds, not minutes."""
    report = LookupReport()
    wanted = list(dict.fromkeys(ids))
    stored = {p.id for p in store.papers(wanted)}
    wanted = [i for i in wanted if i not in stored]
    if not wanted:
        return report
    src = arxiv_lookup_source(settings)
    if src is None:
        report.off = True
        return report
    earlier = store.paper_lookups([f"arxiv:{i}" for i in wanted])
    ask = []
    for pid in wanted:
        row = earlier.get(f"arxiv:{pid}")
        if row is not None and not row.found and row.reported and aware(row.tried_at) > now - RETRY_MISSING_AFTER:
            report.known_missing.append(pid)
        else:
            ask.append(pid)
    if not ask:
        return report
    if quick:
        src = src.model_copy(update={"max_attempts": 1, "timeout": min(src.timeout, QUICK_TIMEOUT)})
    result = fetch_ids(src, ask, now, FetchOptions(sleep=sleep))
    counts = store.upsert_papers(result.records, now, old=True)
    for rec in result.records:
        if rec.id not in counts.rejected:
            report.found.append(rec.id)
            store.save_lookup(f"arxiv:{rec.id}", found=True, reported=False, detail="", now=now)
    for pid in result.missing:
        row = earlier.get(f"arxiv:{pid}")
        (report.known_missing if row is not None and row.reported else report.missing).append(pid)
        store.save_lookup(f"arxiv:{pid}", found=False, reported=True, detail="not on arXiv", now=now)
    report.failed, report.error = result.failed, result.error
    return report
