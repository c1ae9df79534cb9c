"""A reader's own library (Zotero, Mendeley, JabRef, Better BibTeX exports) as liked papers.

`read_library(path)` reads a BibTeX (bibtexparser 2, LaTeX decoded), RIS (rispy) or CSL-JSON file
(Zotero's and Pandoc's) into cleaned `PaperRecord`s: title, abstract when present, authors, year,
DOI and the arXiv id found in `eprint`/`archivePrefix`, `url`, `note`, `journal`, `number` or an
arXiv DOI.  An entry that cannot be a paper (no title) is skipped and named ("zotero.bib: entry
vaswani2017 (line 12): missing title"); the good ones are kept.  A file that cannot be a library at
all (missing, over MAX_LIBRARY_BYTES, binary, no entries) raises one DataError naming the file.

Library papers are old papers: the store keeps them out of the day's candidates
(`Papers.upsert_papers(..., old=True)`), while they still shape the reader's profile.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from digest.errors import DataError
from digest.sources.base import MAX_EXAMPLES, PaperRecord, arxiv_id, load_json

MAX_LIBRARY_BYTES = 20 * 1024 * 1024  # a 10,000-entry export with abstracts is ~15 MB
SOURCE = "library"

_ARXIV_IN_TEXT = re.compile(
    r"(?:arxiv(?:\.org/(?:abs|pdf))?[:/\s.]*|10\.48550/arxiv\.)(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?",
    re.IGNORECASE,
)
_NEW_STYLE_ID = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
_YEAR = re.compile(r"(1[89]\d\d|20\d\d)")
_MONTHS = {
    m: i
    for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)
}


@dataclass
class LibraryResult:
    """What one library file gave: its records, how many entries it had, and a line per problem."""

    path: str
    records: list[PaperRecord] = field(default_factory=list)
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{self.name}: {where}: {what}" if where else f"{self.name}: {what}")

    def summary(self) -> str:
        """ "298 entries, 296 papers, 2 skipped: zotero.bib: entry x (line 9): missing title; ..." """
        line = f"{self.entries} entries, {len(self.records)} papers"
        if self.problems:
            shown = "; ".join(self.problems[:MAX_EXAMPLES]) + ("; ..." if len(self.problems) > MAX_EXAMPLES else "")
            line += f", {len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}: {shown}"
        return line


def read_library(path: Path | str, *, name: str | None = None) -> LibraryResult:
    """The papers of a library file (see the module docstring); DataError if it is no library."""
    path = Path(path).expanduser()
    label = name or path.name
    try:
        size = path.stat().st_size
        if size > MAX_LIBRARY_BYTES:
            raise DataError(f"{label}: {size / 1e6:.0f} MB is too large for a library (at most {_limit()})")
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{label}: file not found ({path})") from e
    except IsADirectoryError as e:
        raise DataError(f"{label}: is a folder, not a library file") from e
    except OSError as e:
        raise DataError(f"{label}: cannot read the file ({e.strerror or e})") from e
    return parse_library(data, label)


def library_payload(result: LibraryResult) -> dict[str, Any]:
    """A parsed library as JSON data, kept with a web sign-up until its address is confirmed."""
    return {
        "name": result.path,
        "entries": result.entries,
        "problems": list(result.problems),
        "records": [
            {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in vars(r).items()
                if v not in ("", 0, None, [])
            }
            for r in result.records
        ],
    }


def library_from_payload(payload: dict[str, Any]) -> LibraryResult:
    """`library_payload`'s data back as a LibraryResult (each record cleaned again: stored data is
    read as untrusted as a file is; one that no longer makes a paper is named and skipped)."""
    result = LibraryResult(str(payload.get("name") or "library"))
    result.entries = int(payload.get("entries") or 0)
    result.problems = [str(x) for x in payload.get("problems") or []]
    for i, raw in enumerate(payload.get("records") or []):
        fields = {k: v for k, v in dict(raw).items() if k in PaperRecord.__dataclass_fields__}
        for when in ("published", "updated"):
            fields[when] = _iso(fields.get(when))
        try:
            result.records.append(PaperRecord.make(**fields))
        except (TypeError, ValueError) as e:
            result.problem(f"record {i + 1}", str(e))
    return result


def _iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _limit() -> str:
    return f"{MAX_LIBRARY_BYTES // (1024 * 1024)} MB"


def parse_library(data: bytes, name: str) -> LibraryResult:
    """The papers of a library file's bytes; `name` (a file name) is used in every message."""
    result = LibraryResult(name)
    if len(data) > MAX_LIBRARY_BYTES:
        raise DataError(f"{name}: {len(data) / 1e6:.0f} MB is too large for a library (at most {_limit()})")
    if b"\x00" in data[:65536] or _binary(data[:65536]):
        raise DataError(f"{name}: not a text file (export the library as BibTeX, RIS or CSL-JSON)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        text = data.decode("cp1252", errors="replace")
        line = data[: e.start].count(b"\n") + 1
        result.problem(f"line {line}", "not UTF-8 text; read as Windows-1252 (export the library as UTF-8)")
    kind = _kind(name, text)
    if kind == "bibtex":
        _bibtex(text, result)
    elif kind == "ris":
        _ris(text, result)
    elif kind == "csl":
        _csl(text, result)
    else:
        raise DataError(f"{name}: not a BibTeX, RIS or CSL-JSON library (no entries found)")
    if not result.entries:
        raise DataError(f"{name}: no entries found (is it a complete {_KIND_NAMES[kind]} export?)")
    return result


_KIND_NAMES = {"bibtex": "BibTeX", "ris": "RIS", "csl": "CSL-JSON"}


def _binary(head: bytes) -> bool:
    """Mostly bytes no text export has (an image, a zip, random data)."""
    if not head:
        return False
    odd = sum(1 for b in head if b < 9 or 13 < b < 32)
    return odd / len(head) > 0.01


def _kind(name: str, text: str) -> str:
    """The format by content (what a file holds wins over its name), else by extension."""
    head = text.lstrip()[:4096]
    if head.startswith(("[", "{")):
        return "csl"
    if re.search(r"^TY  - ", head, re.M):
        return "ris"
    if re.search(r"@\w+\s*[{(]", head):
        return "bibtex"
    lower = name.lower()
    if lower.endswith((".bib", ".bibtex")):
        return "bibtex"
    if lower.endswith(".ris"):
        return "ris"
    if lower.endswith(".json"):
        return "csl"
    return ""


def _record(result: LibraryResult, where: str, **fields: Any) -> None:
    """One entry as a record, or a problem line naming it."""
    result.entries += 1
    try:
        result.records.append(PaperRecord.make(source=SOURCE, **fields))
    except ValueError as e:
        result.problem(where, str(e))


def _date(year: Any, month: Any = None, day: Any = None) -> datetime | None:
    found = _YEAR.search(str(year or ""))
    if not found:
        return None
    m = str(month or "").strip().lower()[:3]
    month_no = _MONTHS.get(m) or (int(m) if m.isdigit() and 1 <= int(m) <= 12 else 1)
    d = int(str(day)) if str(day or "").strip().isdigit() else 1
    try:
        return datetime(int(found.group(1)), month_no, d, tzinfo=UTC)
    except ValueError:  # 30 February, day 0: the month is still right
        return datetime(int(found.group(1)), month_no, 1, tzinfo=UTC)


def _iso_date(value: Any) -> datetime | None:
    """biblatex's `date` ("2023-05-29", "2023-05", "2023", or a range "2023-05/2023-06")."""
    m = re.match(r"\s*(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?", str(value or ""))
    return _date(m.group(1), m.group(2), m.group(3)) if m else None


def find_arxiv(eprint: Any = "", prefix: Any = "", texts: Iterable[Any] = ()) -> str:
    """The arXiv id an entry names: `eprint` (with archivePrefix/eprinttype arXiv, or a new-style
    id), else the first arXiv URL, "arXiv:" reference or arXiv DOI in `texts`; "" if none."""
    eprint = str(eprint or "").strip()
    if eprint and (str(prefix or "").strip().lower() == "arxiv" or _NEW_STYLE_ID.match(eprint)):
        found = arxiv_id(eprint) or arxiv_id(f"arxiv:{eprint}")
        if found:
            return found
    for text in texts:
        if not isinstance(text, str):
            continue
        m = _ARXIV_IN_TEXT.search(text)
        if m and (found := arxiv_id(m.group(1))):
            return found
    return ""


# -- BibTeX -------------------------------------------------------------------------------------


def _bibtex(text: str, result: LibraryResult) -> None:
    import bibtexparser
    from bibtexparser import middlewares as mw
    from bibtexparser.model import DuplicateBlockKeyBlock, ParsingFailedBlock

    logging.getLogger("bibtexparser").setLevel(logging.ERROR)  # it logs each failed block; we name them
    library = bibtexparser.parse_string(
        text, append_middleware=[mw.SeparateCoAuthors(), mw.SplitNameParts()]
    )  # LaTeX is decoded below, only in the fields we keep (pylatexenc costs ~15 ms an abstract)
    for block in library.failed_blocks:
        key = getattr(block, "key", "") or ""
        if not key and (m := re.match(r"\s*@\w+\s*[{(]\s*([^,\s]{1,200}),", getattr(block, "raw", "") or "")):
            key = m.group(1)
        line = (block.start_line or 0) + 1
        where = f"entry {key} (line {line})" if key else f"line {line}"
        if isinstance(block, DuplicateBlockKeyBlock):
            result.problem(where, f"key {key} is used twice; the first entry was kept")
        elif isinstance(block, ParsingFailedBlock):
            result.entries += 1
            result.problem(where, "not valid BibTeX (an unclosed brace or quote?); skipped")
    for entry in library.entries:
        f = {
            k.lower(): v.value if k.lower() in ("author", "editor") else _latex(v.value)
            for k, v in entry.fields_dict.items()
            if k.lower() in _KEPT
        }
        where = f"entry {entry.key} (line {(entry.start_line or 0) + 1})"
        if entry.entry_type.lower() in ("comment", "preamble", "string"):
            continue
        authors = f.get("author") or f.get("editor") or []
        authors = [_person(a) for a in (authors if isinstance(authors, list) else [authors])]
        urls = [f.get("url", ""), f.get("note", ""), f.get("journal", ""), f.get("number", ""), f.get("doi", "")]
        urls += [f.get("howpublished", ""), f.get("eprint", "")]
        _record(
            result,
            where,
            title=_unbrace(f.get("title", "")),
            id=find_arxiv(f.get("eprint"), f.get("archiveprefix") or f.get("eprinttype"), urls),
            abstract=_unbrace(f.get("abstract", "")),
            authors=authors,
            url=f.get("url", ""),
            published=_date(f.get("year"), f.get("month"), f.get("day")) or _iso_date(f.get("date")),
            doi=f.get("doi", ""),
            journal_ref=_unbrace(f.get("journal") or f.get("booktitle") or ""),
            categories=[c.strip() for c in str(f.get("primaryclass", "")).split(",") if c.strip()],
        )


_KEPT = {"title", "abstract", "author", "editor", "year", "date", "month", "day", "doi", "url", "eprint"}
_KEPT |= {"archiveprefix", "eprinttype", "primaryclass", "journal", "booktitle", "note", "number", "howpublished"}
_SIMPLE_ESCAPES = re.compile(r"\\([{}%&#_$])")
# The bits of a field that are LaTeX: a math span, or a command with at most one short argument
# ({\\"u}, \\'{e}, \\ss, \\textbf{x}); everything between them is plain text.
_LATEX_BIT = re.compile(
    r"\$[^$]{1,300}\$"  # math
    r"|\{?\\[^a-zA-Z\s]\s*(?:\{[^{}\\]{0,80}\}|[a-zA-Z])?\}?"  # an accent or escape: \\'e, {\\"u}, \\%
    r"|\{?\\[a-zA-Z]+\*?(?:\s*\{[^{}\\]{0,80}\})?\}?"  # a command: \\ss, \\c{c}, \\textbf{x}
)


def _latex(value: Any) -> str:
    """BibTeX field text as Unicode: accents ({\\"u}), math ($\\alpha$-helix becomes α-helix),
    escapes (\\%) decoded; protective braces are left to `_unbrace`.  Each LaTeX bit is decoded
    alone (and remembered): pylatexenc takes ~10 ms for a whole abstract, a 5,000-entry library
    would take minutes."""
    if not isinstance(value, str):
        return ""
    if not any(c in value for c in "\\$~"):
        return value
    out, at = [], 0
    for m in _LATEX_BIT.finditer(value):
        out.append(_SIMPLE_ESCAPES.sub(r"\1", value[at : m.start()]).replace("~", " "))
        bit = m.group(0)
        out.append(_SIMPLE_ESCAPES.sub(r"\1", bit) if _SIMPLE_ESCAPES.fullmatch(bit) else _latex_bit(bit))
        at = m.end()
    out.append(_SIMPLE_ESCAPES.sub(r"\1", value[at:]).replace("~", " "))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _latex_bit(bit: str) -> str:
    from pylatexenc.latex2text import LatexNodes2Text

    try:
        return str(LatexNodes2Text(math_mode="text").latex_to_text(bit))
    except Exception:  # pylatexenc gives up on some malformed input: keep the raw text (cleaned later)
        return bit


def _person(name: Any) -> str:
    """'Vaswani, Ashish' (split by bibtexparser into name parts) as 'Ashish Vaswani'."""
    parts = [getattr(name, p, []) for p in ("first", "von", "last", "jr")] if not isinstance(name, str) else [[name]]
    return _unbrace(_latex(" ".join(w for part in parts for w in part)))


def _unbrace(value: Any) -> str:
    """BibTeX text without its protective braces ({{BERT}}, {A}ttention) and leftover commands."""
    if not isinstance(value, str):
        return ""
    text = re.sub(r"\\[a-zA-Z]+\*?\s*", "", value) if "\\" in value else value
    return text.replace("{", "").replace("}", "")


# -- RIS ----------------------------------------------------------------------------------------


def _ris(text: str, result: LibraryResult) -> None:
    import rispy

    chunks = re.split(r"(?m)^(?=TY  - )", text)
    line = 1
    for chunk in chunks:
        start, line = line, line + chunk.count("\n")
        if not chunk.strip().startswith("TY  - "):
            continue
        try:
            entries = rispy.loads(chunk if re.search(r"(?m)^ER  -", chunk) else chunk + "\nER  - \n")
        except Exception as e:  # rispy raises IOError/KeyError on a malformed reference
            result.entries += 1
            result.problem(f"reference at line {start}", f"not valid RIS ({e}); skipped")
            continue
        for ref in entries:
            where = f"reference {ref.get('id') or ''} (line {start})".replace("reference  ", "reference ")
            urls = list(ref.get("urls") or []) + list(ref.get("notes") or [])
            urls += [ref.get("doi", ""), ref.get("number", ""), ref.get("journal_name", ""), ref.get("note", "")]
            _record(
                result,
                where,
                title=ref.get("title") or ref.get("primary_title") or ref.get("translated_title") or "",
                id=find_arxiv(texts=urls),
                abstract=ref.get("abstract") or ref.get("notes_abstract") or "",  # AB (Zotero), N2 (Mendeley, EndNote)
                authors=[_flip(a) for a in ref.get("authors") or ref.get("first_authors") or []],
                url=next(iter(ref.get("urls") or []), ""),
                published=_ris_date(ref.get("date")) or _date(ref.get("year") or ref.get("publication_year")),
                doi=ref.get("doi", ""),
                journal_ref=ref.get("secondary_title") or ref.get("journal_name") or "",
            )


def _ris_date(value: Any) -> datetime | None:
    """RIS's DA/Y1 "2023/05/29/" (or "2023/05//", "2023///"): a whole date, when it has one."""
    m = re.match(r"\s*(\d{4})[/-](\d{1,2})(?:[/-](\d{1,2}))?", str(value or ""))
    return _date(m.group(1), m.group(2), m.group(3)) if m else None


def _flip(name: Any) -> str:
    """RIS's 'Family, Given' as 'Given Family'."""
    family, _, given = str(name).partition(",")
    return f"{given.strip()} {family.strip()}".strip() if given.strip() else family.strip()


# -- CSL-JSON -----------------------------------------------------------------------------------


def _csl(text: str, result: LibraryResult) -> None:
    try:
        items = load_json(text)
    except ValueError as e:
        raise DataError(f"{result.name}: not valid CSL-JSON ({str(e)[:200]})") from e
    if isinstance(items, dict):
        items = items.get("items", [items])  # one item, or Zotero's {"items": [...]}
    if not isinstance(items, list):
        raise DataError(f"{result.name}: not a CSL-JSON list of items")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            result.entries += 1
            result.problem(f"item {i + 1}", "not a JSON object; skipped")
            continue
        where = f"item {str(item.get('id') or i + 1)[:80]}"
        parts = (item.get("issued") or {}).get("date-parts") if isinstance(item.get("issued"), dict) else None
        first = parts[0] if isinstance(parts, list) and parts and isinstance(parts[0], list) else []
        texts = [item.get(k, "") for k in ("URL", "number", "note", "DOI", "container-title", "archive_location")]
        _record(
            result,
            where,
            title=item.get("title", ""),
            id=find_arxiv(texts=texts),
            abstract=item.get("abstract", ""),
            authors=[_csl_name(a) for a in item.get("author") or [] if isinstance(a, dict)],
            url=item.get("URL", ""),
            published=(_date(*([*first, None, None, None])[:3]) if first else None)
            or _csl_raw_date(item.get("issued")),
            doi=item.get("DOI", ""),
            journal_ref=item.get("container-title", ""),
        )


def _csl_raw_date(issued: Any) -> datetime | None:
    """CSL's other spellings of a date: {"raw": "2009-06"}, {"literal": "Spring 2009"}, or a bare string."""
    text = (
        issued
        if isinstance(issued, str)
        else (issued.get("raw") or issued.get("literal"))
        if isinstance(issued, dict)
        else ""
    )
    return _iso_date(text) or _date(text)


def _csl_name(name: dict[str, Any]) -> str:
    if name.get("literal"):
        return str(name["literal"])
    return " ".join(str(p) for p in (name.get("given"), name.get("non-dropping-particle"), name.get("family")) if p)
