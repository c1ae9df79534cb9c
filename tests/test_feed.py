"""The personal Atom feed and feed-only delivery, over real parts.

The feed (`/feed?t=`) through the Starlette TestClient over a real SQLite store that the daily job
filled: it parses in feedparser without bozo, has RFC 4287's required elements (checked with
ElementTree), answers conditional GETs with 304, refuses forged, altered, wrong-purpose and revoked
links with 404 and no data, and stops (410) once its reader unsubscribes.  Feed-only readers are
ranked and recorded, never mailed, in both daily modes (`run_daily`; a planner and workers), on a
SQLite file and on PostgreSQL, against a real SMTP server on localhost.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from starlette.testclient import TestClient

from digest import links
from digest.db import DeliveryStatus, Kind, Store
from digest.errors import ConfigError
from digest.pipeline import run_daily
from digest.settings import Settings
from digest.sources.base import PaperRecord
from digest.web import create_app
from digest.workers import plan_day, work

from .conftest import ConfigFactory, Inbox, write_config

DAY_ONE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HOST = "https://digest.example.org"
A = "{http://www.w3.org/2005/Atom}"

TOPICS = ["graph neural networks", "image segmentation", "language models", "reinforcement learning"]
CONFIG = """
[web]
base_url = "https://digest.example.org"
link_limit = 1000

[ranking]
min_score = -1e9  # a small corpus: every day has its picks

[[sources]]
kind = "jsonl"
path = "papers.jsonl"

[[subscribers]]
email = "vera@example.org"
name = "Vera"
max_papers = 4
keywords = ["segmentation"]

[[subscribers]]
email = "fay@example.org"
name = "Fay"
max_papers = 4
delivery = "feed"
keywords = ["language models"]
"""


def write_papers(folder: Path) -> None:
    """Sixteen small papers for each of two days (a corpus the ranker fits in a blink)."""
    import json

    lines = [
        json.dumps(
            {
                "id": f"2611.{day}{i:04d}",
                "title": f"Paper {day}-{i} on {topic}",
                "published": (DAY_ONE + timedelta(days=day, hours=-6)).isoformat(),
                "abstract": f"A study of {topic}, number {i}, with experiments. We find {topic} matters.",
                "authors": ["Ada Lovelace", "Alan Turing"],
                "categories": ["cs.LG"],
            }
        )
        for day in (0, 1)
        for i, topic in enumerate(TOPICS * 4)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "papers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.t = moment.timestamp()

    def __call__(self) -> float:
        return self.t

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


@dataclass
class World:
    settings: Settings
    store: Store
    clock: Clock
    client: TestClient

    def outbox(self, email: str) -> EmailMessage:
        path = self.settings.outbox_path / DAY_ONE.date().isoformat() / f"{email}.eml"
        return message_from_bytes(path.read_bytes(), policy=policy.default)

    def feed_link(self, email: str) -> str:
        sub = self.store.subscriber(email=email)
        assert sub is not None
        url = links.feed_url(self.settings, links.secret_key(self.settings), sub.id, sub.feed_key, clock=self.clock)
        return local(url)


_TEMPLATE: list[Path] = []


def _template(folder: Path) -> Path:
    """The data folder after the first daily run (built once per session, copied per test)."""
    if not _TEMPLATE:
        write_papers(folder)
        settings = write_config(folder, CONFIG)
        store = Store(settings.database_url)
        try:
            report = run_daily(DAY_ONE, settings, store=store, force=True)
            assert report.by_status() == {"sent": 1, "in-feed": 1}, report.outcomes
        finally:
            store.close()
        _TEMPLATE.append(folder / "data")
    return _TEMPLATE[0]


@pytest.fixture
def world(make_config: ConfigFactory, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    template = _template(tmp_path_factory.mktemp("feed-world"))
    write_papers(tmp_path)
    settings = make_config(CONFIG)
    shutil.copytree(template, settings.data_path, dirs_exist_ok=True)
    store = Store(settings.database_url)
    clock = Clock(DAY_ONE + timedelta(hours=1))
    with TestClient(create_app(settings, store=store, clock=clock), base_url=HOST) as client:
        yield World(settings, store, clock, client)
    store.close()


def local(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == HOST, url
    return f"{parts.path}?{parts.query}"


def titles_of(world: World, email: str) -> list[str]:
    sub = world.store.subscriber(email=email)
    assert sub is not None
    row = world.store.delivery(sub.id, DAY_ONE.date())
    assert row is not None
    titles = {p.id: p.title for p in world.store.papers(row.papers)}
    return [titles[pid] for pid in row.papers]


def no_data(world: World, text: str) -> None:
    """Nothing of any reader's picks or address in a refusal."""
    for email in ("vera@example.org", "fay@example.org"):
        assert email not in text
        for title in titles_of(world, email):
            assert title not in unescape(text)


