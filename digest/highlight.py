"""The sentence that matters: for each pick, the one abstract sentence closest to the reader's profile.

Closest in the ranker's own TF-IDF space (`Ranker.text_space`: the fitted vectorizer and each
reader's, or each interest's, profile), so no model is downloaded and a sentence is chosen for
the same reasons the paper was.  A sentence sharing no weighted term with the profile is not
claimed: the highlight is then "".  Sentences are whole (`split_sentences` knows "e.g.", "et al.",
initials and decimals), and a very long one is shortened at a word, never inside one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from digest.rank.base import TextSpace

MAX_CHARS = 320  # a highlight longer than this is shortened at a word, with an ellipsis

# Words after which a full stop does not end a sentence (lower case, without the stop).
_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "etc",
        "al",
        "vs",
        "cf",
        "fig",
        "figs",
        "eq",
        "eqs",
        "sec",
        "ref",
        "refs",
        "approx",
        "resp",
        "no",
        "nos",
        "vol",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "jr",
        "sr",
        "ca",
        "viz",
        "incl",
        "esp",
        "est",
        "dept",
        "univ",
        "inc",
        "ltd",
        "co",
        "corp",
        "tab",
        "app",
        "def",
        "thm",
        "lem",
        "prop",
        "cor",
    ]
)
# A candidate end: . ! or ? (with closing quotes or brackets), then white space.
_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_WORD_BEFORE = re.compile(r"([\w.]+)[.!?]*[\"'”’)\]]*\s*$")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order.

    A stop ends a sentence when white space follows and the next word does not start in lower
    case, unless the stop closes an abbreviation ("e.g.", "et al.", "Fig."), an initial ("Y.") or
    a number's dot ("Sec. 3.2" keeps together, since "3.2" has no space).
    """
    text = " ".join(text.split())
    out: list[str] = []
    start = 0
    for m in _END.finditer(text):
        end = m.end()
        nxt = text[end : end + 1]
        if not nxt or nxt.islower():
            continue
        if text[m.start()] == ".":
            before = _WORD_BEFORE.search(text[start : m.start() + 1])
            word = (before.group(1) if before else "").rstrip(".").lower()
            if word in _ABBREVIATIONS or word.rsplit(".", 1)[-1] in _ABBREVIATIONS:
                continue
            if len(word) == 1 and word.isalpha():  # an initial: "Y. Bengio"
                continue
        sentence = text[start:end].strip()
        if sentence:
            out.append(sentence)
        start = end
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def shorten(sentence: str, limit: int = MAX_CHARS) -> str:
    """At most about `limit` characters, cut between words (an ellipsis says so)."""
    if len(sentence) <= limit:
        return sentence
    cut = sentence[: limit + 1].rsplit(" ", 1)[0].rstrip(",;:")
    return (cut or sentence.split(" ", 1)[0]) + " …"


@dataclass
class _Sentences:
    """Every sentence of a set of papers as TF-IDF rows, with each paper's span of rows."""

    texts: list[str]
    matrix: sp.csr_matrix
    spans: dict[str, tuple[int, int]]


def _index(space: TextSpace, papers: dict[str, str]) -> _Sentences:
    texts: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    for pid, abstract in papers.items():
        found = split_sentences(abstract)
        spans[pid] = (len(texts), len(texts) + len(found))
        texts.extend(found)
    if texts:
        matrix = sp.csr_matrix(space.vectorizer.transform(texts), dtype=np.float32)
    else:
        matrix = sp.csr_matrix((0, space.profiles.shape[1]), dtype=np.float32)
    return _Sentences(texts, matrix, spans)


def highlights(space: TextSpace | None, wanted: Sequence[tuple[int, str, str]], *, block: int = 1024) -> list[str]:
    """The highlight of each (profile row, paper id, abstract): the sentence whose TF-IDF vector is
    closest to that row of `space.profiles` ("" without a text space, a sentence or a shared term).

    Each paper's sentences are vectorised once however many readers got it; profiles go in blocks
    of `block` rows against all of them in one sparse product."""
    out = [""] * len(wanted)
    if space is None or not wanted:
        return out
    index = _index(space, {pid: abstract for _, pid, abstract in wanted})
    if not index.texts:
        return out
    rows = sorted({r for r, _, _ in wanted})
    slot = {r: i for i, r in enumerate(rows)}
    by_block: dict[int, list[int]] = {}
    for k, (r, _, _) in enumerate(wanted):
        by_block.setdefault(slot[r] // block, []).append(k)
    sentences_t = index.matrix.T.tocsr()
    for b, ks in by_block.items():
        block_rows = rows[b * block : (b + 1) * block]
        sims = (space.profiles[block_rows] @ sentences_t).toarray()
        for k in ks:
            r, pid, _ = wanted[k]
            a, z = index.spans[pid]
            if z <= a:
                continue
            row = sims[slot[r] - b * block, a:z]
            best = int(np.argmax(row))
            if row[best] > 0:
                out[k] = shorten(index.texts[a + best])
    return out
