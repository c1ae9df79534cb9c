"""End to end: the daily job over a real SQLite file, delivered to a real SMTP server on localhost."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from digest.db import Store
from digest.pipeline import run_daily

from .conftest import ConfigFactory, Inbox

SUBSCRIBERS = """
[[sources]]
kind = "sample"

[[subscribers]]
email = "vision@example.org"
name = "Vera"
timezone = "Europe/Berlin"
send_at = "07:00"
max_papers = 5
liked = ["Spatial Transformer Networks", "A ConvNet for the 2020s", "https://arxiv.org/abs/9999.99999"]
keywords = ["image segmentation", "object detection"]

[[subscribers]]
email = "language@example.org"
name = "Lev"
timezone = "America/New_York"
send_at = "06:30"
max_papers = 5
liked = ["Linearizing Large Language Models", "Backpack Language Models", "Sparse, Dense, and Attentional Representations for Text Retrieval"]
keywords = ["large language models"]
exclude_keywords = ["vision"]
"""

VISION = re.compile(r"image|vision|visual|convolution|segmentation|detection|video|pixel|3d|point cloud|imagenet", re.I)
LANGUAGE = re.compile(r"language|llm|text|token|sentence|retrieval|translation|bert|word|document|query|nlp", re.I)
# 08:00 in Berlin and 07:00 in New York: both are due.
DAY_ONE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def picks_of(msg: EmailMessage) -> list[str]:
    text = msg.get_body(("plain",)).get_content()
    section = text.split("PICKED FOR YOU", 1)[1].split("TRENDING TODAY", 1)[0]
    return [t.strip() for t in re.findall(r"^\d+\. (.+)$", section, re.M)]


def abstract_text(title: str, store: Store) -> str:
    paper = next(p for p in store.papers() if p.title == title)
    return f"{paper.title} {paper.abstract}"


def test_two_subscribers_two_days(make_config: ConfigFactory, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    settings = make_config(SUBSCRIBERS, smtp_port=port, method="smtp")

    report = run_daily(DAY_ONE, settings)
    assert report.by_status() == {"sent": 2}, report.outcomes
    assert report.unmatched_likes == {"vision@example.org": ["https://arxiv.org/abs/9999.99999"]}
    assert len(inbox.messages) == 2

    store = Store(settings.database_url)
    for address, topic, _other in (
        ("vision@example.org", VISION, LANGUAGE),
        ("language@example.org", LANGUAGE, VISION),
    ):
        (msg,) = inbox.to(address)
        assert msg.get_content_type() == "multipart/alternative"
        assert {p.get_content_type() for p in msg.iter_parts()} == {"text/plain", "text/html"}
        assert msg["Message-ID"] and msg["Date"] and "List-Unsubscribe" in msg
        html = msg.get_body(("html",)).get_content()
        titles = picks_of(msg)
        assert len(titles) == 5
        # Papers on the subscriber's own topic come first.
        on_topic = [bool(topic.search(abstract_text(t, store))) for t in titles[:3]]
        assert all(on_topic), (address, titles)
        for t in titles:
            assert t.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&#34;") in html or t in html
    vision_titles = set(picks_of(inbox.to("vision@example.org")[0]))
    language_titles = picks_of(inbox.to("language@example.org")[0])
    assert not vision_titles & set(language_titles)
    for t in language_titles:
        assert "vision" not in abstract_text(t, store).lower()  # exclude_keywords holds

    # Running again the same day sends nothing.
    again = run_daily(DAY_ONE + timedelta(hours=3), settings)
    assert again.by_status() == {"skipped": 2}
    assert len(inbox.messages) == 2

    # The next day: a new digest each, with no paper seen the day before.
    day_two = run_daily(DAY_ONE + timedelta(days=1), settings)
    assert day_two.by_status() == {"sent": 2}
    assert len(inbox.messages) == 4
    for address in ("vision@example.org", "language@example.org"):
        first, second = inbox.to(address)
        assert first["Message-ID"] != second["Message-ID"]
        both = picks_of(first) + picks_of(second)
        assert len(both) == len(set(both)) == 10
    store.close()


def test_not_due_before_the_local_send_time(make_config: ConfigFactory, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    settings = make_config(SUBSCRIBERS, smtp_port=port, method="smtp")
    # 06:30 in Berlin (not yet 07:00), 00:30 in New York.
    report = run_daily(datetime(2026, 11, 23, 5, 30, tzinfo=UTC), settings)
    assert report.by_status() == {"not-due": 2}
    assert inbox.messages == []
    # 07:00 Berlin: only the Berlin subscriber.
    report = run_daily(datetime(2026, 11, 23, 6, 0, tzinfo=UTC), settings)
    assert [(o.email, o.status) for o in report.outcomes if o.status == "sent"] == [("vision@example.org", "sent")]


def test_dry_run_renders_without_sending_or_recording(
    make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = make_config(SUBSCRIBERS, smtp_port=port, method="smtp")
    report = run_daily(DAY_ONE, settings, dry_run=True)
    assert report.by_status() == {"dry-run": 2}
    assert inbox.messages == []
    for out in report.outcomes:
        assert out.html_path is not None and out.html_path.read_text().startswith("<!DOCTYPE html>")
    assert run_daily(DAY_ONE, settings).by_status() == {"sent": 2}
