"""The email works on its own: without a web front ([web] base_url empty) every link goes straight to
the paper, its PDF and its code, and nothing points at a server that is not there; with one, the
tracked links and the More/Fewer buttons are back.  Both through the fast renderer and the template."""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.compose import Pick, compose, digest_view
from digest.db import Paper, Store, Subscriber
from digest.deliver import build_message, message_bytes
from digest.links import unsubscribe_mailto
from digest.pipeline import run_daily
from digest.render import _pieces, render_digest, render_digest_reference

from .conftest import ConfigFactory
from .source_feeds import hf_item, hf_json, hf_source

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
EVIL_CODE = 'https://github.com/o/r?a=1&b="x"<script>'


def _paper(pid: str, title: str, **extra: object) -> Paper:
    return Paper(
        id=pid,
        title=title,
        title_key=title.lower(),
        abstract="An abstract.",
        authors=["Grace Hopper"],
        first_seen=NOW,
        last_changed=NOW,
        **extra,  # type: ignore[arg-type]
    )


PICKS = [
    Pick(_paper("2106.09685", "LoRA & <friends>", code_url=EVIL_CODE), 1.0, "matches keyword lora"),
    Pick(
        _paper(
            "2611.10001",
            "From Hugging Face",
            url="https://huggingface.co/papers/2611.10001",
            pdf_url="https://arxiv.org/pdf/2611.10001v2",
            code_url="javascript:alert(1)",  # a row stored before the sources cleaned code links
        ),
        0.5,
        "",
    ),
    Pick(_paper("t-abc", "No arXiv id", url="https://example.org/paper"), 0.2, ""),
]
TREND = [(_paper("2611.20005", "Trending one", code_url="https://github.com/t/t", upvotes=9), 9)]


def _compose(settings):  # type: ignore[no-untyped-def]
    sub = Subscriber(id=7, email="ada@example.org", name="Ada", created=NOW)
    return compose(settings, "k" * 32, sub, date(2026, 11, 23), PICKS, TREND, 40, NOW, clock=lambda: NOW)


def _tags(html: str) -> set[str]:
    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[str] = set()

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.seen.add(tag)

    parser = Tags()
    parser.feed(html)
    return parser.seen


def _hrefs(html: str) -> list[str]:
    return [htmllib.unescape(h) for h in re.findall(r'href="([^"]*)"', html)]


def _same_through_both_renderers(settings) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Text and HTML of the digest, after checking the fast pieces give the template's HTML byte for byte."""
    sub = Subscriber(id=7, email="ada@example.org", name="Ada", created=NOW)
    view, _ = digest_view(settings, "k" * 32, sub, date(2026, 11, 23), PICKS, TREND, 40, NOW, clock=lambda: NOW)
    text, html = render_digest_reference(view)
    assert _pieces(None).html(view) == html  # the fast path itself, not its fallback
    assert render_digest(view) == (text, html)
    return text, html


def test_without_a_web_front_every_link_goes_straight_to_the_paper(make_config: ConfigFactory) -> None:
    settings = make_config(web=False)
    assert settings.web.base_url == ""
    text, html = _same_through_both_renderers(settings)
    hrefs = _hrefs(html)
    assert not [h for h in hrefs if "/click" in h or "/feedback" in h or "/preferences" in h or "/digest" in h]
    assert "More like this" not in html and "Fewer like this" not in html and "View in your browser" not in html
    assert "More like this" not in text and "Manage preferences" not in text
    # The title goes to the paper's page: arXiv's, Hugging Face's, or the source's own.
    titles = re.findall(r'class="title" href="([^"]*)"', html)
    assert titles == [
        "https://arxiv.org/abs/2106.09685",
        "https://huggingface.co/papers/2611.10001",
        "https://example.org/paper",
        "https://arxiv.org/abs/2611.20005",
    ]
    # The arXiv id, the PDF and the code repository, straight to their sites, escaped.
    assert ">arXiv:2106.09685</a>" in html and "https://arxiv.org/pdf/2106.09685" in hrefs
    assert "https://arxiv.org/abs/2611.10001" in hrefs and "https://arxiv.org/pdf/2611.10001v2" in hrefs
    assert EVIL_CODE in hrefs and 'href="https://github.com/o/r?a=1&amp;b=&quot;x&quot;<script>"' in html
    assert "script" not in _tags(html)  # the quote is escaped: it stays inside the attribute
    assert "https://github.com/t/t" in hrefs  # trending entries have them too
    assert not [h for h in hrefs if h.startswith("javascript:")]
    assert "arXiv:t-abc" not in html and html.count('class="pdf"') == 3  # no arXiv id: no made-up links
    assert "   https://arxiv.org/abs/2106.09685\n" in text  # under the title, so the id needs no second link
    assert "   arXiv:2106.09685\n   PDF: https://arxiv.org/pdf/2106.09685\n" in text
    assert f"   Code: {EVIL_CODE}\n" in text and "   Code: javascript" not in text
    assert "   https://huggingface.co/papers/2611.10001\n" in text
    assert "   arXiv:2611.10001 https://arxiv.org/abs/2611.10001\n   PDF: https://arxiv.org/pdf/2611.10001v2\n" in text
    assert "  arXiv:2611.20005\n  PDF: https://arxiv.org/pdf/2611.20005\n  Code: https://github.com/t/t\n" in text
    # Unsubscribing is an email to the sender, said in words, and the only List-Unsubscribe.
    mailto = unsubscribe_mailto("digest@localhost", "ada@example.org")
    assert mailto in hrefs and "sends an email asking the sender to stop" in html
    assert f"Unsubscribe (sends an email asking the sender to stop): {mailto}" in text


