"""Hostile paper records: one bad record is cleaned or skipped, counted and named; nobody's digest stops.

Every case runs the real daily job (a real SQLite file or PostgreSQL, a real SMTP server on
localhost) with the hostile file beside the bundled sample, and two readers whose keywords pull the
hostile papers into their digests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.compose import compose
from digest.db import Store
from digest.pipeline import run_daily, sync_subscribers
from digest.render import DigestView, PaperView, render_digest, render_digest_reference
from digest.sources.base import PaperRecord, clean_count, clean_text, clean_url, load_json
from digest.sources.files import read_jsonl

from .conftest import ConfigFactory, Inbox, postgres_url, reset_postgres

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ABSTRACT = "We study quokkas, small marsupials, and what they teach us about learning from very few examples. " * 3

# One JSON line each; the raw text is written as is (lone surrogate escapes, 1e999 and all).
HOSTILE_LINES = [
    '{"id": "q-inf", "title": "Quokka infinity upvotes", "abstract": "%s", "upvotes": 1e999}',
    '{"id": "q-big", "title": "Quokka huge upvotes", "abstract": "{}", "upvotes": ' + str(10**30) + "}",
    '{"id": "q-nan", "title": "Quokka negative comments", "abstract": "%s", "upvotes": -5, "comments": "lots"}',
    '{"id": "q-sur", "title": "Quokka lone \\ud800 surrogate", "abstract": "%s"}',
    '{"id": "q-emoji", "title": "Quokka cut mid-emoji \\ud83d", "abstract": "%s"}',
    '{"id": "q-auth", "title": "Quokka author surrogate", "abstract": "%s", "authors": ["Ana \\udc80 Lopez", {"name": "Bo \\ud83d"}, 7, null]}',
    '{"id": "q-pua", "title": "Quokka \\ue000zzz\\ue001 private use", "abstract": "%s \\ue000href\\ue001"}',
    '{"id": "q-nul\\u0000id", "title": "Quokka NUL \\u0000 in id and url", "abstract": "%s", "url": "https://example.org/\\u0000x"}',
    '{"id": "q-js", "title": "Quokka javascript url", "abstract": "%s", "url": "javascript:alert(1)", "pdf_url": "data:text/html,x"}',
    '{"id": "q-bidi", "title": "Quokka \\u202egnp.exe bidi", "abstract": "%s"}',
    '{"id": "q-types", "title": "Quokka odd types", "abstract": {"a": 1}, "categories": "cs.LG", "published": 5, "authors": 3}',
    '{"id": {"nested": true}, "title": "Quokka id is an object", "abstract": "%s"}',
    '{"id": "q-markup", "title": "Quokka [bold]markup[/] <script>x</script>", "abstract": "%s"}',
]
SKIPPED_LINES = [
    "[" * 100_000 + "]" * 100_000,  # RecursionError in json.loads
    '{"id": "deep", "title": "Quokka deep", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"id": "no-title", "title": ["not", "text"]}',
    '{"id": "blank", "title": "\\ue000\\u200b  "}',
    "not json at all",
    '{"id": "cut", "title": "Quokka cut off',
]


def hostile_file(tmp_path: Path) -> Path:
    lines = [line.replace("%s", ABSTRACT).replace("{}", ABSTRACT) for line in HOSTILE_LINES]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join([lines[0], *SKIPPED_LINES[:3], *lines[1:], *SKIPPED_LINES[3:]]) + "\n", encoding="utf-8")
    return path


READERS = """
[ranking]
diversity = 1.0  # the hostile papers share one abstract: keep them all in the picks

[[sources]]
kind = "sample"
[[sources]]
kind = "jsonl"
name = "hostile"
path = "hostile.jsonl"

[[subscribers]]
email = "ana@example.org"
name = "Ana"
send_at = "07:00"
max_papers = 15
keywords = ["quokka"]

[[subscribers]]
email = "bo@example.org"
send_at = "07:00"
max_papers = 15
keywords = ["quokka", "marsupials"]

