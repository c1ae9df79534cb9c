"""Authors a reader follows: which of a paper's authors is one of them, by normalised name or ORCID iD.

Names are compared normalised (accents, case, hyphens and dots aside; "Bengio, Yoshua" read as
"Yoshua Bengio"): the family names must be equal and the first given names must agree, where an
initial agrees with any name it begins ("Y." with "Yoshua").  A match by initial counts only when
exactly one followed name fits it, so following "Yoshua Bengio" and "Yves Bengio" makes a paper by
"Y. Bengio" nobody's.  Middle names and initials are ignored when one side lacks them and must
agree when both give them.  A namesake with another first name ("Samy Bengio") is never matched;
two people of the very same name are (nothing in a name tells them apart).  ORCID iDs match only
where a source puts one in the author's entry, which ours rarely do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

_ORCID = re.compile(r"\b(\d{4}-\d{4}-\d{4}-\d{3}[\dX])\b", re.IGNORECASE)
_PARTICLES = frozenset(
    ["van", "von", "der", "de", "del", "della", "di", "da", "du", "le", "la", "dos", "das", "ten", "ter"]
)
_SUFFIXES = frozenset(["jr", "sr", "ii", "iii", "iv"])


@dataclass(frozen=True)
class Name:
    """A person's name, normalised: given names (each a word or an initial) and the family name."""

    given: tuple[str, ...]
    family: str

    def fits(self, other: Name) -> str:
        """ "full" when the first given names are the same word, "initial" when they agree only by an
        initial ("Y." and "Yoshua"), "" when they differ (or the family names do)."""
        if self.family != other.family or not self.given or not other.given:
            return ""
        for a, b in zip(self.given, other.given):
            if (a != b) if len(a) > 1 and len(b) > 1 else a[0] != b[0]:
                return ""
        return "full" if self.given[0] == other.given[0] else "initial"


@lru_cache(maxsize=65536)
def parse_name(text: str) -> Name | None:
    """A name as `Name`, or None when it is not a personal name of two words or more."""
    text = _ORCID.sub(" ", text)
    text = re.sub(r"\(.*?\)", " ", text)  # "(MIT)", "(0000-...)"
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    if "," in folded:
        family, _, given = folded.partition(",")
        if given.strip() and given.strip().split()[0].strip(".") not in _SUFFIXES:
            folded = f"{given} {family}"
    words = [w for w in re.split(r"[\s\-‐‑.]+|(?<=\.)", folded.replace(",", " ")) if w]
    words = [re.sub(r"[^\w]", "", w) for w in words]
    words = [w for w in words if w and w not in _SUFFIXES]
    if len(words) < 2:
        return None
    # the family name: the last word, with the particles before it ("van der Maaten")
    k = len(words) - 1
    while k > 1 and words[k - 1] in _PARTICLES:
        k -= 1
    family = " ".join(words[k:])
    return Name(tuple(words[:k]), family)


@dataclass(frozen=True)
class Followed:
    """A reader's followed authors, parsed once: (as written, name) pairs and ORCID iDs."""

    names: tuple[tuple[str, Name], ...]
    orcids: frozenset[str]

    @classmethod
    def of(cls, entries: Sequence[str]) -> Followed:
        names, orcids = [], set()
        for entry in entries:
            found = _ORCID.fullmatch(entry.strip())
            if found:
                orcids.add(found.group(1).upper())
                continue
            name = parse_name(entry)
            if name is not None:
                names.append((entry, name))
        return cls(tuple(names), frozenset(orcids))

    def __bool__(self) -> bool:
        return bool(self.names or self.orcids)

    def match(self, authors: Sequence[str]) -> str:
        """The first of a paper's authors who is a followed one, as the paper writes it ("" if none)."""
        for author in authors:
            if self.orcids and any(o.upper() in self.orcids for o in _ORCID.findall(author)):
                return _ORCID.sub("", author).strip(" ()")
            name = parse_name(author)
            if name is None:
                continue
            fits = [how for _, followed in self.names if (how := followed.fits(name))]
            if "full" in fits or fits == ["initial"]:
                return author
        return ""


class AuthorIndex:
    """The day's candidates by their authors' family names (and ORCID iDs), built once per run, so
    finding a reader's followed authors among thousands of candidates is a few lookups."""

    def __init__(self, authors: Sequence[Sequence[str]]) -> None:
        self.by_family: dict[str, list[tuple[int, str, Name]]] = {}
        self.by_orcid: dict[str, list[tuple[int, str]]] = {}
        for i, names in enumerate(authors):
            for author in names:
                for orcid in _ORCID.findall(author):
                    self.by_orcid.setdefault(orcid.upper(), []).append((i, _ORCID.sub("", author).strip(" ()")))
                name = parse_name(author)
                if name is not None:
                    self.by_family.setdefault(name.family, []).append((i, author, name))

    def papers_by(self, followed: Followed) -> dict[int, str]:
        """Candidate -> the first of its authors (in the paper's order) who is a followed one."""
        found: dict[int, tuple[int, str]] = {}  # candidate -> (author position, as written)
        for orcid in followed.orcids:
            for i, author in self.by_orcid.get(orcid, ()):
                found.setdefault(i, (0, author))
        families = {name.family for _, name in followed.names}
        for family in families:
            mine = [name for _, name in followed.names if name.family == family]
            for i, author, name in self.by_family.get(family, ()):
                fits = [how for f in mine if (how := f.fits(name))]
                if "full" in fits or fits == ["initial"]:
                    found.setdefault(i, (1, author))
        return {i: author for i, (_, author) in sorted(found.items())}