def test_without_a_web_front_list_unsubscribe_is_the_mailto_alone(make_config: ConfigFactory) -> None:
    settings = make_config(web=False)
    envelope, text, html, unsub = _compose(settings)
    assert unsub == ""
    mailto = unsubscribe_mailto(envelope.sender.addr_spec, "ada@example.org")
    built = build_message(envelope, text, html, unsubscribe_url=unsub, unsubscribe_mailto=mailto)
    wire = message_from_bytes(
        message_bytes(envelope, text, html, unsubscribe_url=unsub, unsubscribe_mailto=mailto), policy=policy.default
    )
    for msg in (built, wire):
        assert msg["List-Unsubscribe"] == f"<{mailto}>"
        assert msg["List-Unsubscribe-Post"] is None  # one-click needs an https URL to POST to


def test_with_a_web_front_the_tracked_links_and_buttons_are_there(make_config: ConfigFactory) -> None:
    settings = make_config('[web]\nbase_url = "https://digest.example.org"\n')
    text, html = _same_through_both_renderers(settings)
    hrefs = _hrefs(html)
    titles = re.findall(r'class="title" href="([^"]*)"', html)
    assert len(titles) == 4 and all(t.startswith("https://digest.example.org/click?t=") for t in titles)
    assert sum(h.startswith("https://digest.example.org/feedback?t=") for h in hrefs) == 8
    assert "More like this" in html and "View in your browser" in html and "Manage preferences" in html
    assert any(h.startswith("https://digest.example.org/unsubscribe?t=") for h in hrefs)
    assert "sends an email asking the sender to stop" not in html
    # The direct links stay direct: the reader can still reach the paper if the front is down.
    assert "https://arxiv.org/abs/2106.09685" in hrefs and EVIL_CODE in hrefs
    assert "   arXiv:2106.09685 https://arxiv.org/abs/2106.09685\n" in text
    assert "More like this: https://digest.example.org/feedback?t=" in text


OFF_TOPIC = [
    "Robot grasping with tactile sensors",
    "Speech recognition for low-resource languages",
    "Graph neural networks for molecules",
    "Reinforcement learning for traffic control",
    "Protein folding with language models",
    "Compilers for sparse tensor algebra",
]


def test_a_hugging_face_paper_arrives_with_its_code_link(
    httpserver: HTTPServer, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """From the daily papers API's githubRepo to the .eml in the outbox, with no web front."""

    def papers(request: Request) -> Response:
        if request.args.get("date") != "2026-11-22":
            return Response("[]", content_type="application/json")
        return Response(
            hf_json(
                hf_item("2611.10001", "Diffusion with code", github="https://github.com/lab/diffusion"),
                hf_item("2611.10002", "Diffusion without code", github=None),
                hf_item("2611.10003", "Diffusion, bad code link", github="javascript:alert(1)"),
                # the rest of a real day, off this reader's topic (the relevance floor is relative to the day)
                *(hf_item(f"2611.1010{i}", t) for i, t in enumerate(OFF_TOPIC)),
            ),
            content_type="application/json",
        )

    httpserver.expect_request("/api/daily_papers").respond_with_handler(papers)
    settings = make_config(
        hf_source(httpserver.url_for(""), max_days=3)
        + '\n[[subscribers]]\nemail = "ada@example.org"\nkeywords = ["diffusion"]\nsend_at = "00:00"\n',
        web=False,
    )
    store = Store(settings.database_url)
    try:
        report = run_daily(NOW, settings, store=store, force=True)
        assert [o.status for o in report.outcomes] == ["sent"], report.outcomes
        assert [p.code_url for p in store.papers(["2611.10001", "2611.10002", "2611.10003"])] == [
            "https://github.com/lab/diffusion",
            "",
            "",
        ]
    finally:
        store.close()
    [eml] = (settings.outbox_path / "2026-11-23").glob("*.eml")
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert 'href="https://github.com/lab/diffusion"' in html and "Code: https://github.com/lab/diffusion" in text
    assert html.count('class="code"') == 1 and "javascript:" not in html
    assert 'href="https://huggingface.co/papers/2611.10001"' in html and ">arXiv:2611.10001</a>" in html
    assert "https://arxiv.org/pdf/2611.10001" in html and "PDF: https://arxiv.org/pdf/2611.10001" in text
    assert "/click?" not in html and "/feedback?" not in html and "More like this" not in text
    assert str(msg["List-Unsubscribe"]).strip().startswith("<mailto:") and msg["List-Unsubscribe-Post"] is None
