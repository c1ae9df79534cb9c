"""`digest send --now` in the future leaves nothing that breaks the real present: its links open now
(signed no later than the real clock), and no source checkpoint moves past the real today."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

from pytest_httpserver import HTTPServer
from starlette.testclient import TestClient
from typer.testing import CliRunner
from werkzeug import Request, Response

from digest.cli import app
from digest.db import Store
from digest.pipeline import ingest
from digest.web import create_app

from .conftest import ConfigFactory, Inbox
from .source_feeds import hf_item, hf_json, hf_source


def test_a_send_two_days_ahead_signs_links_that_open_now_and_keeps_the_checkpoint_to_today(
    httpserver: HTTPServer, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    real = datetime.now(UTC)
    asked: list[str] = []

    def papers(request: Request) -> Response:
        asked.append(request.args.get("date", ""))
        published = (real - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        items = [hf_item(f"2611.2000{i}", f"Diffusion policies, part {i}", published=published) for i in range(4)]
        return Response(hf_json(*items), content_type="application/json")

    httpserver.expect_request("/api/daily_papers").respond_with_handler(papers)
    settings = make_config(
        f"""
[web]
base_url = "https://digest.example.org"
{hf_source(httpserver.url_for(""), max_days=3)}
[[subscribers]]
email = "ada@example.org"
keywords = ["diffusion"]
""",
        smtp_port=port,
        method="smtp",
    )
    ahead = real + timedelta(days=2)
    result = CliRunner().invoke(
        app, ["send", "--config", str(settings.config_path), "--force", "--now", ahead.isoformat()]
    )
    assert result.exit_code == 0, result.output
    assert f"ada@example.org: sent ({ahead.date()})" in result.output

    # The checkpoint is no later than the real today (in fact yesterday: today's list still grows),
    # and no day after the real today was asked for.
    today = real.date()
    store = Store(settings.database_url)
    try:
        assert store.source_cursor("hf") == (today - timedelta(days=1)).isoformat()
        assert max(asked) == today.isoformat()
        asked.clear()
        ingest(store, settings, datetime.now(UTC), sleep=lambda s: None)  # the next real run
        assert asked == [today.isoformat()]  # today is fetched again, not skipped
    finally:
        store.close()

    # Every link in the message opens today, on a web front with the real clock.
    (msg,) = inbox.to("ada@example.org")
    html = msg.get_body(("html",)).get_content()
    urls = sorted({unescape(u) for u in re.findall(r'href="(https://digest\.example\.org/[^"]+)"', html)})
    kinds = {re.match(r"https://digest\.example\.org/(\w+)", u).group(1) for u in urls}  # type: ignore[union-attr]
    assert kinds >= {"click", "feedback", "preferences", "digest", "unsubscribe"}, kinds
    with TestClient(create_app(settings), base_url="https://digest.example.org") as web:
        for url in urls:
            answer = web.get(url.removeprefix("https://digest.example.org"), follow_redirects=False)
            assert answer.status_code in (200, 303), (url, answer.status_code, answer.text[:300])
