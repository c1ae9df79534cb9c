"""The daily job: ingest -> rank -> render -> deliver, for every subscriber whose hour has come.

`run_daily(now, settings)` is safe to run as often as you like: a subscriber gets at most one
digest per local date, because the delivery row is written before the message leaves and a
finished row is never sent again.  One source's or one subscriber's failure never stops the others.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import scipy.sparse as sp

from digest.compose import Pick, as_render_error, compose, picks_from_row, row_fields, save_html
from digest.db import (
    DELIVERED,
    Delivery,
    DeliveryStatus,
    Kind,
    Paper,
    RunLease,
    Store,
    Subscriber,
    UpsertCounts,
    aware,
)
from digest.deliver import (
    RetryPolicy,
    Sender,
    Transport,
    build_message,
    make_transport,
    message_id,
    parse_sender,
)
from digest.due import due_day, local_date, next_send, wall_clock, window_days
from digest.embeddings import ranking_options
from digest.errors import (
    AuthenticationError,
    DigestError,
    ServerUnavailable,
    StoreError,
)
from digest.heap import cyclic_gc_paused
from digest.highlight import highlights
from digest.links import secret_key, unsubscribe_mailto
from digest.lookup import lookup_arxiv
from digest.rank import Corpus, IdMap, Ranker, TrainData, top_k
from digest.rank.authors import AuthorIndex, Followed
from digest.rank.base import TextSpace, top_k_rows
from digest.rank.diversity import cosine_similarity_matrix, mmr_order
from digest.rank.interests import (
    Interest,
    fold_in_interests,
    found_interests,
    named_interests,
    share,
    with_interests,
)
from digest.rank.saved import ModelReport, ranker_for_day
from digest.send import free_dead_claims, send_claimed, sender_name
from digest.settings import Settings, SubscriberSettings, mails
from digest.sources import FetchOptions, fetch
from digest.sources.base import arxiv_id
from digest.sources.library import LibraryResult, read_library

log = logging.getLogger(__name__)

# A progress hook: called with (stage description, done, total); the CLI draws a bar with it.
Progress = Callable[[str, int, int], None]

TRENDING_SIZE = 5


@dataclass
class SourceReport:
    name: str
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    skipped: Counter[str] = field(default_factory=Counter)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)  # skip reason -> where (first few)

    def skipped_line(self) -> str:
        """ "2 invalid JSON (papers.jsonl line 3, line 9), 1 missing title (...)" or "none"."""
        parts = []
        for why, n in self.skipped.most_common():
            where = self.examples.get(why)
            parts.append(f"{n} {why}" + (f" ({', '.join(where)}{', ...' if n > len(where) else ''})" if where else ""))
        return ", ".join(parts) or "none"


@dataclass
class Outcome:
    """What happened for one subscriber in this run."""

    email: str
    status: str  # sent, in-feed (not mailed), pending (will retry), failed, dry-run, skipped, no-papers, not-due
    digest_date: date | None = None
    picks: list[Pick] = field(default_factory=list)
    html_path: Path | None = None
    message_id: str = ""
    detail: str = ""


@dataclass
class RunReport:
    now: datetime
    sources: list[SourceReport] = field(default_factory=list)
    unmatched_likes: dict[str, list[str]] = field(default_factory=dict)
    lookup_notes: list[str] = field(default_factory=list)  # liked ids looked up at arXiv: missing, failed
    libraries: list[str] = field(default_factory=list)  # "ada@x.org: library zotero.bib: 298 entries, ..."
    outcomes: list[Outcome] = field(default_factory=list)
    fatal: str = ""  # the whole run stopped (e.g. SMTP login refused): said once, not per subscriber
    busy: str = ""  # another run held the lease, so this one did nothing
    unreachable: str = ""  # the mail server could not be reached: the rest wait for the next run
    model: ModelReport | None = None  # refitted or updated, and how long it took

    def by_status(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)


@contextmanager
def _stage(progress: Progress | None, name: str, total: int) -> Iterator[Callable[..., None]]:
    done = 0
    if progress:
        progress(name, 0, total)

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(name, done, total)

    yield advance


# -- ingest -------------------------------------------------------------------------------------


def ingest(
    store: Store,
    settings: Settings,
    now: datetime,
    progress: Progress | None = None,
    *,
    only: Sequence[str] | None = None,
    since: date | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SourceReport]:
    """Pull every configured source (or those named in `only`) into the store.

    A failing source is reported and the rest go on; its checkpoint only moves as far as it fully
    fetched.  `since` fetches from that date whatever the checkpoints say.
    """
    sources = [s for s in settings.sources if only is None or s.label in only]
    # the union of the readers' categories, the config's and the database's (web sign-ups)
    followed = tuple(
        dict.fromkeys([c for sub in settings.subscribers for c in sub.categories] + store.reader_categories())
    )
    reports = []
    with _stage(progress, "Ingesting sources", len(sources)) as advance:
        for src in sources:
            report = SourceReport(src.label)

            def step(done: int, total: int, label: str = src.label) -> None:
                if progress:
                    progress(f"  {label}", done, total)

            try:
                options = FetchOptions(since=since, sleep=sleep, progress=step, reader_categories=followed)
                result = fetch(src, settings, cursor=store.source_cursor(src.label), now=now, options=options)
                report.counts = store.upsert_papers(result.records, now)
                if result.updates:  # arXiv replacements: stored papers only, never new ones
                    report.counts.add(store.upsert_papers(result.updates, now, insert=False))
                    if report.counts.absent:
                        result.notes.append(f"{report.counts.absent} replaced papers we never had were left out")
                for pid, why in report.counts.rejected.items():
                    result.skip("could not be stored", f"{pid} ({why})")
                report.skipped, report.examples = result.skipped, result.examples
                report.notes = result.notes
                report.error = result.error
                store.save_source_state(src.label, cursor=result.cursor, now=now, error=result.error)
            except StoreError:
                raise  # the database itself failed: nothing else can be stored either
            except DigestError as e:
                report.error = str(e)
                store.save_source_state(src.label, cursor=None, now=now, error=str(e))
            except Exception as e:
                log.exception("source %s failed unexpectedly", src.label)
                report.error = (
                    f"failed unexpectedly ({e.__class__.__name__}: {str(e)[:200]}); the other sources went on"
                )
                store.save_source_state(src.label, cursor=None, now=now, error=report.error)
            reports.append(report)
            advance()
    return reports


def sync_subscribers(
    store: Store, settings: Settings, now: datetime, *, notes: list[str] | None = None
) -> dict[str, list[str]]:
    """Mirror the config's subscribers and liked papers into the store; returns unmatched likes.

    Liked arXiv ids and URLs the store lacks are looked up at arXiv first (`digest.lookup`) and
    count as likes at once; what that lookup has to say (an id arXiv does not have, once; a failed
    lookup) is added to `notes`, and those entries are not listed as unmatched."""
    ids = store.sync_subscribers(settings.subscribers, now)
    resolved = {entry: store.resolve_paper(entry) for sub in settings.subscribers for entry in _all_liked(sub)}
    wanted = [aid for entry, pid in resolved.items() if pid is None and (aid := arxiv_id(entry))]
    if wanted:
        looked = lookup_arxiv(wanted, settings, store, now)
        if notes is not None:
            notes.extend(looked.lines())
        said = set(looked.missing) | set(looked.known_missing) | set(looked.failed)
        for entry, pid in resolved.items():
            aid = arxiv_id(entry) if pid is None else None
            if aid in looked.found:
                resolved[entry] = aid
            elif aid in said:
                resolved[entry] = ""  # reported by the lookup, not as unmatched
    unmatched: dict[str, list[str]] = {}
    for sub in settings.subscribers:
        found: list[str] = []
        missing: list[str] = []
        for entry in _all_liked(sub):
            pid = resolved[entry]
            if pid == "":
                continue
            (found if pid else missing).append(pid or entry)
        store.replace_interactions(ids[sub.email], found, Kind.LIKE, now, origin="config")
        if sub.topics:  # each topic's liked papers as stored ids, for ranking the topic
            topics = [{**t.model_dump(), "liked": [pid for e in t.liked if (pid := resolved[e])]} for t in sub.topics]
            store.set_topics(ids[sub.email], topics)
        if missing:
            unmatched[sub.email] = missing
    return unmatched


def _all_liked(sub: SubscriberSettings) -> list[str]:
    """A reader's liked entries: `liked` and each topic's (a topic's liked paper is liked too)."""
    return list(dict.fromkeys([*sub.liked, *(e for t in sub.topics for e in t.liked)]))


def import_library(store: Store, subscriber_id: int, result: LibraryResult, now: datetime, *, origin: str) -> str:
    """Store a library's papers (merged with the stored ones by arXiv id, DOI, then title; new
    ones kept out of the day's candidates) and make them exactly this origin's likes of the
    reader; returns a line saying what happened."""
    records = store.match_records(result.records)
    counts = store.upsert_papers(records, now, old=True)
    liked = [r.id for r in records if r.id not in counts.rejected]
    store.replace_interactions(subscriber_id, liked, Kind.LIKE, now, origin=origin)
    for pid, why in counts.rejected.items():
        result.problem(f"paper {pid}", f"could not be stored ({why})")
    merged = len(set(liked)) - counts.new
    return f"{result.summary()}; {len(set(liked))} liked ({counts.new} new papers, {merged} already known)"


def _library_state(email: str, origin: str) -> str:
    """The source_state row keeping a reader's library file's hash (short: a path can be long)."""
    return "library:" + hashlib.sha256(f"{email}|{origin}".encode()).hexdigest()[:40]


def sync_libraries(store: Store, settings: Settings, now: datetime) -> list[str]:
    """Read each reader's `library` files into their likes, a file only when it changed since
    the last read (a hash per reader and file in source_state); a file no longer listed takes its
    likes with it.  One line per file read or failed; a bad file never stops the others."""
    lines: list[str] = []
    for sub in settings.subscribers:
        row = store.subscriber(email=sub.email)
        if row is None:
            continue
        wanted = {f"library:{settings.resolve(p)}": settings.resolve(p) for p in sub.library}
        for origin in store.interaction_origins(row.id, Kind.LIKE, prefix="library:"):
            if origin not in wanted:
                store.replace_interactions(row.id, [], Kind.LIKE, now, origin=origin)
                store.save_source_state(_library_state(sub.email, origin), cursor=None, now=now)
        for origin, path in wanted.items():
            state = _library_state(sub.email, origin)
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
                if digest and digest == store.source_cursor(state):
                    continue
                result = read_library(path)
                line = import_library(store, row.id, result, now, origin=origin)
                store.save_source_state(state, cursor=digest, now=now)
                lines.append(f"{sub.email}: library {path.name}: {line}")
            except StoreError:
                raise
            except DigestError as e:
                store.save_source_state(state, cursor=None, now=now, error=str(e))
                lines.append(f"{sub.email}: library {path.name}: failed: {e} (its likes are kept as they were)")
    return lines


# -- rank ---------------------------------------------------------------------------------------


def train_data(store: Store, subscribers: Sequence[Subscriber], papers: Sequence[Paper] | None = None) -> TrainData:
    """Everything the rankers learn from, as of now: the corpus, everyone's likes and dislikes.

    Without `papers`, the corpus is read as plain rows (`Store.corpus_rows`), the fast way at scale."""
    if papers is None:
        rows = store.corpus_rows()
        corpus = Corpus.from_records((pid, title, abstract) for pid, title, abstract, _ in rows)
        upvotes = [up for *_, up in rows]
        del rows
    else:
        corpus = Corpus.from_records((p.id, p.title, p.abstract) for p in papers)
        upvotes = [p.upvotes for p in papers]
    users = IdMap(s.email for s in subscribers)
    ids = np.array([s.id for s in subscribers], dtype=np.int64)
    user_row = np.full(int(ids.max(initial=0)) + 1, -1, dtype=np.int64)
    user_row[ids] = [users.index(s.email) for s in subscribers]

    def matrix(kind: str) -> sp.csr_matrix:
        us, ps = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for sids, pids in store.interaction_chunks(kind):
            sid = np.asarray(sids, dtype=np.int64)
            u = np.where(sid < len(user_row), user_row[np.minimum(sid, len(user_row) - 1)], -1)
            p = corpus.ids.rows(pids)
            keep = (u >= 0) & (p >= 0)
            us.append(u[keep])
            ps.append(p[keep])
        u, p = np.concatenate(us), np.concatenate(ps)
        m = sp.csr_matrix((np.ones(len(u), np.float32), (u, p)), shape=(len(users), len(corpus)))
        m.data[:] = 1.0  # repeats summed: back to 0/1
        return m

    counts = np.array(upvotes, dtype=np.float32)
    keywords = [
        list(dict.fromkeys([*s.keywords, *(k for t in s.topics or [] for k in t.get("keywords") or [])]))
        for s in subscribers
    ]
    data = TrainData(corpus, users, matrix(Kind.LIKE), matrix(Kind.DISLIKE), keywords, counts)
    if not counts.any():  # no community upvotes: likes across our subscribers are the trend
        data.counts = np.asarray(data.likes.sum(axis=0), dtype=np.float32).ravel()
    return data


def candidate_papers(store: Store, data: TrainData, since: datetime | set[str]) -> list[Paper]:
    """The papers published or first seen since `since` (or these recent ids), in corpus order (full
    rows, for the digest)."""
    recent = since if isinstance(since, set) else set(store.recent_paper_ids(since))
    return store.papers([pid for pid in data.corpus.ids.ids if pid in recent])


def day_ranker(
    settings: Settings, data: TrainData, now: datetime, *, refit: bool = False, save: bool = True
) -> tuple[Ranker, ModelReport]:
    """The configured ranker for today: the saved fit with today folded in, or a refit (`rank.saved`;
    `save` False: a refit is not written, for dry runs)."""
    return ranker_for_day(
        settings.ranking.ranker,
        ranking_options(settings, data.corpus, data.keywords),
        data,
        now,
        data_dir=settings.data_path,
        refit_days=settings.ranking.refit_days,
        force=refit,
        save=save,
    )


@lru_cache(maxsize=4096)
def _exclusion_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(r"\b" + re.escape(k) for k in keywords), re.IGNORECASE)


