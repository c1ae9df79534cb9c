"""arXiv's daily announcement listing against a real HTTP server on localhost answering RSS shaped like rss.arxiv.org's."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from digest.db import Store
from digest.errors import ConfigError
from digest.pipeline import ingest
from digest.sources.base import PaperRecord

from .conftest import ConfigFactory
from .source_feeds import DATA, NOW, arxiv_rss_source

LISTING = (DATA / "arxiv_rss_cs.LG.xml").read_text()
EMPTY = (DATA / "arxiv_rss_empty.xml").read_text()
SATURDAY = datetime(2026, 12, 5, 12, tzinfo=UTC)


def serve(httpserver: HTTPServer, path: str, body: str | Response) -> None:
    if isinstance(body, Response):
        httpserver.expect_request(path).respond_with_response(body)
    else:
        httpserver.expect_request(path).respond_with_data(body, content_type="application/rss+xml")


def old_paper(now: datetime) -> PaperRecord:
    return PaperRecord.make(
        id="2305.18290v2",
        title="Direct Preference Optimization",
        abstract="The first abstract.",
        published=datetime(2023, 5, 29, tzinfo=UTC),
        updated=datetime(2023, 12, 1, tzinfo=UTC),
        version=2,
        source="sample",
    )


def test_new_and_cross_are_new_replacements_only_update(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    store.upsert_papers([old_paper(NOW)], NOW - timedelta(days=30))
    serve(httpserver, "/rss/cs.LG", LISTING)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and not report.skipped
    assert (report.counts.new, report.counts.updated, report.counts.absent) == (2, 1, 1)
    assert report.notes == ["1 replaced papers we never had were left out"]
    assert sorted(store.recent_paper_ids(NOW - timedelta(days=1))) == ["2611.13426", "2611.13500"]
    [new] = store.papers(["2611.13426"])
    assert new.authors == ["Ada Lovelace", "Alan Turing"] and new.categories == ["cs.LG", "cs.AI"]
    assert new.abstract.startswith("We adapt streaming") and "Announce Type" not in new.abstract
    assert new.version == 1 and new.published == datetime(2026, 11, 23, 5, tzinfo=UTC)
    [cross] = store.papers(["2611.13500"])
    assert cross.categories == ["eess.SY", "cs.LG"]
    [replaced] = store.papers(["2305.18290"])
    assert (replaced.title, replaced.version, replaced.journal_ref) == (
        "Direct Preference Optimization, Revised",
        3,
        "NeurIPS 2023",
    )
    assert replaced.doi == "10.48550/arxiv.2305.18290"
    assert replaced.published == datetime(2023, 5, 29, tzinfo=UTC)  # the replacement's day is not its birthday
    assert store.papers(["2101.00001"]) == []


def test_a_paper_new_in_one_category_and_cross_listed_in_another_is_one_new_paper(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, "/rss/cs.LG", LISTING)
    other = LISTING.replace("cs.LG updates", "eess.SY updates")
    serve(httpserver, "/rss/eess.SY", other.replace("Announce Type: cross", "Announce Type: new"))
    settings = make_config(arxiv_rss_source(httpserver.url_for(""), categories=("cs.LG", "eess.SY")))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.counts.new == 2 and report.error == ""
    assert len(httpserver.log) == 2


def test_an_empty_listing_is_announced_nothing_not_a_failure(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, "/rss/cs.LG", EMPTY)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")))
    [report] = ingest(store, settings, SATURDAY, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 0
    assert report.notes == ["arXiv announced nothing on Saturday 2026-12-05"]
    from digest.sources.arxiv_rss import status_line

    assert status_line(store.source_cursor("arxiv")) == "arXiv announced nothing on Saturday 2026-12-05"


def test_a_failed_fetch_is_not_announced_nothing(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, "/rss/cs.LG", LISTING)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")))
    ingest(store, settings, NOW, sleep=lambda s: None)
    checkpoint = store.source_cursor("arxiv")
    httpserver.clear()
    serve(httpserver, "/rss/cs.LG", Response("overloaded", status=503))
    [report] = ingest(store, settings, SATURDAY, sleep=lambda s: None)
    assert "503" in report.error and not any("announced nothing" in n for n in report.notes)
    assert store.source_cursor("arxiv") == checkpoint
    httpserver.clear()
    serve(httpserver, "/rss/cs.LG", "<html><body>Service page</body></html>")
    [garbage] = ingest(store, settings, SATURDAY, sleep=lambda s: None)
    assert garbage.error and not any("announced nothing" in n for n in garbage.notes)


def test_one_malformed_item_keeps_the_others_whole(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    broken = LISTING.replace(
        "<title>Sparse Adapters for Streaming Transformers</title>", "<title>Sparse <b>Adapters</title>"
    )
    serve(httpserver, "/rss/cs.LG", broken)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.skipped == {"malformed entry": 1}
    assert report.examples["malformed entry"] == ["cs.LG oai:arXiv.org:2611.13426v1"]
    [cross] = store.papers(["2611.13500"])
    assert cross.title == "Robust Control Meets Reinforcement Learning" and cross.authors == ["Grace Hopper"]
    assert report.counts.new == 1


def test_digest_status_and_send_say_arxiv_announced_nothing(httpserver: HTTPServer, tmp_path: Path) -> None:
    from .conftest import write_config

    serve(httpserver, "/rss/cs.LG", EMPTY)
    write_config(tmp_path, arxiv_rss_source(httpserver.url_for("")))
    config = str(tmp_path / "digest.toml")
    run = [sys.executable, "-m", "digest"]
    ingested = subprocess.run(
        [*run, "ingest", "-c", config, "--now", SATURDAY.isoformat()], capture_output=True, text=True, timeout=120
    )
    assert ingested.returncode == 0, ingested.stderr
    assert "arXiv announced nothing on Saturday 2026-12-05" in ingested.stdout
    status = subprocess.run(
        [*run, "status", "-c", config, "--now", SATURDAY.isoformat()], capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert "source arxiv: arXiv announced nothing on Saturday 2026-12-05" in status.stdout


def test_one_failed_category_of_two_is_an_error_not_announced_nothing(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, "/rss/cs.LG", EMPTY)
    serve(httpserver, "/rss/cs.CV", Response("gone", status=404))
    settings = make_config(arxiv_rss_source(httpserver.url_for(""), categories=("cs.LG", "cs.CV")))
    [report] = ingest(store, settings, SATURDAY, sleep=lambda s: None)
    assert "404" in report.error and "/rss/cs.CV" in report.error
    assert not any("announced nothing on" in n for n in report.notes)
    assert store.source_cursor("arxiv") is None


def test_a_quiet_category_beside_a_busy_one_is_a_note(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, "/rss/cs.LG", LISTING)
    serve(httpserver, "/rss/q-fin.TR", EMPTY)
    settings = make_config(arxiv_rss_source(httpserver.url_for(""), categories=("cs.LG", "q-fin.TR")))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 2
    assert "nothing announced in q-fin.TR" in report.notes
    assert not any("announced nothing on" in n for n in report.notes)


def test_the_listings_follow_the_readers_categories(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    """Sources fetch the union: the first arxiv_rss source also reads every category a reader
    follows, and needs none of its own when the readers list theirs."""
    serve(httpserver, "/rss/cs.LG", LISTING)
    serve(httpserver, "/rss/eess.SY", LISTING.replace("cs.LG updates", "eess.SY updates"))
    readers = '\n[[subscribers]]\nemail = "a@example.org"\ncategories = ["eess.SY", "cs.LG"]\n'
    settings = make_config(arxiv_rss_source(httpserver.url_for(""), categories=()) + readers)
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 2
    assert sorted(r.path for r, _ in httpserver.log) == ["/rss/cs.LG", "/rss/eess.SY"]


def test_a_category_source_with_no_categories_anywhere_is_one_clear_error(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError, match=r"sources\[0\]\.categories: a source of kind \"arxiv_rss\" needs categories"):
        make_config(arxiv_rss_source("http://127.0.0.1:9", categories=()))