# -- the feed ---------------------------------------------------------------------------------


def test_the_email_footer_links_the_feed_which_parses_cleanly_with_the_digests_papers_in_order(world: World) -> None:
    msg = world.outbox("vera@example.org")
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    [in_html] = re.findall(r'href="(https://digest\.example\.org/feed\?t=[^"]+)"[^>]*>Your picks as a feed', html)
    [in_text] = re.findall(r"Your picks as a feed \(Atom\): (\S+)", text)
    assert unescape(in_html) == in_text

    response = world.client.get(local(in_text))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert "private" in response.headers["cache-control"] and "no-store" not in response.headers["cache-control"]
    parsed = feedparser.parse(response.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    vera = world.store.subscriber(email="vera@example.org")
    row = world.store.delivery(vera.id, DAY_ONE.date())
    assert row is not None and row.status == DeliveryStatus.SENT
    papers = {p.id: p for p in world.store.papers(row.papers)}
    assert [e.title for e in parsed.entries] == [papers[pid].title for pid in row.papers]  # the digest's order
    for entry, pid, reason in zip(parsed.entries, row.papers, row.reasons):
        assert not entry.link.startswith(HOST) and entry.link.startswith("https://")  # the paper's own page
        assert entry.id.startswith("tag:digest.example.org,") and pid in entry.id
        if reason:
            assert unescape(reason) in unescape(entry.content[0].value)
    stamps = [e.updated_parsed for e in parsed.entries]
    assert stamps == sorted(stamps, reverse=True)  # readers sorting by date keep the digest's order
    assert parsed.feed.links[0].rel == "self" and parsed.feed.links[0].href == HOST + local(in_text)


def test_the_feed_has_the_required_atom_elements(world: World) -> None:
    """RFC 4287 4.1.1 / 4.1.2: feed id, title, updated, author (or one per entry), link rel=self;
    entry id (unique), title, updated, link rel=alternate (no content src), content type=html."""
    body = world.client.get(world.feed_link("fay@example.org")).content
    root = ET.fromstring(body)
    assert root.tag == A + "feed"
    for name in ("id", "title", "updated"):
        assert len(root.findall(A + name)) == 1 and (root.findtext(A + name) or "").strip(), name
    assert root.find(f"{A}author/{A}name") is not None
    assert [link.get("href") for link in root.findall(A + "link") if link.get("rel") == "self"]
    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
    assert rfc3339.match(root.findtext(A + "updated") or "")
    entries = root.findall(A + "entry")
    assert len(entries) == len(titles_of(world, "fay@example.org")) > 0
    ids = [e.findtext(A + "id") for e in entries]
    assert len(set(ids)) == len(ids) and all(i and i.startswith("tag:") for i in ids)
    for e in entries:
        assert (e.findtext(A + "title") or "").strip()
        assert rfc3339.match(e.findtext(A + "updated") or "")
        alternate = [link for link in e.findall(A + "link") if link.get("rel") == "alternate"]
        assert len(alternate) == 1 and alternate[0].get("href", "").startswith("https://arxiv.org/")
        content = e.find(A + "content")
        assert content is not None and content.get("type") == "html" and "<p>" in (content.text or "")


def test_conditional_gets_get_304_until_a_new_digest_is_delivered(world: World) -> None:
    url = world.feed_link("vera@example.org")
    first = world.client.get(url)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert first.status_code == 200 and etag.startswith('"')
    again = world.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert world.client.get(url, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert world.client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    assert world.client.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200
    assert world.client.get(url, headers={"If-None-Match": '"stale"', "If-Modified-Since": modified}).status_code == 200
    assert world.client.get(url, headers={"If-Modified-Since": "not a date"}).status_code == 200

    # The next day's digest, delivered through the queue, with hostile text in it: a new ETag, the
    # new digest first, everything escaped.
    vera = world.store.subscriber(email="vera@example.org")
    day_two = DAY_ONE + timedelta(days=1)
    hostile = PaperRecord.make(
        id="2611.77777",
        title="Attention <script>alert(1)</script> & friends",
        abstract="We study </content> and ]]> in feeds.",
        authors=["Ada <Lovelace>"],
        published=day_two,
    )
    world.store.upsert_papers([hostile], day_two)
    row = world.store.create_delivery(
        vera.id, day_two.date(), [hostile.id], "<m@x>", day_two, reasons=["because <b>you</b> liked \x01 it"]
    )
    row.highlights = ["<img src=x onerror=alert(1)> the sentence"]
    world.store.record_outcome(row, DeliveryStatus.SENT, day_two, worker="")
    newer = world.client.get(url, headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert newer.status_code == 200 and newer.headers["etag"] != etag
    parsed = feedparser.parse(newer.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.entries[0].title == hostile.title
    assert len(parsed.entries) == len(titles_of(world, "vera@example.org")) + 1
    entry = ET.fromstring(newer.content).find(A + "entry")
    assert entry is not None
    content = entry.findtext(A + "content") or ""
    assert "<script" not in content and "<img" not in content and "<b>" not in content  # text, not markup
    assert "&lt;b&gt;you&lt;/b&gt;" in content and "\x01" not in content


def test_forged_altered_wrong_purpose_and_revoked_links_get_404_and_no_data(world: World) -> None:
    key = links.secret_key(world.settings)
    fay = world.store.subscriber(email="fay@example.org")
    good = world.feed_link("fay@example.org")
    assert world.client.get(good).status_code == 200
    token = good.split("t=", 1)[1]
    body, tag = token.split(".")
    altered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + tag
    bad = {
        "forged": links.make_token("another-key" * 3, links.FEED, {"s": fay.id, "k": ""}),
        "altered": altered,
        "truncated": token[:-3],
        "wrong purpose": links.make_token(key, links.MANAGE, {"s": fay.id, "k": ""}),
        "another key": links.make_token(key, links.FEED, {"s": fay.id, "k": "guess"}),
        "unknown reader": links.make_token(key, links.FEED, {"s": 999, "k": ""}),
        "no reader": links.make_token(key, links.FEED, {"k": ""}),
        "empty": "",
    }
    for why, t in bad.items():
        response = world.client.get(f"/feed?t={t}", headers={"If-None-Match": "*"})
        assert response.status_code == 404, why
        assert "etag" not in response.headers, why
        no_data(world, response.text)

    # "New feed link" on the preferences page: the old link stops at once, the new one works.
    manage = local(links.manage_url(world.settings, key, fay.email, clock=world.clock))
    page = world.client.get(manage)
    assert page.status_code == 200
    shown = re.search(r'id="feed_url" readonly value="([^"]+)"', page.text)
    assert shown and world.client.get(local(unescape(shown.group(1)))).status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    rotated = world.client.post(manage.replace("/preferences?", "/preferences/feed?"), data={"csrf": csrf.group(1)})
    assert rotated.status_code == 200 and "new link" in rotated.text
    new = re.search(r'id="feed_url" readonly value="([^"]+)"', rotated.text)
    assert new
    for old in (good, local(unescape(shown.group(1)))):
        response = world.client.get(old)
        assert response.status_code == 404
        no_data(world, response.text)
    assert world.client.get(local(unescape(new.group(1)))).status_code == 200
    assert world.client.post(manage.replace("/preferences?", "/preferences/feed?"), data={}).status_code == 403


def test_an_unsubscribed_readers_feed_stops(world: World) -> None:
    url = world.feed_link("vera@example.org")
    etag = world.client.get(url).headers["etag"]
    world.store.unsubscribe("vera@example.org", DAY_ONE)
    for headers in ({}, {"If-None-Match": etag}):
        response = world.client.get(url, headers=headers)
        assert response.status_code == 410 and "etag" not in response.headers
        no_data(world, response.text)


def test_feed_polls_are_rate_limited_like_every_link(make_config: ConfigFactory, world: World) -> None:
    settings = world.settings.model_copy(update={"web": world.settings.web.model_copy(update={"link_limit": 3})})
    url = world.feed_link("vera@example.org")
    with TestClient(create_app(settings, store=world.store, clock=world.clock), base_url=HOST) as client:
        assert [client.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_web_reader_chooses_feed_only_on_the_preferences_page(world: World) -> None:
    key = links.secret_key(world.settings)
    world.store.request_subscription("wes@example.org", {"name": "Wes"}, [], DAY_ONE, nonce="n1")
    wes = world.store.confirm_subscription("wes@example.org", DAY_ONE, nonce="n1")
    assert wes is not None and wes.delivery == "email"
    empty = feedparser.parse(world.client.get(world.feed_link(wes.email)).content)  # no digest yet: a valid, empty feed
    assert empty.bozo == 0 and empty.entries == [] and empty.feed.title == "Paper picks for Wes"
    manage = local(links.manage_url(world.settings, key, wes.email, clock=world.clock))
    page = world.client.get(manage)
    assert 'name="delivery"' in page.text and 'id="feed_url"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    form = {"csrf": csrf.group(1), "timezone": "UTC", "send_at": "07:30", "max_papers": "5"}
    assert world.client.post(manage, data=form | {"delivery": "fax"}).status_code == 400
    saved = world.client.post(manage, data=form | {"delivery": "feed"})
    assert saved.status_code == 200, saved.text
    assert world.store.subscriber(email="wes@example.org").delivery == "feed"


# -- settings ---------------------------------------------------------------------------------


def test_delivery_is_checked_in_the_config(make_config: ConfigFactory) -> None:
    reader = '\n[[subscribers]]\nemail = "a@example.org"\ndelivery = "{}"\n'
    assert make_config(reader.format("Both")).subscribers[0].delivery == "both"
    with pytest.raises(ConfigError, match='not a delivery; use "email", "feed"'):
        make_config(reader.format("rss"))
    with pytest.raises(ConfigError, match=r"needs \[web\] base_url"):
        make_config(reader.format("feed"), web=False)
    assert make_config(reader.format("email"), web=False).subscribers[0].delivery == "email"


def test_no_feed_link_in_the_email_without_a_web_front(make_config: ConfigFactory, tmp_path: Path) -> None:
    write_papers(tmp_path)
    settings = make_config(
        '[ranking]\nmin_score = -1e9\n[[sources]]\nkind = "jsonl"\npath = "papers.jsonl"\n'
        '[[subscribers]]\nemail = "a@example.org"\n',
        web=False,
    )
    report = run_daily(DAY_ONE, settings, force=True)
    assert report.by_status() == {"sent": 1}
    raw = (settings.outbox_path / DAY_ONE.date().isoformat() / "a@example.org.eml").read_text()
    assert "/feed?t=" not in raw and "as a feed" not in raw


# -- feed-only delivery, in both modes ----------------------------------------------------------


def _feed_only_config(tmp_path: Path, port: int, database_url: str) -> Settings:
    body = f"""
[web]
base_url = "{HOST}"
link_limit = 1000
[database]
url = "{database_url}"
[ranking]
min_score = -1e9
[[sources]]
kind = "jsonl"
path = "papers.jsonl"
[[subscribers]]
email = "mail@example.org"
max_papers = 3
keywords = ["segmentation"]
[[subscribers]]
email = "feed@example.org"
max_papers = 3
keywords = ["language models"]
delivery = "feed"
[[subscribers]]
email = "both@example.org"
max_papers = 3
keywords = ["graph neural networks"]
delivery = "both"
"""
    return write_config(tmp_path, body, smtp_port=port, method="smtp")


def _in_both_modes(settings: Settings, mode: str, now: datetime) -> None:
    if mode == "one-process":
        report = run_daily(now, settings, force=True)
        assert report.by_status() == {"sent": 2, "in-feed": 1}, report.outcomes
        return
    store = Store(settings.database_url)
    try:
        assert plan_day(store, settings, now, force=True).planned == 3
        done = work(store, settings, now, worker="test:w0", clock=lambda: now)
    finally:
        store.close()
    assert (done.sent, done.in_feed, done.failed, done.pending) == (2, 1, 0, 0), done


@pytest.mark.parametrize("mode", ["one-process", "planner-and-workers"])
def test_a_feed_only_reader_is_ranked_and_recorded_never_mailed(
    tmp_path: Path, smtp_server: tuple[Inbox, int], database_url: str, mode: str
) -> None:
    inbox, port = smtp_server
    write_papers(tmp_path)
    settings = _feed_only_config(tmp_path, port, database_url)
    _in_both_modes(settings, mode, DAY_ONE)
    assert sorted(rcpt for _, rcpts in inbox.envelopes for rcpt in rcpts) == ["both@example.org", "mail@example.org"]
    store = Store(settings.database_url)
    try:
        fay = store.subscriber(email="feed@example.org")
        assert fay is not None
        row = store.delivery(fay.id, DAY_ONE.date())
        assert row is not None and row.status == DeliveryStatus.IN_FEED and row.sent_at is not None
        assert len(row.papers) == 3 and row.attempts == 0
        assert store.paper_ids_for(fay.id, [Kind.SENT]) == set(row.papers)  # not picked again
        assert store.delivery_status_counts(DAY_ONE.date()) == {DeliveryStatus.SENT: 2, DeliveryStatus.IN_FEED: 1}

        clock = links.at(DAY_ONE)
        url = local(links.feed_url(settings, links.secret_key(settings), fay.id, "", clock=clock))
        with TestClient(create_app(settings, store=store, clock=clock), base_url=HOST) as client:
            feed = feedparser.parse(client.get(url).content)
        titles = {p.id: p.title for p in store.papers(row.papers)}
        assert feed.bozo == 0 and [e.title for e in feed.entries] == [titles[pid] for pid in row.papers]
    finally:
        store.close()
    # The next day, nothing of the first is picked again, and still no mail to the feed-only reader.
    _in_both_modes(settings, mode, DAY_ONE + timedelta(days=1))
    assert len(inbox.messages) == 4 and "feed@example.org" not in {r for _, rs in inbox.envelopes for r in rs}
    store = Store(settings.database_url)
    try:
        second = store.delivery(fay.id, (DAY_ONE + timedelta(days=1)).date())
        assert second is not None and second.status == DeliveryStatus.IN_FEED
        assert not set(second.papers) & set(row.papers)
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["one-process", "planner-and-workers"])
def test_a_feed_only_digest_needs_no_mail_server(tmp_path: Path, database_url: str, mode: str) -> None:
    """The mail server cannot be reached: the mailed digests wait for the retry, the feed-only one
    is recorded for the feed all the same."""
    from .conftest import free_port

    write_papers(tmp_path)
    settings = _feed_only_config(tmp_path, free_port(), database_url)  # nothing listens there
    if mode == "one-process":
        report = run_daily(DAY_ONE, settings, force=True, sleep=lambda seconds: None)
        assert report.unreachable and report.by_status() == {"pending": 2, "in-feed": 1}, report.outcomes
    else:
        store = Store(settings.database_url)
        try:
            assert plan_day(store, settings, DAY_ONE, force=True).planned == 3
            done = work(store, settings, DAY_ONE, worker="test:w0", clock=lambda: DAY_ONE, sleep=lambda seconds: None)
        finally:
            store.close()
        assert done.unreachable and (done.sent, done.in_feed) == (0, 1), done
    store = Store(settings.database_url)
    try:
        statuses = {s.email: store.delivery(s.id, DAY_ONE.date()).status for s in store.subscribers()}
    finally:
        store.close()
    assert statuses == {
        "mail@example.org": DeliveryStatus.PENDING,
        "feed@example.org": DeliveryStatus.IN_FEED,
        "both@example.org": DeliveryStatus.PENDING,
    }
