"""A researcher signs up on the web from what they have: arXiv ids the store lacks, and their library file.

Real parts: a real SMTP server for the confirmation mail, a real local HTTP server answering like
arXiv's API `id_list`, the Starlette app over a real SQLite file.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pytest_httpserver import HTTPServer
from starlette.testclient import TestClient

from digest.db import Kind, Store
from digest.web.app import create_app

from .conftest import ConfigFactory, Inbox
from .source_feeds import arxiv_rss_source
from .test_lookup import answer_id_list

LIBRARY = Path(__file__).parent / "data" / "libraries" / "zotero.bib"
WEB = '\n[web]\nbase_url = "https://digest.example.org"\n'


@dataclass
class Front:
    store: Store
    client: TestClient
    inbox: Inbox
    asked: list

    def subscribe(self, *, library: tuple[str, bytes] | None = None, **fields: str):
        page = self.client.get("/subscribe")
        assert 'enctype="multipart/form-data"' in page.text and 'name="library"' in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        data = {"csrf": csrf.group(1), "timezone": "UTC", "send_at": "07:30", **fields}
        files = {"library": (library[0], library[1], "text/plain")} if library else None
        return self.client.post("/subscribe", data=data, files=files)

    def confirm(self, email: str):
        (msg,) = self.inbox.to(email)
        link = re.search(r"https://digest\.example\.org/confirm\?t=\S+", msg.get_body(("plain",)).get_content())
        assert link
        parts = urlsplit(link.group(0))
        page = self.client.get(f"{parts.path}?{parts.query}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        return self.client.post(f"{parts.path}?{parts.query}", data={"csrf": csrf.group(1)})

    def likes(self, email: str) -> set[str]:
        row = self.store.subscriber(email=email)
        assert row is not None
        return self.store.paper_ids_for(row.id, [Kind.LIKE])


@pytest.fixture
def front(httpserver: HTTPServer, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]) -> Iterator[Front]:
    inbox, port = smtp_server
    asked = answer_id_list(httpserver)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")) + WEB, smtp_port=port, method="smtp")
    store = Store(settings.database_url)
    try:
        with TestClient(create_app(settings, store=store), base_url="https://digest.example.org") as client:
            yield Front(store, client, inbox, asked)
    finally:
        store.close()


def test_arxiv_ids_the_store_lacks_are_looked_up_at_sign_up(front: Front) -> None:
    done = front.subscribe(email="ada@example.org", liked="2305.18290\nhttps://arxiv.org/abs/2203.02155v1")
    assert done.status_code == 200 and "Check your inbox" in done.text, done.text
    assert [r.args["id_list"] for r in front.asked] == ["2305.18290,2203.02155"]  # one request for both
    assert front.likes("ada@example.org") == {"2305.18290", "2203.02155"}
    [dpo] = front.store.papers(["2305.18290"])
    assert dpo.title == "Direct Preference Optimization"
    assert not front.store.subscriber(email="ada@example.org").active  # still waits for the link

    wrong = front.subscribe(email="bo@example.org", liked="2305.18290\n2399.99999")
    assert wrong.status_code == 400 and "arXiv has no paper 2399.99999; check the id" in wrong.text
    assert front.store.subscriber(email="bo@example.org") is None  # nothing kept for a refused form
    assert 'value="bo@example.org"' in wrong.text  # what they typed is still there


def test_a_failed_lookup_is_a_clear_form_error_not_a_5xx(
    httpserver: HTTPServer, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    asked = answer_id_list(httpserver, status=503)
    settings = make_config(arxiv_rss_source(httpserver.url_for("")) + WEB, smtp_port=port, method="smtp")
    store = Store(settings.database_url)
    try:
        with TestClient(create_app(settings, store=store), base_url="https://digest.example.org") as client:
            front = Front(store, client, inbox, [])
            answer = front.subscribe(email="cy@example.org", liked="2305.18290")
        assert answer.status_code == 400
        assert "could not look up 2305.18290 at arXiv just now; try again in a few minutes" in answer.text
        assert store.subscriber(email="cy@example.org") is None and not inbox.messages
        assert len(asked) == 1  # a form waits for one quick try, not the source's retries (max_attempts 2)
    finally:
        store.close()


def test_a_library_uploaded_at_sign_up_becomes_likes_only_on_confirmation(front: Front) -> None:
    done = front.subscribe(email="ada@example.org", library=("My Zotero.bib", LIBRARY.read_bytes()))
    assert done.status_code == 200, done.text
    assert "The 5 papers of your library My Zotero.bib become papers you liked when you confirm." in done.text
    assert front.likes("ada@example.org") == set()  # not before the link is used
    assert front.store.papers(["2305.18290"]) == []  # nor are its papers stored for a stranger's form

    confirmed = front.confirm("ada@example.org")
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert "Your library My Zotero.bib: 6 entries, 5 papers, 2 problems" in confirmed.text
    assert "5 liked (5 new papers, 0 already known)" in confirmed.text
    liked = front.likes("ada@example.org")
    assert len(liked) == 5 and "2305.18290" in liked
    assert front.store.recent_paper_ids(datetime.now(UTC) - timedelta(days=7)) == []  # never news


@pytest.mark.parametrize(
    "name, data, why",
    [
        ("photo.bib", random.Random(3).randbytes(4000), "photo.bib: not a text file"),
        ("notes.txt", b"just some notes, no entries at all\n", "notes.txt: not a BibTeX, RIS or CSL-JSON library"),
    ],
)
def test_a_bad_library_file_refuses_the_sign_up_with_why_and_keeps_nothing(
    front: Front, name: str, data: bytes, why: str
) -> None:
    answer = front.subscribe(email="dee@example.org", name="Dee", library=(name, data))
    assert answer.status_code == 400 and why in answer.text, answer.text
    assert "Choose a BibTeX, RIS or CSL-JSON export and send the form again." in answer.text
    assert 'value="Dee"' in answer.text
    assert front.store.subscriber(email="dee@example.org") is None and not front.inbox.messages