[[subscribers]]
email = "cy@example.org"
send_at = "07:00"
max_papers = 5
keywords = ["graph neural networks"]
"""


def test_clean_values_at_the_edge() -> None:
    assert clean_text("Quokka \ue000zzz\ue001 \ud800x \u202eevil\x00", 100) == "Quokka zzz x evil"
    assert clean_text(["a list"], 100) == "" and clean_text(3.5, 10) == "3.5" and clean_text(float("inf"), 10) == ""
    assert [clean_count(v) for v in (1e999, float("nan"), 10**30, -3, "12", "²", True, [1], 7.9)] == [
        0,
        0,
        2**31 - 1,
        0,
        12,
        0,
        0,
        0,
        7,
    ]
    assert clean_url("javascript:alert(1)") == "" and clean_url("https://a.org/x y") == ""
    assert (
        clean_url("https://user@evil.org/") == "" and clean_url("https://arxiv.org/abs/1") == "https://arxiv.org/abs/1"
    )
    with pytest.raises(ValueError, match="nested more than"):
        load_json("[" * 100_000 + "]" * 100_000)
    assert load_json('{"a": "[[[[[[[[" , "b": [1]}') == {"a": "[[[[[[[[", "b": [1]}  # brackets in strings do not count


def test_hostile_jsonl_records_are_cleaned_or_skipped_and_named(tmp_path: Path) -> None:
    result = read_jsonl(hostile_file(tmp_path), source="hostile")
    by_title = {r.title: r for r in result.records}
    assert len(result.records) == len(HOSTILE_LINES)
    assert sum(result.skipped.values()) == len(SKIPPED_LINES)
    named = [where for places in result.examples.values() for where in places]
    assert (
        "hostile.jsonl line 2" in named and "hostile.jsonl line 3" in named
    )  # the 100,000-deep and the 5,000-deep lines
    for rec in result.records:
        for text in (rec.id, rec.title, rec.abstract, *rec.authors, rec.url, rec.pdf_url, *rec.categories):
            text.encode("utf-8")  # no lone surrogates
            assert not any(0xE000 <= ord(c) <= 0xF8FF or ord(c) < 32 or c == "\u202e" for c in text), repr(text)
        assert 0 <= rec.upvotes <= 2**31 - 1 and 0 <= rec.comments <= 2**31 - 1
        assert rec.url == "" or rec.url.startswith("https://")
    assert by_title["Quokka zzz private use"].abstract.endswith("href")
    assert by_title["Quokka huge upvotes"].upvotes == 2**31 - 1
    assert by_title["Quokka author surrogate"].authors == ["Ana Lopez", "Bo", "7"]
    assert by_title["Quokka odd types"].abstract == "" and by_title["Quokka odd types"].published is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_bad_record_never_stops_the_day(
    make_config: ConfigFactory, smtp_server: tuple[Inbox, int], tmp_path: Path, backend: str
) -> None:
    inbox, port = smtp_server
    hostile_file(tmp_path)
    body = READERS
    if backend == "postgresql":
        url = postgres_url()
        if not url:
            pytest.skip('no PostgreSQL server (eval "$(.ci/postgres)")')
        reset_postgres(url)
        body = f'[database]\nurl = "{url}"\n' + READERS
    settings = make_config(body, smtp_port=port, method="smtp")
    report = run_daily(NOW, settings)
    sources = {s.name: s for s in report.sources}
    assert sources["sample"].counts.new == 879 and not sources["sample"].error
    hostile = sources["hostile"]
    assert not hostile.error and hostile.counts.new == len(HOSTILE_LINES)
    assert sum(hostile.skipped.values()) == len(SKIPPED_LINES)
    assert "hostile.jsonl line 2" in hostile.skipped_line()
    assert report.by_status() == {"sent": 3}, report.outcomes
    for email in ("ana@example.org", "bo@example.org"):
        [msg] = inbox.to(email)
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        assert "Quokka zzz private use" in html and "Quokka zzz private use" in text
        assert "javascript:" not in html and "<script>x" not in html
        assert "\ue000" not in html
    assert len(inbox.messages) == 3
    # and the next run is quiet: nothing sent twice, the hostile file changes nothing more
    again = run_daily(NOW, settings)
    assert again.by_status() == {"skipped": 3} and len(inbox.messages) == 3


def test_records_the_database_refuses_are_named_and_the_rest_stored(store: Store) -> None:
    """Records made without the cleaning (another tool, an older version) that a backend cannot hold."""
    good = [PaperRecord(id=f"g{i}", title=f"Good paper {i}") for i in range(300)]
    bad = [
        PaperRecord(id="b-big", title="Too many upvotes", upvotes=10**30),
        PaperRecord(id="b-sur", title="Lone \ud800 surrogate"),
        PaperRecord(id="b-" + "x" * 300, title="Id too long for PostgreSQL"),
    ]
    records = good[:100] + bad[:2] + good[100:] + bad[2:]
    counts = store.upsert_papers(records, NOW)
    stored = {p.id for p in store.papers()}
    assert {f"g{i}" for i in range(300)} <= stored
    for b in bad:  # stored whole, or refused and named: never half, never silently
        assert (b.id in stored) != (b.id[:80] in counts.rejected), b.id
    assert "b-big" in counts.rejected and "b-sur" in counts.rejected
    assert "surrogate" in counts.rejected["b-sur"]
    assert counts.new == len(stored) == 300 + sum(1 for b in bad if b.id in stored)


def test_stored_bad_text_renders_for_every_reader(make_config: ConfigFactory, tmp_path: Path) -> None:
    """Rows written before the sources cleaned (lone surrogates, private-use slot look-alikes) still
    render, in the fast renderer and the whole-template one, for the first reader and the second."""
    settings = make_config('[[subscribers]]\nemail = "a@example.org"\n[[subscribers]]\nemail = "b@example.org"\n')
    store = Store(settings.database_url)
    try:
        store.upsert_papers(
            [
                PaperRecord(
                    id="r1",
                    title="Quokka \ue000zzz\ue001 and \ue000href\ue001",
                    abstract="Abstract \ue000pick\ue001 here",
                    authors=["Ana \udc80 Lopez"],
                ),
                PaperRecord(id="r2", title="Plain paper", abstract="Nothing odd."),
            ],
            NOW,
        )
        sync_subscribers(store, settings, NOW)
        papers = store.papers(["r1", "r2"])
        from digest.compose import Pick

        for sub in store.subscribers():
            _, text, html, _ = compose(
                settings,
                "k" * 32,
                sub,
                NOW.date(),
                [Pick(p, 1.0, "matches keyword quokka") for p in papers],
                [],
                2,
                NOW,
            )
            assert "Quokka zzz and href" in html and "Quokka zzz and href" in text
            assert "Ana  Lopez" in html  # the lone surrogate is gone, nothing else changed
            html.encode("utf-8")
    finally:
        store.close()


def test_the_fast_renderer_falls_back_instead_of_crashing() -> None:
    """A paper view holding a slot look-alike (no nonce) renders as text in both renderers, the same."""

    def view(email: str) -> DigestView:
        p = PaperView(
            id="x",
            title="Quokka \ue000zzz\ue001",
            url="https://arxiv.org/abs/1",
            authors="A",
            abstract="text \ue000href\ue001",
            date="1 Nov 2026",
            reason="because",
        )
        return DigestView(
            name="",
            email=email,
            digest_date=NOW.date(),
            picks=[p],
            new_count=1,
            unsubscribe_url="https://x.org/u",
            subject="s",
        )

    for email in ("a@example.org", "b@example.org", "c@example.org"):
        assert render_digest(view(email)) == render_digest_reference(view(email))


def test_a_reader_whose_digest_cannot_be_built_waits_and_the_others_get_theirs(
    make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    """A reader row no message can be built for (a name with a line break, as an older version or
    another tool could have stored it): that reader's digest is recorded pending with the reason and
    retried on the next run; the readers before and after are sent theirs."""
    inbox, port = smtp_server
    settings = make_config(
        '[[sources]]\nkind = "sample"\n'
        + "".join(f'[[subscribers]]\nemail = "{c}@example.org"\nsend_at = "07:00"\n' for c in "ac"),
        smtp_port=port,
        method="smtp",
    )
    store = Store(settings.database_url)
    try:
        store.add_subscribers(
            [{"email": "b@example.org", "name": "B\nBcc: victim@example.org", "send_at": "07:00"}], NOW
        )
        report = run_daily(NOW, settings, store=store)
        statuses = {o.email: o.status for o in report.outcomes}
        assert statuses == {"a@example.org": "sent", "b@example.org": "pending", "c@example.org": "sent"}, (
            report.outcomes
        )
        detail = next(o.detail for o in report.outcomes if o.email == "b@example.org")
        assert "line break" in detail and "next try" in detail
        assert sorted(m["To"].addresses[0].addr_spec for m in inbox.messages) == ["a@example.org", "c@example.org"]
        assert not any("victim" in str(m) for m in inbox.messages)
        [row] = store.deliveries(store.subscriber(email="b@example.org").id)
        assert row.status == "pending" and row.attempts == 1 and "line break" in row.error
    finally:
        store.close()


def test_hostile_line_counts_are_json_safe(tmp_path: Path) -> None:
    """The run report's skip reasons and places are plain strings (they go into JSON and terminals)."""
    result = read_jsonl(hostile_file(tmp_path), source="hostile")
    json.dumps({"skipped": result.skipped, "examples": result.examples})
