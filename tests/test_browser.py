"""The whole loop in real headless Chromium: subscribe, confirm, read a digest, "more like this", unsubscribe.

A real uvicorn server on a free localhost port, a real SMTP server (aiosmtpd) catching the
confirmation and the digests, Debian's /usr/bin/chromium driven by Playwright.  Screenshots of the
digest page and the email land in test-artifacts/ (gitignored) for a human to look at.
Skips with the reason when Chromium or Playwright is missing; CI installs both (.ci/run).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.db import Store
from digest.pipeline import run_daily
from digest.web import create_app

from .conftest import REPO, ConfigFactory, Inbox, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LANGUAGE = re.compile(r"language|llm|text|token|sentence|retrieval|translation|bert|word|document|query|nlp", re.I)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")

CONFIG = """
[web]
base_url = "http://127.0.0.1:{port}"

[[sources]]
kind = "sample"

[[subscribers]]
email = "lev@example.org"
timezone = "America/New_York"
liked = ["Linearizing Large Language Models", "Backpack Language Models", "Sparse, Dense, and Attentional Representations for Text Retrieval"]
"""


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.t = moment.timestamp()

    def __call__(self) -> float:
        return self.t

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


@pytest.fixture
def server(
    make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> Iterator[tuple[str, Store, Clock, Inbox, object]]:
    import uvicorn

    inbox, smtp_port = smtp_server
    port = free_port()
    settings = make_config(CONFIG.format(port=port), smtp_port=smtp_port, method="smtp")
    store = Store(settings.database_url)
    clock = Clock(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    run_daily(clock.now, settings, store=store, force=True)  # papers in, Lev's likes make the trending list
    inbox.messages.clear()
    config = uvicorn.Config(
        create_app(settings, store=store, clock=clock), host="127.0.0.1", port=port, log_level="warning"
    )
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert web.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", store, clock, inbox, settings
    finally:
        web.should_exit = True
        thread.join(5)
        store.close()


def _similarity(store: Store, target: str):
    """Mean TF-IDF cosine similarity of some titles' papers to the target paper."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    papers = {p.title: f"{p.title} {p.abstract}" for p in store.papers()}
    vectorizer = TfidfVectorizer(stop_words="english").fit(papers.values())
    goal = vectorizer.transform([papers[target]])
    return lambda titles: float((vectorizer.transform([papers[t] for t in titles]) @ goal.T).mean())


def _titles(page) -> list[str]:
    return [t.strip() for t in page.locator("td.paper a.title").all_inner_texts()]


def test_subscribe_confirm_digest_more_like_this_unsubscribe(server) -> None:
    base, store, clock, inbox, settings = server
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.set_default_timeout(10_000)
            # Subscribe, finding a liked paper with the search.
            phone.goto(f"{base}/subscribe")
            phone.fill("#q", "ConvNet for the 2020s")
            phone.click("button:has-text('Search')")
            phone.check("input[name=liked_id] >> nth=0")
            phone.fill("#email", "ida@example.org")
            phone.fill("#name", "Ida")
            phone.fill("#timezone", "Europe/Paris")
            phone.fill("#keywords", "object detection")
            phone.screenshot(path=str(ARTIFACTS / "subscribe-phone.png"), full_page=True)
            phone.click("button:has-text('Subscribe')")
            assert "Check your inbox" in phone.inner_text("h1")
            assert store.subscriber(email="ida@example.org").active is False

            # Confirm through the link the SMTP server caught.
            (confirm,) = inbox.to("ida@example.org")
            link = re.search(
                r"http://127\.0\.0\.1:\d+/confirm\?t=\S+", confirm.get_body(("plain",)).get_content()
            ).group(0)
            phone.goto(link)
            phone.click("button:has-text('Confirm my subscription')")
            assert "You are subscribed" in phone.inner_text("h1")

            # The daily job sends her a digest; look at it as the email and as the web page.
            inbox.messages.clear()
            run_daily(clock.now, settings, store=store, force=True)
            (digest,) = inbox.to("ida@example.org")
            html = digest.get_body(("html",)).get_content()
            (ARTIFACTS / "email.html").write_text(html, encoding="utf-8")
            mail = browser.new_page(viewport={"width": 720, "height": 900})
            mail.set_default_timeout(10_000)
            mail.set_content(html)
            mail.screenshot(path=str(ARTIFACTS / "email.png"), full_page=True)
            mail.screenshot(path=str(ARTIFACTS / "email-top.png"))
            day_one = _titles(mail)[:10]

            browser_link = mail.locator("a:has-text('View in your browser')").get_attribute("href")
            phone.goto(browser_link)
            assert "picked for you" in phone.inner_text("body").lower()
            phone.screenshot(path=str(ARTIFACTS / "digest-page-phone.png"), full_page=True)

            # "More like this" on a trending language paper, clicked in the email itself.
            entry = mail.locator("td.paper", has=mail.locator("a.title", has_text=LANGUAGE)).last
            target = entry.locator("a.title").inner_text().strip()
            entry.locator("a.more").click()
            mail.wait_for_load_state()
            assert target in mail.inner_text("body")  # the link asks (a mail scanner's visit records nothing)
            mail.click("button:has-text('Yes, more like this')")
            assert "Thanks, noted" in mail.inner_text("h1") and target in mail.inner_text("body")

            # The next day's digest moves towards that paper's topic.
            clock.t += timedelta(days=1).total_seconds()
            inbox.messages.clear()
            run_daily(clock.now, settings, store=store, force=True)
            (second,) = inbox.to("ida@example.org")
            mail.set_content(second.get_body(("html",)).get_content())
            day_two = _titles(mail)[:10]
            closeness = _similarity(store, target)
            assert closeness(day_two) > closeness(day_one), (target, day_one, day_two)

            # Unsubscribe from the footer link: a confirm page, then a button.
            mail.locator("a:has-text('Unsubscribe')").click()
            mail.click("button:has-text('Unsubscribe')")
            assert "You are unsubscribed" in mail.inner_text("h1")
            mail.screenshot(path=str(ARTIFACTS / "unsubscribed.png"))
            assert store.subscriber(email="ida@example.org").active is False
        finally:
            browser.close()
    assert time.monotonic() - started < 60
