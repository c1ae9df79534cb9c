"""The arXiv source against a real HTTP server on localhost answering Atom pages shaped like the API's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.db import Store
from digest.errors import SourceError
from digest.pipeline import ingest
from digest.sources.base import MAX_ABSTRACT_CHARS, FetchOptions

from .conftest import ConfigFactory
from .source_feeds import DATA, NOW, arxiv_source, atom_entry, atom_feed

PAGE_2 = atom_feed(
    [atom_entry("2611.09999v1", "Older Paper", published="2026-11-21T08:00:00Z", categories=("cs.CV",))],
    total=3,
    start=2,
)


def serve_pages(httpserver: HTTPServer, pages: dict[int, str | Response]) -> list[Request]:
    """Answer /api/query by its `start`; returns the list of requests seen."""
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        page = pages.get(int(request.args.get("start", "0")), atom_feed([], total=0))
        return page if isinstance(page, Response) else Response(page, content_type="application/atom+xml")

    httpserver.expect_request("/api/query").respond_with_handler(handler)
    return seen


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    yield s
    s.close()


def test_pages_back_and_parses_every_field(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    seen = serve_pages(httpserver, {0: (DATA / "arxiv_page1.xml").read_text(), 2: PAGE_2})
    settings = make_config(arxiv_source(httpserver.url_for(""), contact_email="ops@example.org"))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 3 and not report.skipped
    assert [int(r.args["start"]) for r in seen] == [0, 2]
    first = seen[0]
    assert first.args["search_query"] == "cat:cs.LG OR cat:cs.CV"
    assert (first.args["sortBy"], first.args["sortOrder"], first.args["max_results"]) == (
        "submittedDate",
        "descending",
        "2",
    )
    assert first.headers["User-Agent"].startswith("digest/") and "mailto:ops@example.org" in first.headers["User-Agent"]
    [lora] = store.papers(["2611.10001"])
    assert lora.title == "LoRA Revisited" and lora.authors == ["Grace Hopper"] and lora.categories == ["cs.LG"]
    assert lora.url == "http://arxiv.org/abs/2611.10001v2" and lora.pdf_url == "http://arxiv.org/pdf/2611.10001v2"
    assert lora.published == datetime(2026, 11, 22, 9, tzinfo=UTC)
    assert lora.updated == datetime(2026, 11, 22, 12, tzinfo=UTC)
    [sparse] = store.papers(["2611.10002"])
    assert sparse.title == "Sparse Mixture of Adapters for Vision Transformers"  # whitespace of the feed folded
    assert sparse.abstract.startswith("We adapt") and sparse.categories == ["cs.CV", "cs.LG"]
    assert store.source_cursor("arxiv") == "2026-11-22T17:00:00+00:00"


def test_rerun_ingests_nothing_twice_and_stops_at_the_checkpoint(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    seen = serve_pages(httpserver, {0: (DATA / "arxiv_page1.xml").read_text(), 2: PAGE_2})
    settings = make_config(arxiv_source(httpserver.url_for("")))
    ingest(store, settings, NOW, sleep=lambda s: None)
    seen.clear()
    [again] = ingest(store, settings, NOW + timedelta(hours=1), sleep=lambda s: None)
    assert again.counts.new == 0 and again.counts.updated == 0 and again.error == ""
    assert len(seen) == 1  # the first page already reaches papers older than the checkpoint
    assert store.paper_count() == 3


def test_a_new_version_updates_the_paper(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    v1 = atom_feed([atom_entry("2611.00001v1", "Draft Title", published="2026-11-22T10:00:00Z", summary="First.")])
    serve_pages(httpserver, {0: v1})
    settings = make_config(arxiv_source(httpserver.url_for("")))
    [first] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert first.counts.new == 1
    httpserver.clear()
    v2 = atom_entry(
        "2611.00001v2",
        "Final Title",
        published="2026-11-22T10:00:00Z",
        updated="2026-11-23T09:00:00Z",
        summary="Second.",
    )
    serve_pages(httpserver, {0: atom_feed([v2])})
    [second] = ingest(store, settings, NOW + timedelta(hours=2), sleep=lambda s: None)
    assert (second.counts.new, second.counts.updated) == (0, 1)
    [paper] = store.papers()
    assert (paper.id, paper.title, paper.abstract) == ("2611.00001", "Final Title", "Second.")
    assert paper.url.endswith("2611.00001v2")
    assert paper.updated == datetime(2026, 11, 23, 9, tzinfo=UTC)


def test_page_cap_is_reported(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    seen = serve_pages(httpserver, {0: (DATA / "arxiv_page1.xml").read_text(), 2: PAGE_2})
    settings = make_config(arxiv_source(httpserver.url_for(""), max_pages=1))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert len(seen) == 1 and report.counts.new == 2
    assert any("max_pages" in note for note in report.notes)


def test_first_run_looks_back_max_days_only(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    old = atom_entry("2601.00001v1", "Last Winter", published="2026-01-05T10:00:00Z")
    new = atom_entry("2611.00002v1", "This Week", published="2026-11-21T10:00:00Z")
    serve_pages(httpserver, {0: atom_feed([new, old], total=2)})
    settings = make_config(arxiv_source(httpserver.url_for(""), max_days=7))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.counts.new == 1 and [p.id for p in store.papers()] == ["2611.00002"]


def test_bad_entries_are_skipped_or_cleaned(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    huge = "word " * 250_000  # more than a megabyte
    entries = [
        atom_entry("2611.00010v1", "<script>alert('x')</script><b>Bold</b> &amp; Safe Title", summary=huge),
        atom_entry("2611.00011v1", "From the Past", published="1970-01-01T00:00:00Z"),
        atom_entry("2611.00012v1", "From the Future", published="2031-01-01T00:00:00Z"),
        atom_entry("2611.00013v1", "   "),
        atom_entry("2611.00015v1", "Good One", published="2026-11-22T08:00:00Z"),
        atom_entry("not-an-id", "No Id"),
    ]
    serve_pages(httpserver, {0: atom_feed(entries)})
    settings = make_config(arxiv_source(httpserver.url_for(""), page_size=10))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.counts.new == 2 and report.error == ""
    assert report.skipped == {"missing or absurd date": 2, "missing title": 1, "missing or unknown arXiv id": 1}
    [cleaned] = store.papers(["2611.00010"])
    assert cleaned.title == "Bold & Safe Title"
    assert len(cleaned.abstract) <= MAX_ABSTRACT_CHARS


def test_truncated_page_keeps_good_entries_but_not_the_checkpoint(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    whole = (DATA / "arxiv_page1.xml").read_text()
    serve_pages(httpserver, {0: whole[: whole.index("<entry>", whole.index("</entry>")) + 40]})
    settings = make_config(arxiv_source(httpserver.url_for("")))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 1
    assert report.skipped["broken feed page"] == 1
    assert store.source_cursor("arxiv") is None  # the next run reads these pages again


def test_429_waits_as_asked_then_succeeds(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    httpserver.expect_ordered_request("/api/query").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    httpserver.expect_ordered_request("/api/query").respond_with_data(
        atom_feed([atom_entry("2611.00003v1", "Patience")]), content_type="application/atom+xml"
    )
    sleeps: list[float] = []
    settings = make_config(arxiv_source(httpserver.url_for(""), backoff=1))
    [report] = ingest(store, settings, NOW, sleep=sleeps.append)
    assert report.error == "" and report.counts.new == 1
    assert sleeps == [7.0]


def test_rate_limit_pauses_between_requests(httpserver: HTTPServer, make_config: ConfigFactory) -> None:
    from digest.sources.arxiv import fetch_arxiv

    serve_pages(httpserver, {0: (DATA / "arxiv_page1.xml").read_text(), 2: PAGE_2})
    settings = make_config(arxiv_source(httpserver.url_for(""), request_delay=3))
    sleeps: list[float] = []
    result = fetch_arxiv(settings.sources[0], None, NOW, FetchOptions(sleep=sleeps.append))
    assert len(result.records) == 3
    assert len(sleeps) == 1 and 2.5 < sleeps[0] <= 3  # one pause, before the second page


def test_a_failed_run_resumes_from_its_checkpoint(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    first = atom_feed([atom_entry("2611.00100v1", "Monday", published="2026-11-20T10:00:00Z")])
    serve_pages(httpserver, {0: first})
    settings = make_config(arxiv_source(httpserver.url_for("")))
    ingest(store, settings, NOW - timedelta(days=1), sleep=lambda s: None)
    checkpoint = store.source_cursor("arxiv")
    httpserver.clear()
    page_1 = atom_feed(
        [
            atom_entry("2611.00103v1", "Thursday", published="2026-11-23T10:00:00Z"),
            atom_entry("2611.00102v1", "Wednesday", published="2026-11-22T10:00:00Z"),
        ],
        total=4,
    )
    serve_pages(httpserver, {0: page_1, 2: Response("overloaded", status=503)})
    [failed] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert "503" in failed.error and failed.counts.new == 2  # what was read is kept
    assert store.source_cursor("arxiv") == checkpoint  # but the checkpoint stays
    httpserver.clear()
    page_2 = atom_feed(
        [
            atom_entry("2611.00101v1", "Tuesday", published="2026-11-21T10:00:00Z"),
            atom_entry("2611.00100v1", "Monday", published="2026-11-20T10:00:00Z"),
        ],
        total=4,
    )
    serve_pages(httpserver, {0: page_1, 2: page_2})
    [resumed] = ingest(store, settings, NOW + timedelta(hours=1), sleep=lambda s: None)
    assert resumed.error == "" and resumed.counts.new == 1
    assert {p.title for p in store.papers()} == {"Monday", "Tuesday", "Wednesday", "Thursday"}
    assert store.source_cursor("arxiv") == "2026-11-23T10:00:00+00:00"


def test_an_api_error_feed_is_a_source_error(httpserver: HTTPServer, make_config: ConfigFactory) -> None:
    from digest.sources.arxiv import fetch_arxiv

    error = (
        "<entry><id>http://arxiv.org/api/errors#incorrect_id_format</id><title>Error</title>"
        "<summary>malformed query</summary><updated>2026-11-23T00:00:00Z</updated></entry>"
    )
    serve_pages(httpserver, {0: atom_feed([error])})
    settings = make_config(arxiv_source(httpserver.url_for("")))
    result = fetch_arxiv(settings.sources[0], None, NOW, FetchOptions(sleep=lambda s: None))
    assert "malformed query" in result.error and not result.records


def test_unreachable_server_raises_source_error(make_config: ConfigFactory) -> None:
    from digest.sources.arxiv import fetch_arxiv

    from .conftest import free_port

    settings = make_config(arxiv_source(f"http://127.0.0.1:{free_port()}", max_attempts=2))
    with pytest.raises(SourceError, match="cannot connect.*2 attempts"):
        fetch_arxiv(settings.sources[0], None, NOW, FetchOptions(sleep=lambda s: None))


def test_the_checkpoint_never_passes_the_real_clock(httpserver: HTTPServer, make_config: ConfigFactory) -> None:
    """A run with `--now` two days ahead accepts an entry dated tomorrow (a day past its own now is
    absurd, not this): the checkpoint stops at the real now, so the real runs still read what comes
    before tomorrow."""
    from digest.sources.arxiv import fetch_arxiv

    tomorrow = (NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    serve_pages(
        httpserver,
        {
            0: atom_feed(
                [
                    atom_entry("2611.30001v1", "Dated Ahead", published=tomorrow),
                    atom_entry("2611.30002v1", "Of Today", published="2026-11-23T09:00:00Z"),
                ]
            )
        },
    )
    settings = make_config(arxiv_source(httpserver.url_for("")))
    result = fetch_arxiv(
        settings.sources[0], None, NOW + timedelta(days=2), FetchOptions(sleep=lambda s: None, clock=lambda: NOW)
    )
    assert len(result.records) == 2
    assert result.cursor == NOW.isoformat()


def test_one_malformed_entry_keeps_the_rest_of_the_page_and_the_checkpoint_moves(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    """feedparser's lenient mode lets an unclosed tag swallow the next entry; read alone, each entry
    keeps its own fields and only the broken one is skipped, by id."""
    entries = [
        atom_entry("2611.00201v1", "First", published="2026-11-22T10:00:00Z"),
        atom_entry("2611.00202v1", "Broken", published="2026-11-22T09:00:00Z").replace("</summary>", ""),
        atom_entry("2611.00203v1", "Third", published="2026-11-22T08:00:00Z", summary="Third abstract."),
    ]
    serve_pages(httpserver, {0: atom_feed(entries)})
    settings = make_config(arxiv_source(httpserver.url_for(""), page_size=10))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 2
    assert report.skipped == {"malformed entry": 1}
    assert report.examples["malformed entry"] == ["http://arxiv.org/abs/2611.00202v1"]
    [third] = store.papers(["2611.00203"])
    assert third.title == "Third" and third.abstract == "Third abstract."
    assert store.source_cursor("arxiv") == "2026-11-22T10:00:00+00:00"
