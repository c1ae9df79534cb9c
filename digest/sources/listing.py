"""Reads saved paper-listing pages (a title line, then an abstract line, page furniture around).

Readers save pages like Hugging Face's daily-papers list; this importer turns them into records.
It also built the bundled sample corpus (`digest import-listing ../shared/seeds/*.txt`).
A file that is not such a page (binary data, or text with no title-and-abstract pair) is refused
with one line naming it, never read as junk "papers"; a line that is not text is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from digest.errors import DataError
from digest.sources.base import FetchResult, PaperRecord, title_key

# Lines that belong to the page, not to a paper.
_FURNITURE = re.compile(
    r"^(new|subscribe|get trending papers in your (e-?mail )?inbox.*|by\s*ak and the research community"
    r"|(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]* \d{1,2}(, \d{4})?|daily papers|papers)$",
    re.IGNORECASE,
)
_GLUED_SUBSCRIBE = re.compile(r"^Subscribe(?=[A-Z0-9\"'(])")
MAX_TITLE_LEN = 300
_PUNCTUATION = set(" -–—:;,.'’‘\"“”()[]!?&/+*=%$#@~^_<>|{}`…")
MAX_BAD_BYTES = 0.01  # share of bytes that may fail to decode before a file counts as binary


def _is_text(line: str, share: float = 0.9) -> bool:
    """Does the line read as text: nearly all letters, digits, spaces and common punctuation?"""
    good = sum(1 for c in line if c.isalnum() or c in _PUNCTUATION)
    return good >= share * len(line) and any(c.isalpha() for c in line)


def _is_abstract(line: str, title: str) -> bool:
    return len(line) >= 120 and len(line) >= 2 * len(title) and _is_text(line) and len(line.split()) >= 10


def page_problem(data: bytes, text: str) -> str:
    """Why a file is not a saved listing page ("" when it may be one)."""
    if b"\x00" in data or text.count("\ufffd") > MAX_BAD_BYTES * max(len(data), 1):
        return "binary data, not a saved listing page"
    return ""


def parse_listing(text: str, *, source: str = "listing") -> FetchResult:
    """Papers of one saved page; a title without an abstract is kept, lines that fit neither are skipped."""
    result = FetchResult(source)
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    content: list[str] = []
    for line in lines:
        if _FURNITURE.match(line):
            continue
        if not content:
            line = _GLUED_SUBSCRIBE.sub("", line)
        content.append(line)
    i = 0
    while i < len(content):
        title = content[i]
        if len(title) > MAX_TITLE_LEN or not _is_text(title, 0.8):
            result.skipped["text without a title"] += 1
            i += 1
            continue
        abstract = ""
        if i + 1 < len(content) and _is_abstract(content[i + 1], title):
            abstract = content[i + 1]
            i += 1
        i += 1
        try:
            result.records.append(PaperRecord.make(title=title, abstract=abstract, source=source))
        except ValueError as e:
            result.skipped[str(e)] += 1
    return result


def merge_duplicates(records: Iterable[PaperRecord]) -> tuple[list[PaperRecord], int]:
    """One record per title (the longest abstract wins), in first-seen order, and how many merged."""
    by_key: dict[str, PaperRecord] = {}
    merged = 0
    for rec in records:
        key = title_key(rec.title)
        if key in by_key:
            merged += 1
            if len(rec.abstract) > len(by_key[key].abstract):
                by_key[key] = rec
        else:
            by_key[key] = rec
    return list(by_key.values()), merged


def listing_files(path: Path) -> list[Path]:
    """A page file, or every .txt/.html page in a folder, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in (".txt", ".html", ".htm"))
    if path.is_file():
        return [path]
    raise DataError(f"{path}: no such file or folder of saved listing pages")


def read_listings(paths: Iterable[Path], *, source: str = "listing") -> FetchResult:
    """Every paper on the given pages, duplicates across pages merged."""
    result = FetchResult(source)
    records: list[PaperRecord] = []
    paths = list(paths)
    refused: list[str] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e})") from e
        text = data.decode("utf-8", errors="replace")
        page = parse_listing(text, source=source)
        problem = page_problem(data, text)
        if not problem and not any(r.abstract for r in page.records):
            problem = "no paper on it (a title line followed by an abstract line); not a saved listing page"
        if problem:
            refused.append(f"{path}: {problem}")
            result.skip("not a listing page", path.name)
            continue
        records.extend(page.records)
        result.skipped.update(page.skipped)
    if refused and len(refused) == len(paths):
        raise DataError(
            refused[0]
            + (f" (and {len(refused) - 1} more file(s) like it)" if len(refused) > 1 else "")
            + "; nothing was read"
        )
    result.notes.extend(f"refused {line}" for line in refused)
    result.records, merged = merge_duplicates(records)
    if merged:
        result.skipped["duplicate merged"] += merged
    return result
