"""Ingesting several sources together: one paper across sources, one source failing, the CLI,
and what a reader gets on a day without new papers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from digest.cli import app
from digest.db import Store
from digest.pipeline import ingest, run_daily

from .conftest import ConfigFactory
from .source_feeds import NOW, arxiv_source, atom_entry, atom_feed, hf_item, hf_json, hf_source

ARXIV_LORA = atom_entry(
    "2611.10001v2",
    "LoRA Revisited",
    published="2026-11-22T09:00:00Z",
    updated="2026-11-22T12:00:00Z",
    summary="Low-rank adaptation, again, with better ranks.",
    authors=("Grace Hopper", "Ada Lovelace"),
    categories=("cs.LG", "cs.CL"),
)
HF_LORA = hf_item("2611.10001", "LoRA revisited", upvotes=42, comments=3, summary="Short HF summary.")


def serve(httpserver: HTTPServer, *, arxiv: str | None = None, hf: str | None = None, arxiv_status: int = 200) -> None:
    if arxiv is not None or arxiv_status != 200:
        httpserver.expect_request("/api/query").respond_with_data(
            arxiv or "down", status=arxiv_status, content_type="application/atom+xml"
        )
    if hf is not None:
        httpserver.expect_request("/api/daily_papers", query_string="date=2026-11-23").respond_with_data(
            hf, content_type="application/json"
        )
        httpserver.expect_request("/api/daily_papers").respond_with_data("[]", content_type="application/json")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    yield s
    s.close()


@pytest.mark.parametrize("order", [("arxiv", "hf"), ("hf", "arxiv")])
def test_a_paper_on_both_sources_is_one_paper_with_the_best_of_each(
    order: tuple[str, str], httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, arxiv=atom_feed([ARXIV_LORA]), hf=hf_json(HF_LORA))
    url = httpserver.url_for("")
    blocks = {"arxiv": arxiv_source(url), "hf": hf_source(url)}
    settings = make_config(blocks[order[0]] + blocks[order[1]])
    first, second = ingest(store, settings, NOW, sleep=lambda s: None)
    assert (first.counts.new, second.counts.new) == (1, 0)
    [paper] = store.papers()
    assert paper.id == "2611.10001"
    assert paper.title == "LoRA Revisited" and paper.abstract.startswith("Low-rank adaptation, again")  # arXiv's text
    assert paper.authors == ["Grace Hopper", "Ada Lovelace"] and paper.categories == ["cs.LG", "cs.CL"]
    assert paper.url == "http://arxiv.org/abs/2611.10001v2" and paper.source == "arxiv"
    assert (paper.upvotes, paper.comments) == (42, 3)  # Hugging Face's counts survive an arXiv upsert


def test_a_source_down_is_reported_and_the_others_still_ingest(
    httpserver: HTTPServer, make_config: ConfigFactory, store: Store
) -> None:
    serve(httpserver, hf=hf_json(HF_LORA), arxiv_status=500)
    url = httpserver.url_for("")
    settings = make_config(arxiv_source(url, max_attempts=3) + hf_source(url))
    sleeps: list[float] = []
    arxiv, hf = ingest(store, settings, NOW, sleep=sleeps.append)
    assert "HTTP 500" in arxiv.error and "gave up after 3 attempts" in arxiv.error
    assert sum(1 for request, _ in httpserver.log if request.path == "/api/query") == 3
    assert hf.error == "" and hf.counts.new == 1
    assert store.source_cursor("arxiv") is None and store.source_cursor("hf") == "2026-11-22"
    assert len(sleeps) == 2  # between the three attempts, none after the last


def test_only_and_since(httpserver: HTTPServer, make_config: ConfigFactory, store: Store) -> None:
    serve(httpserver, arxiv=atom_feed([ARXIV_LORA]), hf=hf_json(HF_LORA))
    url = httpserver.url_for("")
    settings = make_config(arxiv_source(url) + hf_source(url, max_days=5))
    [report] = ingest(store, settings, NOW, only=["hf"], since=NOW.date(), sleep=lambda s: None)
    assert report.name == "hf" and report.counts.new == 1
    assert [r.args["date"] for r, _ in httpserver.log] == ["2026-11-23"]


def test_digest_ingest_command(httpserver: HTTPServer, make_config: ConfigFactory, tmp_path: Path) -> None:
    serve(
        httpserver,
        arxiv=atom_feed(
            [ARXIV_LORA, atom_entry("2611.10002v1", "<b>Sparse</b> Adapters", published="1900-01-01T00:00:00Z")]
        ),
        hf=hf_json(HF_LORA, hf_item("2611.20005", "World Models that Plan", upvotes=7)),
    )
    url = httpserver.url_for("")
    make_config(arxiv_source(url) + hf_source(url))
    config = str(tmp_path / "digest.toml")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "--config", config, "--now", NOW.isoformat()])
    assert result.exit_code == 0, result.output
    assert "arxiv: 1 new, 0 updated, 0 unchanged; skipped: 1 missing or absurd date" in result.output
    assert "hf: 1 new, 1 updated" in result.output
    again = runner.invoke(app, ["ingest", "--config", config, "--now", NOW.isoformat(), "--source", "hf"])
    assert again.exit_code == 0 and "hf: 0 new, 0 updated, 2 unchanged" in again.output and "arxiv" not in again.output
    with pytest.raises(Exception, match="no source named 'nope'"):
        runner.invoke(app, ["ingest", "--config", config, "--source", "nope"], catch_exceptions=False)


def test_digest_ingest_fails_with_exit_code_when_a_source_is_down(
    httpserver: HTTPServer, make_config: ConfigFactory, tmp_path: Path
) -> None:
    serve(httpserver, arxiv_status=503)
    make_config(arxiv_source(httpserver.url_for(""), max_attempts=1))
    result = CliRunner().invoke(app, ["ingest", "--config", str(tmp_path / "digest.toml"), "--now", NOW.isoformat()])
    assert result.exit_code == 1
    assert "arxiv: 0 new" in result.output and "HTTP 503" in result.output


EMPTY_DAY = """
[[sources]]
kind = "jsonl"
path = "papers.jsonl"

[[subscribers]]
email = "ada@example.org"
timezone = "UTC"
send_at = "07:00"
exclude_keywords = ["gardening"]
"""


@pytest.mark.parametrize("on_empty", ["skip", "send"])
def test_a_day_without_new_papers(on_empty: str, make_config: ConfigFactory, tmp_path: Path) -> None:
    paper = {
        "id": "2611.30000",
        "title": "Gardening with Transformers",
        "abstract": "About gardening.",
        "published": "2026-11-22",
    }
    (tmp_path / "papers.jsonl").write_text(json.dumps(paper) + "\n")
    settings = make_config(EMPTY_DAY.replace("[[sources]]", f'on_empty = "{on_empty}"\n\n[[sources]]', 1))
    report = run_daily(NOW, settings, force=True)
    [outcome] = report.outcomes
    sent = list((settings.outbox_path / "2026-11-23").glob("*.eml"))
    if on_empty == "skip":
        assert outcome.status == "no-papers" and "no new papers since 2026-11-16" in outcome.detail
        assert not sent
    else:
        assert outcome.status == "sent" and len(sent) == 1
        assert "No new papers matched your interests today." in sent[0].read_text()