def relevance_floor(settings: Settings, ranker: Ranker) -> float:
    """The score below which no candidate is picked: `ranking.min_score`, else the ranker's own floor."""
    floor = settings.ranking.min_score
    return ranker.floor if floor == "auto" else floor


def exclusion_mask(candidates: Sequence[Paper], keywords: Sequence[str]) -> np.ndarray:
    """True for candidates whose title or abstract mentions any of the keywords (word start, any case)."""
    if not keywords:
        return np.zeros(len(candidates), dtype=bool)
    pattern = _exclusion_pattern(tuple(keywords))
    return np.fromiter(
        (bool(pattern.search(f"{p.title} {p.abstract}")) for p in candidates), dtype=bool, count=len(candidates)
    )


def category_mask(candidates: Sequence[Paper], categories: Sequence[str]) -> np.ndarray:
    """True for candidates outside all of `categories` (a cross-listed paper is in each of its
    categories); all False when `categories` is empty (a reader with none gets every category)."""
    if not categories:
        return np.zeros(len(candidates), dtype=bool)
    wanted = set(categories)
    return np.fromiter((wanted.isdisjoint(p.categories or ()) for p in candidates), dtype=bool, count=len(candidates))


def may_show(sub: Subscriber, paper: Paper, hidden: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether `paper` may appear anywhere in this reader's digest (picks or trending): not in
    `hidden` (what they were sent, liked, disliked or clicked), in their categories, not excluded."""
    if paper.id in hidden:
        return False
    if sub.categories and set(sub.categories).isdisjoint(paper.categories or ()):
        return False
    return not (
        sub.exclude_keywords
        and _exclusion_pattern(tuple(sub.exclude_keywords)).search(f"{paper.title} {paper.abstract}")
    )


def rank_subscribers(
    ranker: Ranker,
    data: TrainData,
    subscribers: Sequence[Subscriber],
    candidates: Sequence[Paper],
    seen: dict[int, set[str]],
    *,
    diversity: float = 0.5,
    min_score: float = -np.inf,
    block: int = 1024,
    processes: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[int, list[Pick]]:
    """Each subscriber's best `max_papers` candidates with a reason each, scored in blocks of users.

    Papers the subscriber was already sent, liked, disliked or clicked, and papers matching their
    exclude_keywords, are never picked.  With `diversity` < 1 the picks are re-ranked by maximal
    marginal relevance over a short list, so the top is not ten near-copies of one topic.
    A reader with categories only gets candidates in one of them; a candidate scoring below
    `min_score` (the relevance floor) is never picked, so a thin day gives fewer picks.
    With `processes` > 1 (and more than one block of readers) the blocks are shared among forked
    processes, which see the fitted ranker without copying it; the picks are the same.
    """
    if not candidates or not subscribers:
        return {s.id: [] for s in subscribers}
    rows = data.corpus.ids.indices(p.id for p in candidates)
    features = ranker.item_features(rows) if diversity < 1 else None
    sim = cosine_similarity_matrix(features) if features is not None else None
    job = _RankJob(ranker, data, subscribers, candidates, seen, rows, sim, diversity, min_score)
    starts = list(range(0, len(subscribers), block))
    blocks = [(s, min(s + block, len(subscribers))) for s in starts]
    picks: dict[int, list[Pick]] = {}

    def keep(span: tuple[int, int], chosen: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]) -> None:
        counts, best, best_scores, reasons = chosen
        ends = np.cumsum(counts).tolist()
        best, best_scores = best.tolist(), best_scores.tolist()
        start = 0
        for sub, end in zip(subscribers[span[0] : span[1]], ends):
            picks[sub.id] = [Pick(candidates[best[k]], best_scores[k], reasons[k]) for k in range(start, end)]
            start = end
        if progress:
            progress(span[1] - span[0])

    processes = min(processes, len(blocks))
    with cyclic_gc_paused():  # ten lasting picks per reader; the forked rankers inherit the pause
        if processes > 1 and "fork" in multiprocessing.get_all_start_methods():
            global _RANK_JOB
            _RANK_JOB = job  # the forked processes inherit it (copy-on-write), nothing is pickled
            try:
                with multiprocessing.get_context("fork").Pool(processes) as pool:
                    for span, chosen in zip(blocks, pool.imap(_rank_block_forked, blocks)):
                        keep(span, chosen)
            finally:
                _RANK_JOB = None
        else:
            for span in blocks:
                keep(span, job.block(*span))
    return picks


@dataclass
class _RankJob:
    """One ranking of many readers, block by block (shared with forked processes)."""

    ranker: Ranker
    data: TrainData
    subscribers: Sequence[Subscriber]
    candidates: Sequence[Paper]
    seen: dict[int, set[str]]
    rows: np.ndarray
    sim: np.ndarray | None
    diversity: float
    min_score: float = -np.inf
    masks: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    category_masks: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """The picks of subscribers[start:stop], flat (cheap to send back from a forked process): each
        subscriber's pick count, then every pick's candidate position, score and reason in order."""
        ranker, data, candidates, rows, sim, diversity = (
            self.ranker,
            self.data,
            self.candidates,
            self.rows,
            self.sim,
            self.diversity,
        )
        if not self.position:
            self.position = {p.id: i for i, p in enumerate(candidates)}
        chunk = self.subscribers[start:stop]
        users = np.array([data.users.index(s.email) for s in chunk])
        scores = np.array(ranker.score(users, rows), dtype=np.float32)  # a copy we may write into
        # what each reader may be sent: above the floor, in their categories, not seen, not excluded
        # (as -inf in the block); readers sharing a category set share one mask
        if self.min_score > -np.inf:
            # the floor, for readers with likes or keywords whose scores tell the candidates apart (a
            # reader with neither, or a day of equally matching papers, says nothing against the floor)
            informed = (np.diff(data.likes.indptr)[users] > 0) | np.array([bool(data.keywords[u]) for u in users])
            informed &= np.ptp(scores, axis=1) > 1e-6 if scores.shape[1] else informed
            scores[(scores < self.min_score) & informed[:, None]] = -np.inf
        for i, sub in enumerate(chunk):
            cats = tuple(sorted(sub.categories or ()))
            if cats:
                if cats not in self.category_masks:
                    self.category_masks[cats] = category_mask(candidates, cats)
                scores[i, self.category_masks[cats]] = -np.inf
            key = tuple(sub.exclude_keywords)
            if key:
                if key not in self.masks:
                    self.masks[key] = exclusion_mask(candidates, key)
                scores[i, self.masks[key]] = -np.inf
            done = [self.position[pid] for pid in self.seen.get(sub.id, ()) if pid in self.position]
            if done:
                scores[i, done] = -np.inf
        allowed = np.isfinite(scores).sum(axis=1)
        chosen: list[tuple[np.ndarray, np.ndarray]] = [None] * len(chunk)  # type: ignore[list-item]
        for size in sorted({s.max_papers for s in chunk}):
            group = np.array([i for i, s in enumerate(chunk) if s.max_papers == size], dtype=np.int64)
            short_len = size if sim is None else max(3 * size, 20)
            full = group[allowed[group] >= short_len]
            for i in group[allowed[group] < short_len]:  # few papers left to pick from: one by one
                chosen[i] = _pick_one(scores[i], size, sim, diversity)
            if not len(full) or size <= 0:
                for i in full:
                    chosen[i] = (np.zeros(0, np.int64), np.zeros(0, np.float32))
                continue
            short = top_k_rows(scores[full], short_len)
            short_scores = np.take_along_axis(scores[full], short, axis=1)
            if sim is None:
                best, best_scores = short, short_scores
            else:
                order = _mmr_rows(short_scores, sim[short[:, :, None], short[:, None, :]], size, diversity)
                best = np.take_along_axis(short, order, axis=1)
                best_scores = np.take_along_axis(short_scores, order, axis=1)
            for j, i in enumerate(full):
                chosen[i] = (best[j], best_scores[j])
        # reasons for the whole block at once, by pick count
        reasons: list[list[str]] = [[] for _ in chunk]
        by_len: dict[int, list[int]] = {}
        for i, (best, _) in enumerate(chosen):
            if len(best):
                by_len.setdefault(len(best), []).append(i)
        for idx in by_len.values():
            said = ranker.explain_many(users[idx], rows[np.stack([chosen[i][0] for i in idx])])
            for i, r in zip(idx, said):
                reasons[i] = r
        counts = np.array([len(best) for best, _ in chosen], dtype=np.int64)
        flat = [r for rs in reasons for r in rs]
        if not counts.sum():
            return counts, np.zeros(0, np.int64), np.zeros(0, np.float32), flat
        return (
            counts,
            np.concatenate([best for best, _ in chosen]).astype(np.int64),
            np.concatenate([sc for _, sc in chosen]).astype(np.float32),
            flat,
        )


_RANK_JOB: _RankJob | None = None


def _rank_block_forked(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    assert _RANK_JOB is not None, "set before the pool forks"
    return _RANK_JOB.block(*span)


def _pick_one(
    row_scores: np.ndarray, size: int, sim: np.ndarray | None, diversity: float
) -> tuple[np.ndarray, np.ndarray]:
    """One reader's picks (candidate positions, scores) from a score row where -inf is not allowed."""
    pool = np.flatnonzero(np.isfinite(row_scores))
    if sim is None:
        return top_k(pool, row_scores[pool], size)
    short, short_scores = top_k(pool, row_scores[pool], max(3 * size, 20))
    order = mmr_order(short_scores, sim[np.ix_(short, short)], size, diversity)
    return short[order], short_scores[order]


def _mmr_rows(scores: np.ndarray, sims: np.ndarray, k: int, lambda_: float) -> np.ndarray:
    """`mmr_order` for many readers at once: scores (B, n), sims (B, n, n) -> positions (B, k)."""
    scores = scores.astype(np.float64)
    b, n = scores.shape
    k = min(k, n)
    low = scores.min(axis=1, keepdims=True)
    span = scores.max(axis=1, keepdims=True) - low
    rel = np.where(span > 0, (scores - low) / np.where(span > 0, span, 1.0), 0.0)
    max_sim = np.zeros((b, n))
    taken = np.zeros((b, n), dtype=bool)
    out = np.zeros((b, k), dtype=np.int64)
    rows = np.arange(b)
    for step in range(k):
        value = lambda_ * rel - (1 - lambda_) * max_sim
        value[taken] = -np.inf
        best = np.argmax(value, axis=1)
        out[:, step] = best
        taken[rows, best] = True
        max_sim = np.maximum(max_sim, sims[rows, best])
    return out


def counted_papers(data: TrainData, candidates: Sequence[Paper]) -> list[tuple[Paper, int]]:
    """The window's papers with an upvote or like count, most first (ties by title)."""
    counted = []
    counts = data.counts
    for p in candidates:
        row = data.corpus.ids.get(p.id)
        count = int(counts[row]) if row is not None and counts is not None else 0
        if count > 0:
            counted.append((p, count))
    counted.sort(key=lambda pc: (-pc[1], pc[0].title))
    return counted


def trending(
    data: TrainData,
    candidates: Sequence[Paper],
    exclude: set[str],
    size: int = TRENDING_SIZE,
    *,
    subscriber: Subscriber | None = None,
    counted: Sequence[tuple[Paper, int]] | None = None,
) -> list[tuple[Paper, int]]:
    """The window's most upvoted (or most liked) papers not in `exclude` (the picks, and what the
    reader was sent, liked, disliked or clicked), with their counts; for a `subscriber`, only papers
    `may_show` allows (their categories, not their exclude_keywords).  `counted`: the window's
    `counted_papers`, when computed once for many readers."""
    out: list[tuple[Paper, int]] = []
    for p, c in counted if counted is not None else counted_papers(data, candidates):
        if len(out) >= size:
            break
        if p.id not in exclude and (subscriber is None or may_show(subscriber, p)):
            out.append((p, c))
    return out


# -- render and deliver ------------------------------------------------------------------------


def run_daily(
    now: datetime,
    settings: Settings,
    *,
    store: Store | None = None,
    transport: Transport | None = None,
    dry_run: bool = False,
    force: bool = False,
    only: Sequence[str] | None = None,
    keep_html: bool = False,
    progress: Progress | None = None,
    lease_wait: float = 0.0,
    clock: Callable[[], datetime] = wall_clock,
    sleep: Callable[[float], None] = time.sleep,
) -> RunReport:
    """Ingest, rank, render and deliver for every subscriber who is due and has no digest today.

    `force` ignores the send time (not the one-per-day rule); `only` limits the run to some emails;
    `dry_run` renders and saves HTML previews without sending or recording anything.  A real run
    holds the database lease "daily-run" (waiting up to `lease_wait` seconds for it; `report.busy`
    says why it did nothing otherwise).  `clock` (the wall clock, for the lease) and `sleep` (retry
    backoff, rate limit) are parameters so tests can move them; `now` is the digest clock.
    """
    if now.tzinfo is None:
        raise ValueError("run_daily needs an aware datetime (with a time zone)")
    now = now.astimezone(UTC)
    own_store = store is None
    store = store or Store(settings.database_url)
    report = RunReport(now)
    lease = (
        None
        if dry_run
        else RunLease(store, ttl=settings.schedule.lease_seconds, wait=lease_wait, clock=clock, sleep=sleep)
    )
    try:
        if lease is not None and not lease.start():
            report.busy = f"another daily run is in progress ({lease.holder()}); nothing done"
            return report
        report.sources = ingest(store, settings, now, progress)
        report.unmatched_likes = sync_subscribers(store, settings, now, notes=report.lookup_notes)
        report.libraries = sync_libraries(store, settings, now)
        if not dry_run:
            free_dead_claims(store, clock())
        subscribers = store.subscribers()
        due = due_subscribers(
            store,
            subscribers,
            now,
            report,
            force=force,
            only=only,
            dry_run=dry_run,
            catch_up_hours=settings.schedule.catch_up_hours,
        )
        if not due:
            return report
        data, report.model, candidates = rank_due(
            store, settings, subscribers, due, now, save=not dry_run, progress=progress
        )
        _deliver_all(
            store,
            settings,
            secret_key(settings),
            data,
            due,
            candidates,
            now,
            report,
            transport=transport,
            dry_run=dry_run,
            keep_html=keep_html,
            progress=progress,
            lease=lease,
            sleep=sleep,
            clock=clock,
            force=force,
        )
    finally:
        if lease is not None:
            lease.stop()
        if own_store:
            store.close()
    return report


def rank_due(
    store: Store,
    settings: Settings,
    subscribers: Sequence[Subscriber],
    due: Sequence[Due],
    now: datetime,
    *,
    save: bool = True,
    progress: Progress | None = None,
    processes: int = 1,
) -> tuple[TrainData, ModelReport, list[Paper]]:
    """Fill in each due digest's picks: a fresh one ranked now (a weekly digest from the whole week,
    the others from `ranking.window_days`), a recorded one with exactly its recorded papers.

    Returns the training data, how the day's ranker was made, and the widest window's candidates."""
    data = train_data(store, subscribers)
    ranker, model = day_ranker(settings, data, now, save=save)
    default_days = settings.ranking.window_days
    widest = max([default_days] + [window_days(d.subscriber, default_days) for d in due])
    recent_for = {days: set(store.recent_paper_ids(now - timedelta(days=days))) for days in {default_days, widest}}
    recent = recent_for[widest]
    candidates = candidate_papers(store, data, recent)
    fresh = [d.subscriber for d in due if d.existing is None]
    seen = store.papers_seen(
        [d.subscriber.id for d in due], [p.id for p in candidates], [Kind.SENT, Kind.LIKE, Kind.DISLIKE, Kind.CLICKED]
    )
    for d in due:
        d.seen = set(seen.get(d.subscriber.id, ()))
    if widest > default_days:
        older = recent - recent_for[default_days]
        for sub in fresh:
            if window_days(sub, default_days) < widest:
                seen.setdefault(sub.id, set()).update(older)
    with _stage(progress, "Ranking", len(fresh)) as advance:
        picks = rank_readers(
            ranker,
            data,
            fresh,
            candidates,
            seen,
            diversity=settings.ranking.diversity,
            min_score=relevance_floor(settings, ranker),
            processes=processes,
            progress=advance,
            find_interests=settings.ranking.find_interests,
        )
    notes = follow_ups(store, fresh)
    for d in due:
        if d.existing is None:
            d.picks, d.notes = picks[d.subscriber.id], notes.get(d.subscriber.id, [])
        else:
            d.picks, d.notes = _resend_picks(store, ranker, data, d), list(d.existing.notes or [])
    return data, model, candidates


# -- the reading features: a section per interest, authors you follow, highlights, follow-ups -----

AUTHORS_SECTION = "From authors you follow"
REST_SECTION = "Picked for you"  # the rest of a one-interest digest that leads with followed authors


def reader_interests(sub: Subscriber, data: TrainData, space: TextSpace | None, *, find: bool = True) -> list[Interest]:
    """The interests a reader's digest has a section for: their named topics (with "More for you",
    their whole profile, when they like or ask for more than the topics hold), else the clusters
    of their liked papers; fewer than two is none (one list)."""
    named = named_interests(sub.topics or [], data)
    user = data.users.index(sub.email)
    if named:
        in_topics = {int(r) for i in named for r in i.liked}
        topic_words = {k for i in named for k in i.keywords}
        if set(data.likes[user].indices.tolist()) - in_topics or set(sub.keywords) - topic_words:
            named.append(Interest(MORE_SECTION, own=True))
        return named if len(named) > 1 else []
    if space is None or not find:
        return []
    found = found_interests(space, data.likes[user].indices)
    return found if len(found) > 1 else []


MORE_SECTION = "More for you"


def rank_readers(
    ranker: Ranker,
    data: TrainData,
    subscribers: Sequence[Subscriber],
    candidates: Sequence[Paper],
    seen: dict[int, set[str]],
    *,
    diversity: float = 0.5,
    min_score: float = -np.inf,
    processes: int = 1,
    progress: Callable[[int], None] | None = None,
    find_interests: bool = True,
) -> dict[int, list[Pick]]:
    """Each reader's picks as their digest shows them: papers by authors they follow first, then
    one section per interest (a reader with one interest: the single list of `rank_subscribers`),
    each pick with its highlighted sentence.  Readers with interests join the ranker's data as
    one reader per interest (`with_interests`), folded into the day's fit."""
    space = ranker.text_space()
    interests = {s.id: found for s in subscribers if (found := reader_interests(s, data, space, find=find_interests))}
    rows_of: dict[int, list[int]] = {}
    if interests:
        sectioned = [s for s in subscribers if s.id in interests]
        augmented, interest_rows = with_interests(
            data, [data.users.index(s.email) for s in sectioned], [interests[s.id] for s in sectioned]
        )
        fold_in_interests(ranker, augmented)
        space = ranker.text_space()
        rows_of = {s.id: r for s, r in zip(sectioned, interest_rows)}
        if progress:
            progress(len(sectioned))  # ranked below, one reader at a time
    plain = [s for s in subscribers if s.id not in interests]
    picks = rank_subscribers(
        ranker,
        data,
        plain,
        candidates,
        seen,
        diversity=diversity,
        min_score=min_score,
        processes=processes,
        progress=progress,
    )
    rows = data.corpus.ids.indices(p.id for p in candidates)
    index = AuthorIndex([p.authors or [] for p in candidates]) if any(s.authors for s in subscribers) else None
    profile: dict[int, list[int]] = {}  # each pick's profile row (the reader's or an interest's), for its highlight
    masks: dict[tuple[str, ...], np.ndarray] = {}
    for sub in subscribers:
        user = data.users.index(sub.email)
        lead = _authored(ranker, sub, user, candidates, rows, seen.get(sub.id, set()), index) if index else []
        lead_ids = {p.paper.id for p in lead}
        if sub.id in interests:
            hidden = seen.get(sub.id, set()) | lead_ids
            blocked = _blocked(sub, candidates, hidden, masks)
            rest, rest_rows = _section_picks(
                ranker,
                interests[sub.id],
                rows_of[sub.id],
                candidates,
                rows,
                blocked,
                min_score,
                budget=max(sub.max_papers - len(lead), 0),
            )
        else:
            rest = [p for p in picks[sub.id] if p.paper.id not in lead_ids][: max(sub.max_papers - len(lead), 0)]
            rest_rows = [user] * len(rest)
            if lead:
                for p in rest:
                    p.section = REST_SECTION
        picks[sub.id] = lead + rest
        profile[sub.id] = [user] * len(lead) + rest_rows
    wanted = [
        (row, p.paper.id, p.paper.abstract) for sub in subscribers for p, row in zip(picks[sub.id], profile[sub.id])
    ]
    said = iter(highlights(space, wanted))
    for sub in subscribers:
        for p in picks[sub.id]:
            p.highlight = next(said)
    return picks


def follow_up_line(paper: Paper) -> str:
    """ "A paper you liked was updated: TITLE v3, now in NeurIPS 2026" (the version and the journal as known)."""
    line = f"A paper you liked was updated: {paper.title}"
    if (paper.version or 0) > 1:
        line += f" v{paper.version}"
    if paper.journal_ref:
        line += f", now in {paper.journal_ref}"
    return line


def follow_ups(store: Store, subscribers: Sequence[Subscriber]) -> dict[int, list[str]]:
    """Each reader's follow-up lines: liked papers revised (a new arXiv version, a journal
    reference) after the reader's last digest was made and after they liked them.  Said once: the
    digest that says it is made after the revision, so the next one is not."""
    revised = store.revised_likes([s.id for s in subscribers])
    out: dict[int, list[str]] = {}
    for sub in subscribers:
        if sub.id not in revised:
            continue
        last = store.last_delivery(sub.id)
        since = aware(last.created) if last is not None else None
        lines = [
            follow_up_line(paper)
            for paper, liked_at in revised[sub.id]
            if (when := aware(paper.revised_at)) is not None and when > liked_at and (since is None or when > since)
        ]
        if lines:
            out[sub.id] = lines
    return out


def _blocked(
    sub: Subscriber, candidates: Sequence[Paper], hidden: set[str], masks: dict[tuple[str, ...], np.ndarray]
) -> np.ndarray:
    """True for the candidates this reader may not be sent (`may_show`, vectorised; masks shared by key)."""
    cats = ("c", *sorted(sub.categories or ()))
    if cats not in masks:
        masks[cats] = category_mask(candidates, cats[1:])
    words = ("x", *sub.exclude_keywords)
    if words not in masks:
        masks[words] = exclusion_mask(candidates, words[1:])
    blocked = masks[cats] | masks[words]
    if hidden:
        blocked = blocked | np.fromiter((p.id in hidden for p in candidates), dtype=bool, count=len(candidates))
    return blocked


def _authored(
    ranker: Ranker,
    sub: Subscriber,
    user: int,
    candidates: Sequence[Paper],
    rows: np.ndarray,
    hidden: set[str],
    index: AuthorIndex,
) -> list[Pick]:
    """The reader's "From authors you follow" section: candidates by a followed author that
    `may_show` allows (their categories, exclusions, nothing seen before), whatever their score,
    best scored first, at most `max_papers`."""
    followed = Followed.of(sub.authors or [])
    if not followed:
        return []
    by = {i: who for i, who in index.papers_by(followed).items() if may_show(sub, candidates[i], hidden)}
    if not by:
        return []
    positions = np.array(list(by), dtype=np.int64)
    scores = ranker.score(np.array([user]), rows[positions])[0]
    order = np.argsort(-scores, kind="stable")[: sub.max_papers]
    return [
        Pick(
            candidates[positions[k]],
            float(scores[k]),
            f"by {by[int(positions[k])]}, an author you follow",
            section=AUTHORS_SECTION,
        )
        for k in order
    ]


def _section_picks(
    ranker: Ranker,
    interests: Sequence[Interest],
    users: Sequence[int],
    candidates: Sequence[Paper],
    rows: np.ndarray,
    blocked: np.ndarray,
    min_score: float,
    *,
    budget: int,
) -> tuple[list[Pick], list[int]]:
    """One section per interest, each ranked by its own row of the ranker's data, sharing `budget`
    picks (`share`: by how many candidates above the relevance floor each has today); returns the
    picks and each one's profile row.  (No diversity re-ranking here: the sections are short and
    already apart.)"""
    scores = np.array(ranker.score(np.asarray(users, dtype=np.int64), rows), dtype=np.float64)
    scores[:, blocked] = -np.inf
    if min_score > -np.inf:
        flat = np.ptp(np.where(np.isfinite(scores), scores, 0), axis=1) <= 1e-6 if scores.shape[1] else None
        low = scores < min_score
        if flat is not None:
            low[flat] = False  # a row that tells no candidate apart says nothing against the floor
        scores[low] = -np.inf
    chosen = share(scores, budget)
    picks: list[Pick] = []
    profile: list[int] = []
    for k, (interest, row, cols) in enumerate(zip(interests, users, chosen)):
        if not len(cols):
            continue
        reasons = ranker.explain(int(row), rows[cols])
        for c, reason in zip(cols.tolist(), reasons):
            picks.append(Pick(candidates[c], float(scores[k, c]), reason, section=interest.name))
            profile.append(int(row))
    return picks, profile


@dataclass
class Due:
    """A subscriber whose digest for `day` is to go out in this run (again, if `existing`)."""

    subscriber: Subscriber
    day: date
    existing: Delivery | None = None
    picks: list[Pick] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # sent, liked, disliked or clicked: not in trending either
    notes: list[str] = field(default_factory=list)  # follow-ups: a liked paper's new version or journal


def due_subscribers(
    store: Store,
    subscribers: Sequence[Subscriber],
    now: datetime,
    report: RunReport,
    *,
    force: bool,
    only: Sequence[str] | None,
    dry_run: bool,
    catch_up_hours: float = 12.0,
) -> list[Due]:
    """Digests to send now: recorded ones still pending (a crash, a server down), then each
    subscriber's digest for the date whose send time passed less than `catch_up_hours` ago.

    A pending digest is retried (same papers, same Message-ID) once its `next_attempt_at` has come,
    until `catch_up_hours` after it was first recorded; then it is marked failed.  A send time
    missed by more than the window is skipped, never sent late in a burst.
    """
    window = timedelta(hours=catch_up_hours)
    pending: dict[int, list[Delivery]] = {}
    if not dry_run:
        for row in store.pending_deliveries([s.id for s in subscribers], now=now):
            pending.setdefault(row.subscriber_id, []).append(row)
    due = []
    if only is not None:
        subscribers = [s for s in subscribers if s.email in only]
    recorded = store.deliveries_on(
        {local_date(now, zone) + timedelta(days=k) for zone in {s.timezone for s in subscribers} for k in (-1, 0)}
    )  # today's and (catching up) yesterday's, in one query
    for sub in subscribers:
        today = local_date(now, sub.timezone)
        retried = set()
        for row in pending.get(sub.id, []):
            retried.add(row.digest_date)
            retry_at = aware(row.next_attempt_at)
            if now > aware(row.created) + window:
                reason = f"gave up: not delivered within {catch_up_hours:g} hours ({row.error or 'interrupted'})"
                store.record_outcome(row, DeliveryStatus.FAILED, now, worker="", error=reason, attempted=False)
                report.outcomes.append(
                    Outcome(sub.email, "failed", row.digest_date, message_id=row.message_id, detail=reason)
                )
            elif retry_at is not None and retry_at > now and not force:
                report.outcomes.append(
                    Outcome(
                        sub.email,
                        "pending",
                        row.digest_date,
                        message_id=row.message_id,
                        detail=f"next try after {retry_at:%Y-%m-%d %H:%M} UTC ({row.error})",
                    )
                )
            else:
                due.append(Due(sub, row.digest_date, row))
        day = today if force else due_day(sub, now, catch_up_hours=catch_up_hours)
        if day is None:
            upcoming = next_send(sub, now).astimezone(ZoneInfo(sub.timezone))
            report.outcomes.append(
                Outcome(sub.email, "not-due", today, detail=f"next digest {upcoming:%a %Y-%m-%d %H:%M} {sub.timezone}")
            )
            continue
        if day in retried:
            continue
        existing = recorded.get((sub.id, day))
        if existing is not None and existing.status in (*DELIVERED, DeliveryStatus.FAILED):
            status = "skipped" if day == today else "not-due"
            report.outcomes.append(
                Outcome(
                    sub.email,
                    status,
                    day,
                    message_id=existing.message_id,
                    detail=f"already {existing.status} for {day}",
                )
            )
            continue
        due.append(Due(sub, day, None if dry_run else existing))
    return due


def _resend_picks(store: Store, ranker: Ranker, data: TrainData, due: Due) -> list[Pick]:
    """The picks of a digest that was recorded but did not go out: exactly the same papers, sections
    and highlights (the reasons as the ranker gives them now, when the row has none)."""
    assert due.existing is not None
    by_id = {p.id: p for p in store.papers(due.existing.papers)}
    picks = picks_from_row(due.existing, by_id)
    if picks and not any(p.reason for p in picks):
        user = data.users.index(due.subscriber.email)
        reasons = ranker.explain(user, data.corpus.ids.indices(p.paper.id for p in picks))
        for pick, reason in zip(picks, reasons):
            pick.reason = reason
    return picks


def _deliver_all(
    store: Store,
    settings: Settings,
    key: str,
    data: TrainData,
    due: Sequence[Due],
    candidates: Sequence[Paper],
    now: datetime,
    report: RunReport,
    *,
    transport: Transport | None,
    dry_run: bool,
    keep_html: bool,
    progress: Progress | None,
    lease: RunLease | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = wall_clock,
    force: bool = False,
) -> None:
    """Send each due digest in turn over one connection, paced and retried by a `Sender`.

    An authentication failure stops the run (`report.fatal`, said once); an unreachable server
    leaves the remaining digests recorded and pending for the next run (`report.unreachable`); a
    lost lease (this process stalled and another run took over) stops sending at once.
    """
    own_transport = transport is None and not dry_run
    transport = transport or (None if dry_run else make_transport(settings))
    worker = sender_name()
    cfg = settings.delivery
    sender = (
        None
        if transport is None
        else Sender(
            transport,
            attempts=cfg.attempts_per_run,
            backoff=cfg.retry_backoff,
            per_second=cfg.max_per_second,
            sleep=sleep,
        )
    )
    try:
        with _stage(progress, "Sending" if not dry_run else "Rendering (dry run)", len(due)) as advance:
            for d in due:
                outcome = Outcome(d.subscriber.email, "pending", d.day, picks=d.picks)
                report.outcomes.append(outcome)
                try:
                    if report.fatal and mails(d.subscriber.delivery):  # a feed-only digest needs no mail server
                        outcome.detail = "not attempted (the run stopped, see the error below)"
                        continue
                    if lease is not None and lease.lost.is_set():
                        outcome.detail = "not attempted: this run lost its lease to another run"
                        continue
                    _one_subscriber(
                        store,
                        settings,
                        key,
                        data,
                        d,
                        candidates,
                        now,
                        outcome,
                        transport=sender,
                        dry_run=dry_run,
                        keep_html=keep_html,
                        unreachable=report.unreachable,
                        worker=worker,
                        clock=clock,
                        force=force,
                    )
                except AuthenticationError as e:
                    report.fatal = str(e)
                    outcome.status, outcome.detail = "pending", str(e)
                except ServerUnavailable as e:  # recorded as pending by _one_subscriber
                    report.unreachable = str(e)
                except StoreError:
                    raise  # the database failed: nothing more can be recorded, so nothing more is sent
                except DigestError as e:
                    outcome.status, outcome.detail = "failed", str(e)
                finally:
                    advance()
    finally:
        if own_transport and transport is not None:
            transport.close()


def _one_subscriber(
    store: Store,
    settings: Settings,
    key: str,
    data: TrainData,
    due: Due,
    candidates: Sequence[Paper],
    now: datetime,
    outcome: Outcome,
    *,
    transport: Sender | None,
    dry_run: bool,
    keep_html: bool,
    unreachable: str = "",
    worker: str = "",
    clock: Callable[[], datetime] = wall_clock,
    force: bool = False,
) -> None:
    """One due digest: recorded (planned) first, claimed like any worker claims it, then sent and
    its outcome recorded through `send_claimed`, the one send step of both modes."""
    sub, day, picks = due.subscriber, due.day, due.picks
    if not picks and settings.delivery.on_empty == "skip":
        since = (now - timedelta(days=settings.ranking.window_days)).date()
        why = (
            f"no new papers since {since} for this reader: none of the {len(candidates)} is in their categories, "
            "not excluded and above the relevance floor"
            if candidates
            else f"no new papers since {since}"
        )
        outcome.status, outcome.detail = "no-papers", f'{why} (nothing sent; on_empty = "skip")'
        return
    trend = trending(data, candidates, {p.paper.id for p in picks} | due.seen, subscriber=sub)
    mid = (
        due.existing.message_id
        if due.existing is not None and due.existing.message_id
        else message_id(parse_sender(settings.smtp.sender), sub.email, day)
    )
    outcome.message_id = mid
    if dry_run:
        try:
            _, _, html, _ = compose(
                settings, key, sub, day, picks, trend, len(candidates), now, clock=clock, notes=due.notes
            )
        except Exception as e:
            outcome.status, outcome.detail = "failed", str(as_render_error(e, sub.email))
            return
        outcome.html_path = save_html(settings, day, sub.email, html)
        outcome.status = "dry-run"
        return
    row = due.existing or store.create_delivery(
        sub.id,
        day,
        [p.paper.id for p in picks],
        mid,
        now,
        trending=[[p.id, c] for p, c in trend],
        **row_fields(picks, due.notes),
    )
    policy = RetryPolicy.of(settings)
    mail = mails(sub.delivery)
    if unreachable and mail:  # recorded (so the same papers go later), not attempted
        retry_at = now + policy.retry_after
        store.record_outcome(
            row,
            DeliveryStatus.PENDING,
            now,
            worker=worker,
            error=unreachable,
            attempted=False,
            next_attempt_at=retry_at,
        )
        outcome.status, outcome.detail = (
            DeliveryStatus.PENDING,
            f"not attempted, server unreachable; next try after {retry_at:%H:%M} UTC",
        )
        return
    claimed = store.claim_deliveries(worker, clock(), ids=[row.id], limit=1, ignore_wait=force, due_at=now)
    if not claimed:
        outcome.status, outcome.detail = "skipped", "held by another sender (a digest worker) right now"
        return
    assert transport is not None

    def build() -> EmailMessage:
        envelope, text, html, unsub = compose(
            settings, key, sub, day, picks, trend, len(candidates), now, clock=clock, notes=row.notes or []
        )
        envelope = replace(envelope, message_id=mid)  # a retry is the same message
        if keep_html:
            outcome.html_path = save_html(settings, day, sub.email, html)
        return build_message(
            envelope,
            text,
            html,
            unsubscribe_url=unsub,
            unsubscribe_mailto=unsubscribe_mailto(envelope.sender.addr_spec, sub.email),
        )

    result = send_claimed(
        store, transport, claimed[0], build, now, worker=worker, policy=policy, email=sub.email, mail=mail
    )
    outcome.status, outcome.detail = result.status, result.detail
    if result.fatal:
        raise AuthenticationError(result.fatal)
    if result.unreachable:
        raise ServerUnavailable(result.unreachable)
