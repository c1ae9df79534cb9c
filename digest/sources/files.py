"""Local paper files: JSON Lines (one paper per line) and the bundled sample corpus.

A malformed line is skipped and counted, never fatal: one bad record must not cost the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from digest.errors import DataError
from digest.sources.base import FetchResult, PaperRecord, load_json


def _date(value: Any) -> datetime | None:
    if not value or not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1990 <= parsed.year <= 2100:
        return None
    return parsed


def record_from_mapping(item: Mapping[str, Any], *, source: str) -> PaperRecord:
    """A record from a JSON object; raises ValueError naming what is wrong."""
    if not isinstance(item, Mapping):
        raise ValueError("not a JSON object")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("missing title")
    pid = item.get("id")
    authors = item.get("authors") or []
    if isinstance(authors, str):
        authors = [a.strip() for a in authors.split(",")]
    elif not isinstance(authors, list):
        authors = []
    categories = item.get("categories") or []
    return PaperRecord.make(  # cleans and bounds every field (ids, URLs, counts included)
        id=pid if isinstance(pid, (str, int)) and not isinstance(pid, bool) else "",
        title=title,
        abstract=item.get("abstract") or item.get("summary") or "",
        authors=[a.get("name") if isinstance(a, dict) else a for a in authors],
        url=item.get("url") or "",
        pdf_url=item.get("pdf_url") or "",
        published=_date(item.get("published")),
        updated=_date(item.get("updated")),
        categories=categories if isinstance(categories, list) else [],
        source=source,
        upvotes=item.get("upvotes") or 0,
        comments=item.get("comments") or 0,
    )


def read_jsonl(path: Path, *, source: str = "jsonl") -> FetchResult:
    """Every good line of a JSON Lines file; bad lines counted under `skipped`."""
    result = FetchResult(source)
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    seen: set[str] = set()
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                rec = record_from_mapping(load_json(line), source=source)
            except json.JSONDecodeError:
                result.skip("invalid JSON", where)
                continue
            except (ValueError, TypeError) as e:
                result.skip(str(e)[:100], where)
                continue
            if rec.id in seen:
                result.skip("duplicate id", where)
                continue
            seen.add(rec.id)
            result.records.append(rec)
    return result


def write_jsonl(records: Iterable[PaperRecord], path: Path) -> int:
    """Write records as JSON Lines (the sample corpus format); returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for rec in records:
            row: dict[str, object] = {"id": rec.id, "title": rec.title, "abstract": rec.abstract}
            if rec.authors:
                row["authors"] = rec.authors
            if rec.url:
                row["url"] = rec.url
            if rec.published:
                row["published"] = rec.published.isoformat()
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
