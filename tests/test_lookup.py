"""Liked arXiv ids the store lacks, looked up through a real local server answering like the API's id_list."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.db import Kind, Store
from digest.pipeline import sync_subscribers

from .conftest import ConfigFactory, write_config
from .source_feeds import NOW, arxiv_rss_source, atom_entry, atom_feed

ON_ARXIV = {
    "2305.18290": atom_entry(
        "2305.18290v3",
        "Direct Preference Optimization",
        published="2023-05-29T17:57:46Z",
        updated="2024-07-29T22:26:36Z",
    ),
    "2203.02155": atom_entry(
        "2203.02155v1", "Training language models to follow instructions", published="2022-03-04T01:24:02Z"
    ),
}
READER = """
[[subscribers]]
email = "ada@example.org"
liked = ["2305.18290", "https://arxiv.org/abs/2203.02155", "2399.99999", "A Title Nobody Has"]
"""


def answer_id_list(httpserver: HTTPServer, *, status: int = 200) -> list[Request]:
    """/api/query?id_list=...: the entries it knows, nothing for the rest (as arXiv answers)."""
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        if status != 200:
            return Response("overloaded", status=status)
        ids = request.args.get("id_list", "").split(",")
        body = atom_feed([ON_ARXIV[i] for i in ids if i in ON_ARXIV], total=len(ids))
        return Response(body, content_type="application/atom+xml")

    httpserver.expect_request("/api/query").respond_with_handler(handler)
    return seen


def likes(store: Store) -> set[str]:
    [sub] = store.subscribers()
    return store.paper_ids_for(sub.id, [Kind.LIKE])


def test_liked_ids_are_fetched_stored_as_old_papers_and_liked(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    seen = answer_id_list(httpserver)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")) + READER)
    notes: list[str] = []
    unmatched = sync_subscribers(store, settings, NOW, notes=notes)
    assert notes == ["liked entry 2399.99999 does not exist on arXiv"]
    assert unmatched == {"ada@example.org": ["A Title Nobody Has"]}
    assert likes(store) == {"2305.18290", "2203.02155"}
    assert [r.args["id_list"] for r in seen] == ["2305.18290,2203.02155,2399.99999"]
    [dpo] = store.papers(["2305.18290"])
    assert dpo.title == "Direct Preference Optimization" and dpo.version == 3
    assert store.recent_paper_ids(NOW - timedelta(days=7)) == []  # never one of today's new papers

    again: list[str] = []
    assert sync_subscribers(store, settings, NOW + timedelta(days=1), notes=again) == unmatched
    assert again == [] and len(seen) == 1  # said once; not asked again within the week
    sync_subscribers(store, settings, NOW + timedelta(days=8), notes=again)
    assert again == [] and [r.args["id_list"] for r in seen[1:]] == ["2399.99999"]  # asked again, quietly


def test_a_failed_lookup_is_not_does_not_exist_and_is_tried_again(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    answer_id_list(httpserver, status=503)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")) + READER)
    notes: list[str] = []
    sync_subscribers(store, settings, NOW, notes=notes)
    [line] = notes
    assert "the arXiv lookup failed" in line and "503" in line and "does not exist" not in line
    assert likes(store) == set()
    httpserver.clear()
    answer_id_list(httpserver)
    notes.clear()
    sync_subscribers(store, settings, NOW + timedelta(hours=1), notes=notes)
    assert notes == ["liked entry 2399.99999 does not exist on arXiv"]
    assert likes(store) == {"2305.18290", "2203.02155"}


def test_an_id_arxiv_calls_malformed_is_missing_and_the_rest_still_found(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    def handler(request: Request) -> Response:
        ids = request.args.get("id_list", "").split(",")
        if "2399.99999" in ids:
            error = (
                "<entry><id>http://arxiv.org/api/errors#incorrect_id_format_for_2399.99999</id><title>Error</title>"
                "<summary>incorrect id format for 2399.99999</summary><updated>2026-11-23T00:00:00Z</updated></entry>"
            )
            return Response(atom_feed([error], total=1), content_type="application/atom+xml")
        return Response(atom_feed([ON_ARXIV[i] for i in ids if i in ON_ARXIV]), content_type="application/atom+xml")

    httpserver.expect_request("/api/query").respond_with_handler(handler)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")) + READER)
    notes: list[str] = []
    sync_subscribers(store, settings, NOW, notes=notes)
    assert notes == ["liked entry 2399.99999 does not exist on arXiv"]
    assert likes(store) == {"2305.18290", "2203.02155"}


def test_without_an_arxiv_source_nothing_is_looked_up(make_config: ConfigFactory, store: Store) -> None:
    settings = make_config('[[sources]]\nkind = "sample"\n' + READER)
    notes: list[str] = []
    unmatched = sync_subscribers(store, settings, NOW, notes=notes)
    assert notes == [] and unmatched["ada@example.org"][0] == "2305.18290"


def test_digest_send_reports_a_missing_liked_id_once(httpserver: HTTPServer, tmp_path: Path) -> None:
    answer_id_list(httpserver)
    httpserver.expect_request("/rss/cs.LG").respond_with_data("", status=503)
    write_config(tmp_path, arxiv_rss_source(httpserver.url_for("")) + READER)
    config = ["-c", str(tmp_path / "digest.toml")]
    # the planner of the scalable mode says what `digest send` says (the same intake, the same lines)
    plan = [sys.executable, "-m", "digest", "worker", "--plan", *config, "--now", NOW.isoformat()]
    first = subprocess.run(plan, capture_output=True, text=True, timeout=180)
    assert "liked entry 2399.99999 does not exist on arXiv" in first.stdout, first.stdout + first.stderr
    assert "matches no known paper: 'A Title Nobody Has'" in first.stdout
    assert "matches no known paper: '2305.18290'" not in first.stdout
    assert "source arxiv: failed" in first.stdout and "503" in first.stdout
    run = [sys.executable, "-m", "digest", "send", *config, "--dry-run"]
    second = subprocess.run(
        [*run, "--now", (NOW + timedelta(days=1)).isoformat()], capture_output=True, text=True, timeout=180
    )
    assert "2399.99999" not in second.stdout, second.stdout
