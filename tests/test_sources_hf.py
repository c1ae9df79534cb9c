"""The Hugging Face Daily Papers source against a real HTTP server on localhost answering its JSON."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.db import Store
from digest.errors import SourceError
from digest.pipeline import ingest
from digest.sources.base import MAX_ABSTRACT_CHARS, FetchOptions
from digest.sources.hf import fetch_hf_daily

from .conftest import ConfigFactory
from .source_feeds import DATA, NOW, hf_item, hf_json, hf_source

TODAY = NOW.date()


def serve_days(httpserver: HTTPServer, days: dict[str, str | Response]) -> list[str]:
    """Answer /api/daily_papers by its `date` (an empty list for other days); returns the dates asked."""
    asked: list[str] = []

    def handler(request: Request) -> Response:
        day = request.args.get("date", "")
        asked.append(day)
        answer = days.get(day, "[]")
        return answer if isinstance(answer, Response) else Response(answer, content_type="application/json")

    httpserver.expect_request("/api/daily_papers").respond_with_handler(handler)
    return asked


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    yield s
    s.close()


def test_each_day_since_the_checkpoint(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    asked = serve_days(httpserver, {"2026-11-22": (DATA / "hf_daily.json").read_text()})
    settings = make_config(hf_source(httpserver.url_for(""), max_days=3))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert asked == ["2026-11-21", "2026-11-22", "2026-11-23"]  # oldest first, empty days are normal
    assert report.error == "" and report.counts.new == 2 and not report.skipped
    [lora] = store.papers(["2611.10001"])
    assert (lora.title, lora.abstract, lora.upvotes, lora.comments) == (
        "LoRA Revisited",
        "Low-rank adaptation, again.",
        42,
        3,
    )
    assert lora.authors == ["Grace Hopper", "HF Community"] and lora.url == "https://huggingface.co/papers/2611.10001"
    assert store.papers(["2611.20005"])[0].title == "World Models that Plan"  # markup stripped
    assert store.source_cursor("hf") == "2026-11-22"  # today's list still grows: fetched again next run

    asked.clear()
    [again] = ingest(store, settings, NOW + timedelta(hours=3), sleep=lambda s: None)
    assert asked == ["2026-11-23"] and again.counts.new == 0
    asked.clear()
    ingest(store, settings, NOW + timedelta(days=2), sleep=lambda s: None)
    assert asked == ["2026-11-23", "2026-11-24", "2026-11-25"]


def test_since_overrides_the_checkpoint_and_upvotes_refresh(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve_days(httpserver, {"2026-11-22": hf_json(hf_item("2611.10001", "LoRA Revisited", upvotes=5))})
    settings = make_config(hf_source(httpserver.url_for("")))
    ingest(store, settings, NOW, sleep=lambda s: None)
    httpserver.clear()
    asked = serve_days(
        httpserver, {"2026-11-22": hf_json(hf_item("2611.10001", "LoRA Revisited", upvotes=50, comments=4))}
    )
    [report] = ingest(store, settings, NOW, since=TODAY - timedelta(days=1), sleep=lambda s: None)
    assert asked == ["2026-11-22", "2026-11-23"] and report.counts.updated == 1
    assert (store.papers()[0].upvotes, store.papers()[0].comments) == (50, 4)
    assert store.source_cursor("hf") == "2026-11-22"


def test_invalid_json_skips_the_day_and_holds_the_checkpoint(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    asked = serve_days(
        httpserver,
        {
            "2026-11-21": hf_json(hf_item("2611.00001", "Friday Paper")),
            "2026-11-22": '[{"paper": {"id": "2611.0',
            "2026-11-23": hf_json(hf_item("2611.00003", "Sunday Paper")),
        },
    )
    settings = make_config(hf_source(httpserver.url_for("")))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.error == "" and report.counts.new == 2
    assert report.skipped == {"invalid JSON": 1}
    assert store.source_cursor("hf") == "2026-11-21"  # the broken day is asked again next run
    asked.clear()
    ingest(store, settings, NOW, sleep=lambda s: None)
    assert asked == ["2026-11-22", "2026-11-23"]


def test_bad_items_are_skipped_or_cleaned(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    no_title = hf_item("2611.00006", "")
    no_title["title"] = ""
    items = [
        hf_item("2611.00004", "<script>document.cookie</script>Clean <i>Title</i>", summary="x" * 2_000_000),
        hf_item("2611.00005", "Ancient", published="1985-03-01T00:00:00.000Z"),
        hf_item("2611.00007", "Tomorrow's Tomorrow", published="2027-06-01T00:00:00.000Z"),
        no_title,
        {"paper": {"title": "No Id"}},
        {"paper": "not an object"},
        "a string",
        hf_item("2611.00008", "Strange Counts", upvotes=-3) | {"numComments": "many"},
    ]
    serve_days(httpserver, {"2026-11-23": hf_json(*items), "2026-11-22": '{"error": "Invalid date"}'})
    settings = make_config(hf_source(httpserver.url_for(""), max_days=2))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert report.counts.new == 2 and report.error == ""
    assert report.skipped == {
        "missing or absurd date": 2,
        "missing title": 1,
        "missing or unknown arXiv id": 1,
        "no paper object": 1,
        "not a JSON object": 1,
        "unexpected JSON (not a list)": 1,
    }
    [clean] = store.papers(["2611.00004"])
    assert clean.title == "Clean Title" and len(clean.abstract) <= MAX_ABSTRACT_CHARS
    assert (store.papers(["2611.00008"])[0].upvotes, store.papers(["2611.00008"])[0].comments) == (0, 0)


def test_a_slow_server_times_out_with_bounded_attempts(make_config: ConfigFactory) -> None:
    calls: list[float] = []

    def slow(request: Request) -> Response:
        calls.append(time.monotonic())
        time.sleep(0.5)
        return Response("[]", content_type="application/json")

    server = HTTPServer(threaded=True)  # its own server: the slow answers must not leak into other tests
    server.expect_request("/api/daily_papers").respond_with_handler(slow)
    server.start()
    try:
        settings = make_config(hf_source(server.url_for(""), timeout=0.2, max_attempts=2, backoff=1))
        sleeps: list[float] = []
        with pytest.raises(SourceError, match=r"no answer within 0.2 s \(gave up after 2 attempts"):
            fetch_hf_daily(settings.sources[0], None, NOW, FetchOptions(sleep=sleeps.append))
        assert len(calls) == 2 and sleeps == [1.0]
    finally:
        time.sleep(0.5)  # let the last slow answer finish before the server stops
        server.stop()


def test_5xx_backs_off_exponentially_then_gives_up(httpserver: HTTPServer, make_config: ConfigFactory) -> None:
    httpserver.expect_request("/api/daily_papers").respond_with_data("boom", status=502)
    settings = make_config(hf_source(httpserver.url_for(""), max_attempts=4, backoff=1.5, max_wait=4))
    sleeps: list[float] = []
    with pytest.raises(SourceError, match="HTTP 502"):
        fetch_hf_daily(settings.sources[0], None, NOW, FetchOptions(sleep=sleeps.append))
    assert sleeps == [1.5, 3.0, 4.0]  # doubled each time, capped by max_wait
    assert len(httpserver.log) == 4


def test_a_client_error_is_not_retried(httpserver: HTTPServer, make_config: ConfigFactory) -> None:
    httpserver.expect_request("/api/daily_papers").respond_with_data("nope", status=404)
    settings = make_config(hf_source(httpserver.url_for("")))
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_hf_daily(settings.sources[0], None, NOW, FetchOptions(sleep=lambda s: None))
    assert len(httpserver.log) == 1


def test_a_day_that_fails_keeps_earlier_days_and_resumes_there(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    asked = serve_days(
        httpserver,
        {
            "2026-11-21": hf_json(hf_item("2611.00001", "Friday Paper")),
            "2026-11-22": Response("down for maintenance", status=503),
        },
    )
    settings = make_config(hf_source(httpserver.url_for(""), max_attempts=2))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert "HTTP 503" in report.error and report.counts.new == 1
    assert asked == ["2026-11-21", "2026-11-22", "2026-11-22"]  # today was never asked
    assert store.source_cursor("hf") == "2026-11-21"
    httpserver.clear()
    asked = serve_days(httpserver, {"2026-11-22": hf_json(hf_item("2611.00002", "Saturday Paper"))})
    [resumed] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert asked == ["2026-11-22", "2026-11-23"] and resumed.error == "" and resumed.counts.new == 1


def test_hostile_answers_are_cleaned_or_refused_and_the_run_goes_on(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    """Numbers past what the store holds, lone surrogates, private-use text and nesting 100,000 deep
    on one day; an answer too big to hold on another: each day is cleaned or refused on its own."""
    import gzip

    from digest.sources import http

    hostile = hf_json(
        hf_item("2611.00011", "Big \ud800 Counts \ue000zzz\ue001", upvotes=1e308) | {"numComments": 10**30}
    ).replace("1e+308", "1e999")
    deep = "[" * 100_000 + "]" * 100_000
    bomb = gzip.compress(b"[" + b" " * (http.MAX_RESPONSE_BYTES + 10) + b"]")
    serve_days(
        httpserver,
        {
            "2026-11-21": Response(bomb, content_type="application/json", headers={"Content-Encoding": "gzip"}),
            "2026-11-22": deep,
            "2026-11-23": hostile,
        },
    )
    settings = make_config(hf_source(httpserver.url_for(""), max_days=3))
    [report] = ingest(store, settings, NOW, sleep=lambda s: None)
    assert "larger than 64 MB" in report.error  # the first day: refused, named
    assert report.counts.new == 0 and store.paper_count() == 0  # a failed first day stops the source (resumes there)
    serve_days(httpserver, {})
    httpserver.clear()
    serve_days(httpserver, {"2026-11-22": deep, "2026-11-23": hostile})
    [report] = ingest(store, settings, NOW, sleep=lambda s: None, since=TODAY - timedelta(days=1))
    assert report.error == "" and report.skipped == {"invalid JSON": 1} and report.counts.new == 1
    [paper] = store.papers(["2611.00011"])
    assert paper.title == "Big Counts zzz" and paper.upvotes == 0 and paper.comments == 2**31 - 1


def test_retry_after_takes_only_ascii_seconds_or_a_date() -> None:
    from digest.sources.http import retry_after

    assert retry_after("²") is None and retry_after("٣") is None  # isdigit() but not float()
    assert retry_after("120") == 120.0 and retry_after("9" * 400) == 999_999_999_999.0


def test_a_run_dated_ahead_fetches_and_checkpoints_no_later_than_the_real_today(
    httpserver: HTTPServer, make_config: ConfigFactory
) -> None:
    """`--now` two days ahead: the days after the real today have no list yet and are not asked for,
    and the checkpoint stays before the real today; one left in the future by an older version is
    moved back, so the real runs fetch today again."""
    asked = serve_days(httpserver, {"2026-11-23": hf_json(hf_item("2611.10001", "LoRA Revisited"))})
    src = make_config(hf_source(httpserver.url_for(""), max_days=3)).sources[0]
    real = FetchOptions(sleep=lambda s: None, clock=lambda: NOW)
    result = fetch_hf_daily(src, "2026-11-21", NOW + timedelta(days=2), real)
    assert asked == ["2026-11-22", "2026-11-23"] and len(result.records) == 1
    assert result.cursor == "2026-11-22"

    asked.clear()
    repaired = fetch_hf_daily(src, "2026-11-24", NOW, real)
    assert asked == ["2026-11-23"] and repaired.cursor == "2026-11-22"
    assert repaired.notes == ["the checkpoint 2026-11-24 was in the future: moved back to 2026-11-22"]
