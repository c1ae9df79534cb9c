"""A reader's library (Zotero/Mendeley/JabRef exports) as liked papers: read, merged, kept out of the news."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from digest.db import Store
from digest.errors import DataError
from digest.pipeline import run_daily, sync_libraries, sync_subscribers
from digest.sources.library import MAX_LIBRARY_BYTES, parse_library, read_library

from .conftest import ConfigFactory

DATA = Path(__file__).parent / "data" / "libraries"
SAMPLE = Path(__file__).parent.parent / "digest" / "data" / "sample_papers.jsonl"
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
SAME_ITEMS = {"2203.02155", "1706.03762"}  # in all three exports
SCHMIDHUBER_DOI = "10.1016/j.neunet.2014.09.003"


def test_zotero_bibtex_export() -> None:
    result = read_library(DATA / "zotero.bib")
    papers = {r.id: r for r in result.records}
    assert set(papers) >= SAME_ITEMS | {"2305.18290", "1512.03385"}  # eprint, url, number, note
    dpo = papers["2305.18290"]
    assert dpo.title == "Direct Preference Optimization: Your Language Model Is Secretly a Reward Model"  # {{braces}}
    assert dpo.abstract.startswith("While large-scale unsupervised language models")
    assert dpo.authors[0] == "Rafael Rafailov" and dpo.doi == "10.48550/arxiv.2305.18290"
    assert dpo.published == datetime(2023, 5, 1, tzinfo=UTC)
    attention = papers["1706.03762"]
    assert attention.title == "Attention Is All You Need" and attention.abstract == ""  # no abstract: fine
    assert "Łukasz Kaiser" in attention.authors  # {\L}ukasz
    schmidhuber = next(r for r in result.records if r.doi == SCHMIDHUBER_DOI)
    assert schmidhuber.authors == ["Jürgen Schmidhuber"]  # J{\"u}rgen
    assert schmidhuber.title == "Deep Learning in Neural Networks: An Overview"  # the first of the duplicate keys
    assert result.entries == 6 and len(result.records) == 5
    assert result.problems == [
        "zotero.bib: entry schmidhuberDeepLearningNeural2015 (line 56): key schmidhuberDeepLearningNeural2015 "
        "is used twice; the first entry was kept",
        "zotero.bib: entry noTitleEntry2024 (line 71): missing title",
    ]


@pytest.mark.parametrize("name", ["zotero.ris", "zotero.json"])
def test_ris_and_csl_json_exports_of_the_same_items(name: str) -> None:
    result = read_library(DATA / name)
    papers = {r.id: r for r in result.records}
    assert set(papers) >= SAME_ITEMS
    assert papers["2203.02155"].authors[:2] == ["Long Ouyang", "Jeff Wu"]
    assert papers["2203.02155"].abstract.startswith("Making language models bigger")
    assert any(r.doi == SCHMIDHUBER_DOI and r.authors == ["Jürgen Schmidhuber"] for r in result.records)
    assert len(result.problems) == 1 and result.problems[0].startswith(f"{name}: ")
    assert result.problems[0].endswith("missing title")


@pytest.mark.parametrize(
    "name, expected",
    [
        (  # Better BibTeX / biblatex: @online, eprinttype, date = {...}, CRLF, math in a title
            "biblatex-crlf.bib",
            [
                (
                    "2305.18290",
                    "Direct Preference Optimization: Your Language Model Is Secretly a Reward Model",
                    "2023-05-29",
                ),
                (None, "A study of α-helices & DNA", "2019-01-01"),
                (None, "Technical report on things", "2020-01-01"),
                (None, "My thesis", "2021-01-01"),
            ],
        ),
        (  # Zotero's PREPRINT with DA, and Mendeley's T1/A1/Y1/N2, behind a BOM with CRLF lines
            "mendeley-bom-crlf.ris",
            [
                (
                    "2305.18290",
                    "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
                    "2023-05-29",
                ),
                (None, "A Mendeley article", "2019-01-01"),
            ],
        ),
        (  # CSL-JSON dates as date-parts strings, "raw", and a season
            "csl-date-forms.json",
            [
                ("2305.18290", "Direct Preference Optimization", "2023-05-29"),
                (None, "Old conference paper", "2009-01-01"),
                (None, "Season date", "2011-01-01"),
            ],
        ),
    ],
)
def test_the_export_dialects_of_other_tools(name: str, expected: list[tuple[str | None, str, str]]) -> None:
    result = read_library(DATA / name)
    assert result.problems == []
    got = [(r.id if r.id[0].isdigit() else None, r.title, r.published.date().isoformat()) for r in result.records]
    assert got == expected
    authors = {r.title: r.authors for r in result.records}
    if name.endswith(".bib"):
        assert authors[expected[0][1]] == ["Rafael Rafailov", "Archit Sharma", "Jørgen Müller"]
    if name.endswith(".ris"):
        [mendeley] = [r for r in result.records if r.title == "A Mendeley article"]
        assert mendeley.abstract == "The abstract in N2." and mendeley.journal_ref == "Nature"


@pytest.mark.parametrize(
    "latex, text",
    [
        (r"M{\"u}ller and Andr\'e d\'elai", "Müller and André délai"),
        (
            r"\"{u}ber \c{c}a \v{s}ir \ss{} {\o}rsted Schr\"odinger \`a la \^{i}le",
            "über ça šir ß ørsted Schrödinger à la île",
        ),
        (r"A study of $\alpha$-helices \& {DNA} at 50\% cost \$5", "A study of α-helices & DNA at 50% cost $5"),
        (
            r"\textbf{Bold} and \emph{a phrase with {nested}} braces, {{BERT}}: {P}re-training",
            "Bold and a phrase with nested braces, BERT: Pre-training",
        ),
        (
            r"$O(n^2)$ time, $\mathcal{L}_{\text{KL}}$ and an unclosed $ sign",
            "O(n^2) time, ℒ_KL and an unclosed $ sign",
        ),
    ],
)
def test_latex_in_fields_becomes_text(latex: str, text: str) -> None:
    [record] = parse_library(f"@misc{{k, title = {{{latex}}}}}".encode(), "x.bib").records
    assert record.title == text


def test_format_is_sniffed_without_an_extension() -> None:
    for name in ("zotero.bib", "zotero.ris", "zotero.json"):
        records = parse_library((DATA / name).read_bytes(), "export.txt").records
        assert {r.id for r in records} >= SAME_ITEMS, name


def test_truncated_bibtex_keeps_every_good_entry() -> None:
    data = (DATA / "zotero.bib").read_bytes()
    result = parse_library(data[: data.index(b"Rafailov") + 40], "cut.bib")
    assert [r.id for r in result.records] == ["2203.02155", "1706.03762"]
    assert result.problems == [
        "cut.bib: entry rafailovDirectPreferenceOptimization2023 (line 30): not valid BibTeX "
        "(an unclosed brace or quote?); skipped"
    ]


def test_latin1_file_is_read_and_said_once() -> None:
    text = (
        "@article{k1,\n  title = {Deep Learning: An Overview},\n  author = {Schmidhuber, Jürgen},\n  year = {2015}\n}\n"
    )
    result = parse_library(text.encode("latin-1"), "mendeley.bib")
    assert [r.authors for r in result.records] == [["Jürgen Schmidhuber"]]
    assert result.problems == [
        "mendeley.bib: line 3: not UTF-8 text; read as Windows-1252 (export the library as UTF-8)"
    ]


@pytest.mark.parametrize(
    "data, message",
    [
        (random.Random(1).randbytes(5000), "garbage.bib: not a text file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "garbage.bib: not a text file"),
        (b"just some notes\nnothing here\n", "garbage.bib: no entries found"),
        (b"", "garbage.bib: no entries found"),
    ],
)
def test_unreadable_files_raise_one_line_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(DataError) as err:
        parse_library(data, "garbage.bib")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_broken_csl_json_names_the_file() -> None:
    with pytest.raises(DataError, match=r"^lib.json: not valid CSL-JSON"):
        parse_library(b'[{"title": "x"', "lib.json")
    result = parse_library(json.dumps([{"title": "Fine"}, 3, {"author": []}]).encode(), "lib.json")
    assert [r.title for r in result.records] == ["Fine"]
    assert result.problems == ["lib.json: item 2: not a JSON object; skipped", "lib.json: item 3: missing title"]


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "huge.bib"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    assert big.stat().st_size > MAX_LIBRARY_BYTES
    with pytest.raises(DataError, match=r"^huge.bib: 52 MB is too large for a library \(at most 20 MB\)$"):
        read_library(big)


def test_paper_text_from_a_library_is_cleaned() -> None:
    text = '[{"title": "<script>alert(1)</script>Real \\u202etitle", "URL": "javascript:alert(1)", "abstract": "<b>bold</b>"}]'
    (record,) = parse_library(text.encode(), "x.json").records
    assert record.title == "Real title" and record.url == "" and record.abstract == "bold"


# -- into the store ------------------------------------------------------------------------------

READER = """
[[sources]]
kind = "sample"

[[subscribers]]
email = "ada@example.org"
send_at = "07:00"
library = [{paths}]

[[subscribers]]
email = "bob@example.org"
send_at = "07:00"
liked = ["A ConvNet for the 2020s"]
"""


def test_library_merges_with_stored_papers_and_follows_the_file(make_config: ConfigFactory, tmp_path: Path) -> None:
    lib = tmp_path / "zotero.bib"
    lib.write_bytes((DATA / "zotero.bib").read_bytes())
    settings = make_config(READER.format(paths='"zotero.bib"'))
    store = Store(settings.database_url)
    try:
        from digest.pipeline import ingest

        ingest(store, settings, NOW)
        sync_subscribers(store, settings, NOW)
        before = store.paper_count()
        lines = sync_libraries(store, settings, NOW)
        assert lines == [
            "ada@example.org: library zotero.bib: 6 entries, 5 papers, 2 problems: "
            + "zotero.bib: entry schmidhuberDeepLearningNeural2015 (line 56): key schmidhuberDeepLearningNeural2015 "
            "is used twice; the first entry was kept; zotero.bib: entry noTitleEntry2024 (line 71): missing title; "
            "5 liked (4 new papers, 1 already known)"
        ]
        assert store.paper_count() == before + 4
        ada = store.subscriber(email="ada@example.org")
        assert ada is not None
        liked = {p.title: origin for p, origin in store.liked_papers(ada.id)}
        assert len(liked) == 5 and set(liked.values()) == {f"library:{lib.resolve()}"}
        # the sample's "Deep Residual Learning for Image Recognition" is the one already known: merged by title
        known = [p for p in store.papers() if p.title_key == "deep residual learning for image recognition"]
        assert len(known) == 1 and known[0].first_seen.year == 2026

        assert sync_libraries(store, settings, NOW + timedelta(hours=1)) == []  # unchanged: not read again
        lib.write_text(lib.read_text(encoding="utf-8").split("@inproceedings{heDeep")[0], encoding="utf-8")
        (line,) = sync_libraries(store, settings, NOW + timedelta(hours=2))
        assert "4 liked" in line
        assert len(store.liked_papers(ada.id)) == 4  # the dropped entry's like went, exactly that one

        lib.write_bytes(b"\x00\x01garbage" * 100)
        (line,) = sync_libraries(store, settings, NOW + timedelta(hours=3))
        assert line == (
            "ada@example.org: library zotero.bib: failed: zotero.bib: not a text file "
            "(export the library as BibTeX, RIS or CSL-JSON) (its likes are kept as they were)"
        )
        assert len(store.liked_papers(ada.id)) == 4

        settings = make_config(READER.format(paths=""))
        sync_subscribers(store, settings, NOW)
        sync_libraries(store, settings, NOW + timedelta(hours=4))
        assert store.liked_papers(ada.id) == []  # the file left the config: its likes went with it
    finally:
        store.close()


def test_match_order_arxiv_then_doi_then_title(store: Store) -> None:
    from digest.sources.base import PaperRecord

    store.upsert_papers(
        [
            PaperRecord.make(id="2305.18290", title="DPO, as arXiv has it"),
            PaperRecord.make(id="journal-1", title="Some other title", doi="10.1016/J.NEUNET.2014.09.003"),
            PaperRecord.make(id="listing-1", title="Attention is all you need"),
        ],
        NOW,
    )
    result = read_library(DATA / "zotero.bib")
    matched = {r.title: r.id for r in store.match_records(result.records)}
    assert matched["Direct Preference Optimization: Your Language Model Is Secretly a Reward Model"] == "2305.18290"
    assert matched["Deep Learning in Neural Networks: An Overview"] == "journal-1"  # by DOI
    assert matched["Attention Is All You Need"] == "listing-1"  # by title (the arXiv id is not stored)
    counts = store.upsert_papers(store.match_records(result.records), NOW, old=True)
    assert counts.new == 2  # Ouyang and He
    (dpo,) = store.papers(["2305.18290"])
    assert dpo.title == "DPO, as arXiv has it" and dpo.abstract.startswith("While")  # blanks filled, nothing replaced
    assert store.recent_paper_ids(NOW - timedelta(days=1)) and "2203.02155" not in store.recent_paper_ids(
        datetime(2000, 1, 1, tzinfo=UTC)
    )  # a library's new paper is never news, whatever its date


def test_a_source_that_fetches_a_library_paper_makes_it_news(store: Store) -> None:
    from digest.sources.base import PaperRecord

    store.upsert_papers([PaperRecord.make(id="2612.00001", title="Fresh", published=NOW)], NOW, old=True)
    assert store.recent_paper_ids(NOW - timedelta(days=2)) == []
    store.upsert_papers([PaperRecord.make(id="2612.00001", title="Fresh", published=NOW, source="arxiv")], NOW)
    assert store.recent_paper_ids(NOW - timedelta(days=2)) == ["2612.00001"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "digest", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_library_command(make_config: ConfigFactory, tmp_path: Path) -> None:
    settings = make_config(READER.format(paths=""))
    config = str(settings.config_path)
    done = cli("import-library", str(DATA / "zotero.ris"), "--email", "ada@example.org", "-c", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "ada@example.org: library zotero.ris: 4 entries, 3 papers, 1 problem: zotero.ris: reference (line 34): "
        "missing title; 3 liked (3 new papers, 0 already known)"
    )
    again = cli("import-library", str(DATA / "zotero.json"), "--email", "ada@example.org", "-c", config, cwd=tmp_path)
    assert "3 liked (0 new papers, 3 already known)" in again.stdout  # the same items, merged
    garbage = tmp_path / "lib.bib"
    garbage.write_bytes(bytes(range(256)) * 40)
    bad = cli("import-library", str(garbage), "--email", "ada@example.org", "-c", config, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"config: {config}",  # every command says which config it read
        "error: lib.bib: not a text file (export the library as BibTeX, RIS or CSL-JSON)",
    ]
    nobody = cli("import-library", str(DATA / "zotero.ris"), "--email", "eve@example.org", "-c", config, cwd=tmp_path)
    assert nobody.returncode == 2 and "no reader 'eve@example.org'" in nobody.stderr
    store = Store(settings.database_url)
    try:
        ada = store.subscriber(email="ada@example.org")
        assert ada is not None
        likes = store.liked_papers(ada.id)
        assert sorted(origin for _, origin in likes) == ["import:zotero.json"] * 3 + ["import:zotero.ris"] * 3
    finally:
        store.close()


# -- the whole issue's "done when" ---------------------------------------------------------------


VISION = re.compile(r"image|vision|visual|convolution|segmentation|detection|video|pixel|3d|point cloud|imagenet", re.I)


def vision_library(folder: Path, count: int = 300) -> tuple[Path, Path]:
    """A Zotero-like BibTeX export of `count` computer-vision papers from the bundled sample (their
    titles name vision, or their abstracts do), and the rest of the sample as a JSON Lines source:
    the library's papers are old ones the sources never fetch.  Returns (library, source file)."""
    rng = random.Random(7)
    papers = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    by_title = [p for p in papers if VISION.search(p["title"])]
    by_abstract = [p for p in papers if not VISION.search(p["title"]) and VISION.search(p["abstract"])]
    rng.shuffle(by_title)
    rng.shuffle(by_abstract)
    library = by_title[: count * 2 // 3] + by_abstract[: count - count * 2 // 3]
    entries = []
    for i, p in enumerate(library):
        abstract = re.sub(r"([{}%&#_$])", r"\\\1", p["abstract"])  # escaped, as Zotero exports them
        year, kind = rng.choice([2012, 2015, 2017, 2019, 2021, 2026]), rng.choice(["article", "inproceedings", "misc"])
        venue = "booktitle = {{CVPR}}" if kind == "inproceedings" else "journal = {{IEEE TPAMI}}"
        entries.append(
            f"@{kind}{{entry{i},\n  title = {{{{{p['title']}}}}},\n  author = {{Doe, Jane and Roe, R.}},\n"
            f"  year = {{{year}}},\n  month = dec,\n  abstract = {{{abstract}}},\n  {venue.format()}\n}}\n"
        )
    (folder / "zotero.bib").write_text("\n".join(entries), encoding="utf-8")
    names = {p["title"] for p in library}
    rest = [p for p in papers if p["title"] not in names]
    (folder / "papers.jsonl").write_text("".join(json.dumps(p) + "\n" for p in rest), encoding="utf-8")
    return folder / "zotero.bib", folder / "papers.jsonl"


LIBRARY_ONLY = """
[[sources]]
kind = "jsonl"
path = "papers.jsonl"

[[subscribers]]
email = "ada@example.org"
max_papers = 10
library = ["zotero.bib"]

[[subscribers]]
email = "bob@example.org"
liked = ["Backpack Language Models"]
"""


def test_a_300_entry_library_alone_steers_the_picks(make_config: ConfigFactory, tmp_path: Path) -> None:
    """The issue's "done when": a reader seeded only by a 300-entry library of old papers gets picks
    on its topic; nobody is offered the library's papers as news."""
    vision_library(tmp_path)
    settings = make_config(LIBRARY_ONLY)
    report = run_daily(NOW, settings, dry_run=True, force=True)
    assert report.libraries == [
        "ada@example.org: library zotero.bib: 300 entries, 300 papers; 300 liked (300 new papers, 0 already known)"
    ]
    outcome = {o.email: o for o in report.outcomes}
    ada = [p.paper.title for p in outcome["ada@example.org"].picks]
    assert len(ada) == 10 and sum(bool(VISION.search(t)) for t in ada) >= 7, ada  # 11% of the candidates are
    for o in report.outcomes:
        assert o.picks and not any(p.paper.source == "library" for p in o.picks), o.email


def test_the_preferences_page_shows_the_library_likes(make_config: ConfigFactory, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from digest import links
    from digest.web.app import create_app

    (tmp_path / "zotero.bib").write_bytes((DATA / "zotero.bib").read_bytes())
    settings = make_config(READER.format(paths='"zotero.bib"'))
    store = Store(settings.database_url)
    try:
        from digest.pipeline import ingest

        ingest(store, settings, NOW)
        sync_subscribers(store, settings, NOW)
        sync_libraries(store, settings, NOW)
        url = links.manage_url(settings, links.secret_key(settings), "ada@example.org")
        with TestClient(create_app(settings, store=store), base_url="https://digest.example.org") as client:
            parts = urlsplit(url)
            page = client.get(f"{parts.path}?{parts.query}")
        assert page.status_code == 200
        assert "Direct Preference Optimization: Your Language Model Is Secretly a Reward Model" in page.text
        assert page.text.count("from your library zotero.bib") == 5
    finally:
        store.close()


def test_a_library_file_posted_on_the_preferences_page(make_config: ConfigFactory) -> None:
    """The upload: a good file becomes likes; a bad or oversized one is refused with why (never a 5xx)
    and changes nothing."""
    from starlette.testclient import TestClient

    from digest import links
    from digest.web import forms
    from digest.web.app import create_app

    settings = make_config(READER.format(paths=""))
    store = Store(settings.database_url)
    try:
        sync_subscribers(store, settings, NOW)
        ada = store.subscriber(email="ada@example.org")
        assert ada is not None
        parts = urlsplit(links.manage_url(settings, links.secret_key(settings), "ada@example.org"))
        with TestClient(create_app(settings, store=store), base_url="https://digest.example.org") as client:
            page = client.get(f"{parts.path}?{parts.query}")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert page.status_code == 200 and csrf and 'enctype="multipart/form-data"' in page.text
            url = f"/preferences/library?{parts.query}"

            def post(name: str, data: bytes):
                return client.post(url, data={"csrf": csrf.group(1)}, files={"library": (name, data, "text/plain")})

            done = post("My Library.bib", (DATA / "zotero.bib").read_bytes())
            assert done.status_code == 200, done.text
            assert "Imported your library My Library.bib: 6 entries, 5 papers, 2 problems" in done.text
            assert len(store.liked_papers(ada.id)) == 5
            bad = post("photo.bib", random.Random(2).randbytes(3000))
            assert bad.status_code == 400
            assert (
                "photo.bib: not a text file (export the library as BibTeX, RIS or CSL-JSON) Nothing was changed."
                in bad.text
            )
            for size in (forms.MAX_UPLOAD + 1, 50 * 1024 * 1024):
                big = post("huge.bib", b"%" * size)
                assert big.status_code == 413 and "larger than 5 MB" in big.text
            empty = client.post(url, data={"csrf": csrf.group(1)}, files={"other": ("x.bib", b"", "text/plain")})
            assert empty.status_code == 400 and "Choose a library file first." in empty.text
            forged = client.post(url, data={"csrf": "nope"}, files={"library": ("x.bib", b"@misc{a, title={T}}")})
            assert forged.status_code == 403
            assert len(store.liked_papers(ada.id)) == 5  # none of these changed anything
            hostile = [
                ("multipart/form-data; boundary=xx", b'--xx\r\nContent-Disposition: form-data; name="library"'),
                ("multipart/form-data", b"no boundary at all"),
                ("multipart/form-data; boundary=xx", b"--xx\r\n\r\n\r\n--xx--\r\n"),
                ("application/x-www-form-urlencoded", b"csrf=" + csrf.group(1).encode()),
            ]
            for content_type, body in hostile:
                answer = client.post(url, content=body, headers={"content-type": content_type})
                assert 400 <= answer.status_code < 500, (content_type, body, answer.status_code)

            def endless():  # chunked, no content-length: cut off at the limit
                for _ in range(2000):
                    yield b"A" * 4096

            streamed = client.post(url, content=endless(), headers={"content-type": "multipart/form-data; boundary=xx"})
            assert streamed.status_code == 413
            again = post("My Library.bib", (DATA / "zotero.ris").read_bytes())  # the same name: replaced
            assert again.status_code == 200 and len(store.liked_papers(ada.id)) == 3
    finally:
        store.close()
