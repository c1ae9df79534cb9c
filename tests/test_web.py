"""The web front in-process (Starlette TestClient) over a real SQLite store filled by the daily job.

Every path, with forged, altered, truncated, expired, replayed and wrong-purpose tokens, CSRF
failures, rate limits, RFC 8058 one-click unsubscribe, open-redirect attempts, double opt-in through
a real SMTP server, which-one-wins between the preferences file and the web, and the ranking moving
after "more like this".
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from digest import links
from digest.db import Kind, Store
from digest.pipeline import run_daily
from digest.settings import Settings
from digest.sources.base import PaperRecord
from digest.web import create_app

from .conftest import ConfigFactory, Inbox, write_config

DAY_ONE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LANGUAGE = re.compile(r"language|llm|text|token|sentence|retrieval|translation|bert|word|document|query|nlp", re.I)

CONFIG = """
[web]
base_url = "https://digest.example.org"
subscribe_limit = {subscribe_limit}
link_limit = {link_limit}

[[sources]]
kind = "sample"

[[subscribers]]
email = "vera@example.org"
name = "Vera"
timezone = "Europe/Berlin"
send_at = "07:00"
max_papers = 5
liked = ["A ConvNet for the 2020s"]

[[subscribers]]
email = "lev@example.org"
name = "Lev"
timezone = "America/New_York"
send_at = "06:30"
max_papers = 5
liked = ["Linearizing Large Language Models", "Backpack Language Models", "Sparse, Dense, and Attentional Representations for Text Retrieval"]
keywords = ["large language models"]
"""


class Clock:
    """A wall clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, moment: datetime) -> None:
        self.t = moment.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta).total_seconds()

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


@dataclass
class World:
    settings: Settings
    store: Store
    clock: Clock
    client: TestClient

    def outbox(self, email: str, day: str = "2026-11-23") -> EmailMessage:
        path = self.settings.outbox_path / day / f"{email}.eml"
        return message_from_bytes(path.read_bytes(), policy=policy.default)

    def run(self, **kwargs: object):
        return run_daily(self.clock.now, self.settings, store=self.store, force=True, **kwargs)  # type: ignore[arg-type]

    def count(self, email: str, kind: str) -> int:
        sub = self.store.subscriber(email=email)
        assert sub is not None
        return len(self.store.paper_ids_for(sub.id, [kind]))


_TEMPLATE: list[Path] = []  # the data folder of one world after its first daily run, built once per session


def _template() -> Path:
    """A folder holding what the first daily run of the outbox world leaves (database, saved fit,
    outbox, key): each world starts from a copy instead of ingesting and fitting again (seconds per test)."""
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="digest-web-world-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        settings = write_config(folder, CONFIG.format(subscribe_limit=50, link_limit=1000))
        store = Store(settings.database_url)
        try:
            report = run_daily(DAY_ONE, settings, store=store, force=True)
            assert report.by_status() == {"sent": 2}, report.outcomes
        finally:
            store.close()
        _TEMPLATE.append(folder / "data")
    return _TEMPLATE[0]


def make_world(
    make_config: ConfigFactory, *, smtp_port: int | None = None, subscribe_limit: int = 50, link_limit: int = 1000
) -> Iterator[World]:
    """The web front over a store the daily job filled (two readers, their digests sent), from a
    copy of the first run's data folder; later mail goes through a real SMTP server when `smtp_port`
    is given, else to the outbox.  (How the first day's two digests left does not matter here: the
    store records them the same way, and the SMTP tests start from an empty inbox.)"""
    body = CONFIG.format(subscribe_limit=subscribe_limit, link_limit=link_limit)
    smtp = {"smtp_port": smtp_port, "method": "smtp"} if smtp_port is not None else {}
    settings = make_config(body, **smtp)
    shutil.copytree(_template(), settings.data_path, dirs_exist_ok=True)
    store = Store(settings.database_url)
    clock = Clock(DAY_ONE)
    with TestClient(create_app(settings, store=store, clock=clock), base_url="https://digest.example.org") as client:
        yield World(settings, store, clock, client)
    store.close()


@pytest.fixture
def world(make_config: ConfigFactory) -> Iterator[World]:
    yield from make_world(make_config)


def local(url: str) -> str:
    """An absolute link from an email as a path the TestClient can ask for."""
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "digest.example.org", url
    return f"{parts.path}?{parts.query}"


def html_of(msg: EmailMessage) -> str:
    return msg.get_body(("html",)).get_content()


def paper_blocks(html: str) -> list[dict[str, str]]:
    """Per paper in a digest's HTML: title, click, more and fewer links."""
    blocks = []
    for chunk in re.split(r'<td class="paper"', html)[1:]:
        title = re.search(r'class="title"[^>]*>([^<]+)</a>', chunk)
        hrefs = dict(re.findall(r'class="(title|more|fewer)"[^>]*href="([^"]+)"', chunk))
        hrefs |= {k: v for v, k in re.findall(r'href="([^"]+)"[^>]*class="(title|more|fewer)"', chunk)}
        hrefs["click"] = hrefs.pop("title", "")
        blocks.append(
            {**{k: unescape(v) for k, v in hrefs.items()}, "title": unescape(title.group(1)) if title else ""}
        )
    return blocks


def csrf_of(response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert match, response.text
    return match.group(1)


def state(world: World) -> tuple:
    """Everything a bad request must not change."""
    subs = [
        (s.email, s.active, s.timezone, s.send_at, tuple(s.keywords))
        for s in world.store.subscribers(active_only=False)
    ]
    rows = world.store.interactions([Kind.LIKE, Kind.DISLIKE, Kind.CLICKED])
    return subs, sorted((r.email, r.paper_id, r.kind) for r in rows)


# -- the email --------------------------------------------------------------------------------


def test_every_digest_carries_signed_feedback_links_footer_and_one_click_headers(world: World) -> None:
    msg = world.outbox("vera@example.org")
    mailto, https = [u.strip(" <>") for u in msg["List-Unsubscribe"].split(",")]
    assert mailto.startswith("mailto:") and https.startswith("https://digest.example.org/unsubscribe?t=")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = html_of(msg)
    blocks = paper_blocks(html)
    assert len(blocks) >= 5  # five picks and the trending papers
    for block in blocks:
        assert block["click"].startswith("https://digest.example.org/click?t="), block
        assert block["more"].startswith("https://digest.example.org/feedback?t=")
        assert block["fewer"].startswith("https://digest.example.org/feedback?t=")
    clicks = re.findall(r'href="(https://digest\.example\.org/click\?t=[^"]+)"', html)
    assert len(clicks) == len(blocks)
    assert "Why am I getting this?" in html and "preferences file" in html
    assert "https://digest.example.org/preferences?t=" in html and "Manage preferences" in html
    text = msg.get_body(("plain",)).get_content()
    assert "More like this: https://digest.example.org/feedback?t=" in text and "Unsubscribe: https://" in text


# -- feedback ---------------------------------------------------------------------------------


def test_more_like_this_moves_the_next_digest_towards_that_paper(world: World) -> None:
    day_one = world.outbox("vera@example.org")
    blocks = paper_blocks(html_of(day_one))
    picks_one = [b["title"] for b in blocks[:5]]
    # Lev's language papers trend (his likes); Vera's picks are vision.  She asks for more like one of them.
    target = next(b for b in blocks[5:] if LANGUAGE.search(b["title"]))
    response = press(world, target["more"])
    assert response.status_code == 200 and "Thanks, noted" in response.text
    vera = world.store.subscriber(email="vera@example.org")
    liked = {p.title: origin for p, origin in world.store.liked_papers(vera.id)}
    assert liked[target["title"]] == "web"

    world.clock.advance(days=1)
    report = world.run()
    assert {o.email: o.status for o in report.outcomes}["vera@example.org"] == "sent"
    picks_two = [b["title"] for b in paper_blocks(html_of(world.outbox("vera@example.org", "2026-11-24")))[:5]]
    on_topic = lambda titles: sum(bool(LANGUAGE.search(t)) for t in titles)  # noqa: E731
    assert on_topic(picks_two) > on_topic(picks_one), (picks_one, picks_two)
    assert not set(picks_one) & set(picks_two)  # sent papers are not sent again


def press(world: World, link: str):
    """Open a feedback link from the email (GET: a question) and press its button (POST)."""
    page = world.client.get(local(link))
    assert page.status_code == 200 and '<form method="post"' in page.text, page.text
    return world.client.post(local(link), data={"csrf": csrf_of(page)})


def test_a_link_scanner_opening_every_feedback_link_records_nothing(world: World) -> None:
    """Mail security scanners GET every link of a message: the links only ask; the reader's button records."""
    before = state(world)
    blocks = paper_blocks(html_of(world.outbox("vera@example.org")))
    for block in blocks:
        for link in (block["more"], block["fewer"]):
            page = world.client.get(local(link))
            assert page.status_code == 200 and block["title"] in unescape(page.text)
            assert "papers like" in page.text and "Yes, " in page.text
    assert state(world) == before
    assert "Thanks, noted" in press(world, blocks[0]["fewer"]).text  # the reader's own links still work afterwards
    stranger = TestClient(world.client.app, base_url="https://digest.example.org")  # a POST without the page's form
    assert stranger.post(local(blocks[1]["more"]), data={"csrf": "x"}).status_code == 403
    vera = world.store.subscriber(email="vera@example.org")
    assert [p.title for p, _ in world.store.liked_papers(vera.id, Kind.DISLIKE)] == [blocks[0]["title"]]
    assert blocks[1]["title"] not in {p.title for p, _ in world.store.liked_papers(vera.id, Kind.LIKE)}


def test_fewer_like_this_replaces_a_like_and_a_replay_changes_nothing(world: World) -> None:
    block = paper_blocks(html_of(world.outbox("vera@example.org")))[0]
    first = press(world, block["more"])
    assert first.status_code == 200 and "more papers like" in first.text
    before = state(world)
    again = press(world, block["more"])
    assert again.status_code == 200 and "Already noted" in again.text
    assert state(world) == before
    fewer = press(world, block["fewer"])
    assert "fewer papers like" in fewer.text
    vera = world.store.subscriber(email="vera@example.org")
    assert block["title"] in {p.title for p, _ in world.store.liked_papers(vera.id, Kind.DISLIKE)}
    assert block["title"] not in {p.title for p, _ in world.store.liked_papers(vera.id, Kind.LIKE)}


def _bad_tokens(world: World, good: str, purpose: str) -> dict[str, str]:
    payload = links.read_token(links.secret_key(world.settings), purpose, good, clock=world.clock)
    body, rest = good.split(".", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    return {
        "forged": links.make_token("not-our-key", purpose, payload, clock=world.clock),
        "altered": f"{flipped}.{rest}",
        "truncated": good[:-6],
        "other purpose": links.make_token(links.secret_key(world.settings), "csrf", payload, clock=world.clock),
        "empty": "",
        "huge": "x" * 5000,
        "not base64 at all": "<script>alert(1)</script>",
    }


@pytest.mark.parametrize("path", ["/feedback", "/click", "/unsubscribe", "/preferences", "/digest", "/confirm"])
def test_forged_altered_truncated_and_foreign_tokens_change_nothing(world: World, path: str) -> None:
    key = links.secret_key(world.settings)
    vera = world.store.subscriber(email="vera@example.org")
    pid = world.store.delivery(vera.id, DAY_ONE.date()).papers[0]
    purpose, payload = {
        "/feedback": (links.FEEDBACK, {"s": vera.id, "p": pid, "k": "like", "n": "n1"}),
        "/click": (links.CLICK, {"s": vera.id, "p": pid}),
        "/unsubscribe": (links.UNSUBSCRIBE, {"e": vera.email}),
        "/preferences": (links.MANAGE, {"e": vera.email}),
        "/digest": (links.MANAGE, {"e": vera.email}),
        "/confirm": (links.CONFIRM, {"e": vera.email, "n": "n2"}),
    }[path]
    good = links.make_token(key, purpose, payload, clock=world.clock)
    before = state(world)
    for label, token in _bad_tokens(world, good, purpose).items():
        for method in (
            ("GET", "POST") if path in ("/unsubscribe", "/confirm", "/preferences", "/feedback") else ("GET",)
        ):
            response = world.client.request(
                method, path, params={"t": token}, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False
            )
            assert response.status_code == 400, (label, method, response.status_code)
            assert "This link does not work" in response.text and "Nothing was changed" in response.text
            assert "<script>alert" not in response.text
    assert state(world) == before


@pytest.mark.parametrize("path", ["/feedback", "/click", "/unsubscribe", "/preferences"])
def test_expired_tokens_are_refused(world: World, path: str) -> None:
    vera = world.store.subscriber(email="vera@example.org")
    pid = world.store.delivery(vera.id, DAY_ONE.date()).papers[0]
    url = {
        "/feedback": links.feedback_url(
            world.settings, links.secret_key(world.settings), vera.id, pid, "like", clock=world.clock
        ),
        "/click": links.click_url(world.settings, links.secret_key(world.settings), vera.id, pid, clock=world.clock),
        "/unsubscribe": links.unsubscribe_url(
            world.settings, links.secret_key(world.settings), vera.email, clock=world.clock
        ),
        "/preferences": links.manage_url(
            world.settings, links.secret_key(world.settings), vera.email, clock=world.clock
        ),
    }[path]
    before = state(world)
    world.clock.advance(days=61)
    response = world.client.request("POST" if path == "/unsubscribe" else "GET", local(url), follow_redirects=False)
    assert response.status_code == 400 and "expired" in response.text
    assert state(world) == before
    world.clock.advance(days=-61, seconds=-10)  # signed "in the future" (a clock moved back) is refused too
    assert world.client.get(local(url), follow_redirects=False).status_code == 400


# -- the paper link ---------------------------------------------------------------------------


def test_click_records_and_redirects_only_to_the_stored_paper(world: World) -> None:
    block = paper_blocks(html_of(world.outbox("vera@example.org")))[0]
    click = local(block["click"])
    for attempt in (click, click + "&next=https://evil.example", click + "&url=//evil.example"):
        response = world.client.get(attempt, follow_redirects=False)
        assert response.status_code == 303, attempt
        location = response.headers["location"]
        assert location.startswith("https://arxiv.org/") and "evil" not in location
        assert response.headers["referrer-policy"] == "no-referrer"
    assert world.count("vera@example.org", Kind.CLICKED) == 1
    assert world.client.get(click + "&t=https://evil.example", follow_redirects=False).status_code == 400
    # A stored address that is not http(s) is never redirected to.
    world.store.upsert_papers(
        [PaperRecord(id="evil-1", title="Evil paper", url="javascript:alert(1)")], world.clock.now
    )
    vera = world.store.subscriber(email="vera@example.org")
    evil = links.click_url(world.settings, links.secret_key(world.settings), vera.id, "evil-1", clock=world.clock)
    location = world.client.get(local(evil), follow_redirects=False).headers["location"]
    assert location.startswith("https://arxiv.org/search/")


# -- unsubscribe ------------------------------------------------------------------------------


def test_unsubscribe_get_asks_one_click_post_unsubscribes_and_the_file_does_not_undo_it(world: World) -> None:
    msg = world.outbox("vera@example.org")
    url = msg["List-Unsubscribe"].split(",")[1].strip(" <>")
    page = world.client.get(local(url))
    assert page.status_code == 200 and '<form method="post"' in page.text and "Unsubscribe</button>" in page.text
    assert world.store.subscriber(email="vera@example.org").active
    # A mail provider's RFC 8058 POST: no cookie, no CSRF field, just the signed URL.
    fresh = TestClient(world.client.app, base_url="https://digest.example.org")
    response = fresh.post(
        local(url), content=b"List-Unsubscribe=One-Click", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert not world.store.subscriber(email="vera@example.org").active
    assert fresh.post(local(url), data={"List-Unsubscribe": "One-Click"}).status_code == 200  # idempotent
    world.clock.advance(days=1)
    report = world.run()
    assert "vera@example.org" not in {o.email for o in report.outcomes}  # still in the file, but opted out
    assert not world.store.subscriber(email="vera@example.org").active


# -- sign-up ----------------------------------------------------------------------------------


@pytest.fixture
def smtp_world(make_config: ConfigFactory, smtp_server: tuple[Inbox, int]) -> Iterator[tuple[World, Inbox]]:
    inbox, port = smtp_server
    for w in make_world(make_config, smtp_port=port):
        inbox.messages.clear()
        yield w, inbox


def subscribe(client: TestClient, **fields: str):
    form = client.get("/subscribe")
    data = {"csrf": csrf_of(form), "timezone": "UTC", "send_at": "07:30", **fields}
    return client.post("/subscribe", data=data)


def confirm_link(msg: EmailMessage) -> str:
    return re.search(r"https://digest\.example\.org/confirm\?t=\S+", msg.get_body(("plain",)).get_content()).group(0)


def test_double_opt_in_nothing_goes_out_before_confirmation(smtp_world: tuple[World, Inbox]) -> None:
    world, inbox = smtp_world
    search = world.client.get("/subscribe", params={"q": "vision transformer"})
    assert "Papers matching" in search.text and 'name="liked_id"' in search.text
    liked_id = re.search(r'name="liked_id" value="([^"]+)"', search.text).group(1)
    response = subscribe(
        world.client,
        email="Nia@Example.org",
        name="Nia",
        timezone="Asia/Tokyo",
        send_at="08:15",
        keywords="object detection, segmentation",
        liked="A ConvNet for the 2020s",
        liked_id=liked_id,
    )
    assert response.status_code == 200 and "Check your inbox" in response.text
    (msg,) = inbox.to("nia@example.org")
    assert msg["Subject"] == "Confirm your paper digest"
    nia = world.store.subscriber(email="nia@example.org")
    assert nia.origin == "web" and not nia.active and nia.timezone == "Asia/Tokyo" and nia.send_at == "08:15"
    assert len(world.store.liked_papers(nia.id)) == 2

    world.clock.advance(days=1)
    inbox.messages.clear()
    world.run()
    assert not inbox.to("nia@example.org")  # pending: nothing sent

    link = local(confirm_link(msg))
    page = world.client.get(link)
    assert page.status_code == 200 and "Confirm my subscription</button>" in page.text
    assert not world.store.subscriber(email="nia@example.org").active  # a GET (a link scanner) confirms nothing
    done = world.client.post(link, data={"csrf": csrf_of(page)})
    assert done.status_code == 200 and "You are subscribed" in done.text and "08:15 Asia/Tokyo, every day" in done.text
    assert world.store.subscriber(email="nia@example.org").active
    replay = world.client.post(link, data={"csrf": csrf_of(page)})
    assert "Already confirmed" in replay.text

    # The daily job now delivers to her, at her own time in her own zone (from the row, not the file).
    world.clock.advance(days=1)
    tokyo_morning = world.clock.now.replace(hour=23, minute=0)  # 08:00 in Tokyo: not yet due
    report = run_daily(tokyo_morning, world.settings, store=world.store)
    assert {o.email: o.status for o in report.outcomes}["nia@example.org"] == "not-due"
    report = run_daily(tokyo_morning + timedelta(minutes=20), world.settings, store=world.store)
    assert {o.email: o.status for o in report.outcomes}["nia@example.org"] == "sent"
    (digest_msg,) = inbox.to("nia@example.org")
    assert "signed up for this daily paper digest on its web page" in html_of(digest_msg)


def test_subscribe_answers_the_same_for_known_and_unknown_addresses(smtp_world: tuple[World, Inbox]) -> None:
    world, inbox = smtp_world
    before = state(world)
    known = subscribe(world.client, email="vera@example.org", timezone="Asia/Tokyo", keywords="spam")
    unknown = subscribe(world.client, email="new@example.org", timezone="Asia/Tokyo", keywords="spam")
    strip = lambda r: re.sub(r"\S+@example\.org", "ADDRESS", re.sub(r'value="[^"]*"', "", r.text))  # noqa: E731
    assert known.status_code == unknown.status_code == 200
    assert strip(known) == strip(unknown)
    assert state(world)[0][:2] == before[0][:2]  # Vera's settings untouched by a stranger's form
    vera = world.store.subscriber(email="vera@example.org")
    assert vera.timezone == "Europe/Berlin" and vera.keywords == []
    (notice,) = inbox.to("vera@example.org")
    assert notice["Subject"] == "You already get the paper digest" and "/confirm?" not in notice.as_string()


def test_subscribe_validates_limits_and_escapes(world: World) -> None:
    bad = subscribe(world.client, email="x@example.org", timezone="Mars/Olympus", keywords="<script>alert(1)</script>")
    assert bad.status_code == 400 and "unknown time zone" in bad.text
    assert "<script>alert(1)</script>" not in bad.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in bad.text
    assert subscribe(world.client, email="not-an-address").status_code == 400
    assert subscribe(world.client, email="a" * 300 + "@example.org").status_code == 400
    assert (
        subscribe(world.client, email="x@example.org", keywords=", ".join(f"k{i}" for i in range(30))).status_code
        == 400
    )
    unknown = subscribe(world.client, email="x@example.org", liked="No Such Paper At All 123")
    assert unknown.status_code == 400 and "no paper found" in unknown.text
    form = world.client.get("/subscribe")
    huge = world.client.post("/subscribe", data={"csrf": csrf_of(form), "email": "x@example.org", "liked": "x" * 20000})
    assert huge.status_code == 413
    assert world.store.subscriber(email="x@example.org") is None


def test_csrf_is_required_on_forms(world: World) -> None:
    form = world.client.get("/subscribe")
    token = csrf_of(form)
    fields = {"email": "c@example.org", "timezone": "UTC", "send_at": "07:30"}
    stranger = TestClient(world.client.app, base_url="https://digest.example.org")
    assert stranger.post("/subscribe", data={**fields, "csrf": token}).status_code == 403  # token without the cookie
    assert world.client.post("/subscribe", data=fields).status_code == 403  # cookie without the token
    assert world.client.post("/subscribe", data={**fields, "csrf": token[:-3] + "abc"}).status_code == 403
    other = csrf_of(stranger.get("/subscribe"))
    assert world.client.post("/subscribe", data={**fields, "csrf": other}).status_code == 403  # another visitor's token
    world.clock.advance(hours=5)
    assert world.client.post("/subscribe", data={**fields, "csrf": token}).status_code == 403  # expired
    assert world.store.subscriber(email="c@example.org") is None
    # Preferences too.
    nia_url = _web_subscriber(world, "p@example.org")
    page = world.client.get(nia_url)
    response = world.client.post(nia_url, data={"timezone": "Asia/Tokyo", "send_at": "09:00", "max_papers": "3"})
    assert response.status_code == 403 and world.store.subscriber(email="p@example.org").timezone == "UTC"
    assert csrf_of(page)


def test_rate_limits_per_client_with_a_moving_clock(make_config: ConfigFactory) -> None:
    for world in make_world(make_config, subscribe_limit=2, link_limit=3):
        codes = [subscribe(world.client, email=f"r{i}@example.org").status_code for i in range(3)]
        assert codes == [200, 200, 429]
        world.clock.advance(seconds=601)
        assert subscribe(world.client, email="r9@example.org").status_code == 200
        url = local(
            links.manage_url(world.settings, links.secret_key(world.settings), "vera@example.org", clock=world.clock)
        )
        codes = [world.client.get(url).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert world.client.get("/feedback?t=whatever").status_code == 429  # the same bucket for every link
        world.clock.advance(seconds=61)
        assert world.client.get(url).status_code == 200


def test_web_processes_share_the_rate_limits_through_the_database(make_config: ConfigFactory) -> None:
    """Two web fronts on one database (two `digest serve` processes: each its own Store and its own
    connections) count against the same limit; an hour later the old hits are forgotten."""
    for world in make_world(make_config, link_limit=3):
        other_store = Store(world.settings.database_url)
        try:
            with TestClient(
                create_app(world.settings, store=other_store, clock=world.clock), base_url="https://digest.example.org"
            ) as other:
                url = local(
                    links.manage_url(
                        world.settings, links.secret_key(world.settings), "vera@example.org", clock=world.clock
                    )
                )
                codes = [client.get(url).status_code for client in (world.client, other, world.client, other)]
                assert codes == [200, 200, 200, 429]
                assert world.client.get(url).status_code == 429
                world.clock.advance(seconds=61)
                assert other.get(url).status_code == 200
                world.clock.advance(seconds=3601)
                for _ in range(500):  # enough hits (from other clients) for the store to forget the old ones
                    assert other_store.rate_hit("test:x", 10**6, 60, world.clock()) is True
                with other_store.session() as s:
                    from digest.db import RateHit

                    assert all(hit.at > world.clock() - 3600 for hit in s.exec(select(RateHit)))
        finally:
            other_store.close()


# -- preferences and which one wins -------------------------------------------------------------


def _web_subscriber(world: World, email: str) -> str:
    """A confirmed web subscriber; returns their preferences link (path)."""
    world.store.request_subscription(
        email, {"timezone": "UTC", "send_at": "07:30", "keywords": [], "name": ""}, [], world.clock.now
    )
    world.store.confirm_subscription(email, world.clock.now)
    return local(links.manage_url(world.settings, links.secret_key(world.settings), email, clock=world.clock))


def test_web_subscriber_edits_preferences_in_the_database(world: World) -> None:
    url = _web_subscriber(world, "pia@example.org")
    page = world.client.get(url)
    assert page.status_code == 200 and 'name="timezone"' in page.text and " readonly>" not in page.text
    saved = world.client.post(
        url,
        data={
            "csrf": csrf_of(page),
            "timezone": "America/Chicago",
            "send_at": "06:05",
            "max_papers": "4",
            "keywords": "graph neural networks, molecules",
            "exclude_keywords": "medical",
        },
    )
    assert saved.status_code == 200 and "Saved" in saved.text
    pia = world.store.subscriber(email="pia@example.org")
    assert (pia.timezone, pia.send_at, pia.max_papers) == ("America/Chicago", "06:05", 4)
    assert pia.keywords == ["graph neural networks", "molecules"] and pia.exclude_keywords == ["medical"]
    bad = world.client.post(
        url, data={"csrf": csrf_of(page), "timezone": "UTC", "send_at": "25:00", "max_papers": "500"}
    )
    assert bad.status_code == 400 and "1 to 50" in bad.text
    world.clock.advance(days=1)
    world.run()  # the file's sync leaves web subscribers alone
    assert world.store.subscriber(email="pia@example.org").timezone == "America/Chicago"


def test_how_often_is_chosen_at_sign_up_and_changed_in_preferences(smtp_world: tuple[World, Inbox]) -> None:
    """Web readers choose daily, Monday to Friday or weekly (and the day), as the file's readers can;
    the daily job sends on those days only."""
    from digest.due import is_due

    world, inbox = smtp_world
    form = world.client.get("/subscribe")
    assert 'name="frequency"' in form.text and 'name="weekly_day"' in form.text
    bad = subscribe(world.client, email="odd@example.org", frequency="hourly")
    assert bad.status_code == 400 and "daily" in bad.text and 'value="hourly"' not in bad.text
    assert world.store.subscriber(email="odd@example.org") is None
    assert (
        "Check your inbox"
        in subscribe(world.client, email="wes@example.org", frequency="weekly", weekly_day="Friday").text
    )
    page = world.client.get(local(confirm_link(inbox.to("wes@example.org")[0])))
    done = world.client.post(local(confirm_link(inbox.to("wes@example.org")[0])), data={"csrf": csrf_of(page)})
    assert "07:30 UTC, Fridays" in done.text
    wes = world.store.subscriber(email="wes@example.org")
    assert (wes.frequency, wes.weekly_day) == ("weekly", "friday")
    thursday, friday = datetime(2026, 11, 26, 9, 0, tzinfo=UTC), datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert not is_due(wes, thursday) and is_due(wes, friday)

    url = local(links.manage_url(world.settings, links.secret_key(world.settings), wes.email, clock=world.clock))
    prefs = world.client.get(url)
    assert '<option value="weekly" selected>' in prefs.text and '<option value="friday" selected>' in prefs.text
    saved = world.client.post(
        url,
        data={
            "csrf": csrf_of(prefs),
            "timezone": "UTC",
            "send_at": "07:30",
            "max_papers": "5",
            "frequency": "weekdays",
            "weekly_day": "friday",
        },
    )
    assert saved.status_code == 200 and "Saved" in saved.text
    wes = world.store.subscriber(email="wes@example.org")
    assert (
        wes.frequency == "weekdays" and is_due(wes, thursday) and not is_due(wes, datetime(2026, 11, 28, 9, tzinfo=UTC))
    )


def test_config_subscriber_preferences_are_read_only_the_file_wins(world: World) -> None:
    url = local(
        links.manage_url(world.settings, links.secret_key(world.settings), "vera@example.org", clock=world.clock)
    )
    page = world.client.get(url)
    assert " readonly>" in page.text and "preferences file" in page.text
    response = world.client.post(
        url, data={"csrf": csrf_of(page), "timezone": "Asia/Tokyo", "send_at": "09:00", "max_papers": "3"}
    )
    assert response.status_code == 409
    assert world.store.subscriber(email="vera@example.org").timezone == "Europe/Berlin"


def test_likes_are_listed_and_web_likes_can_be_removed(world: World) -> None:
    block = paper_blocks(html_of(world.outbox("vera@example.org")))[0]
    assert "Thanks, noted" in press(world, block["more"]).text
    url = local(
        links.manage_url(world.settings, links.secret_key(world.settings), "vera@example.org", clock=world.clock)
    )
    page = world.client.get(url)
    assert "A ConvNet for the 2020s" in page.text and "from the preferences file" in page.text
    vera = world.store.subscriber(email="vera@example.org")
    pid = next(p.id for p, origin in world.store.liked_papers(vera.id) if origin == "web")
    removed = world.client.post(
        url.replace("/preferences?", "/preferences/likes?"), data={"csrf": csrf_of(page), "paper": pid, "kind": "like"}
    )
    assert removed.status_code == 200 and "Removed." in removed.text
    assert [origin for _, origin in world.store.liked_papers(vera.id)] == ["config"]


def test_digest_page_shows_the_latest_digest_with_the_email_templates(world: World) -> None:
    url = local(
        links.manage_url(
            world.settings, links.secret_key(world.settings), "vera@example.org", clock=world.clock, path="/digest"
        )
    )
    page = world.client.get(url)
    assert page.status_code == 200 and "Picked for you" in page.text and "Trending today" in page.text
    email = html_of(world.outbox("vera@example.org"))
    sent = [b["title"] for b in paper_blocks(email)]  # the picks, then the trending papers
    assert len(sent) > 5 and [b["title"] for b in paper_blocks(page.text)] == sent
    reasons = re.compile(r'class="(?:reason|count)"[^>]*>([^<]+)<')
    assert reasons.findall(page.text) == reasons.findall(email) and len(reasons.findall(email)) == len(sent)
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_digest_that_cannot_be_rendered_gets_a_message_page_not_a_500(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compose raising one of our errors (a RenderError: text no renderer takes) is a page that says
    so; the renderer is the only fake here, everything before it (the store, compose) is real."""
    import digest.compose
    from digest.errors import RenderError

    def refuse(view):
        raise RenderError(f"could not render the digest for {view.email}: ValueError: no")

    monkeypatch.setattr(digest.compose, "render_digest", refuse)
    url = local(
        links.manage_url(
            world.settings, links.secret_key(world.settings), "vera@example.org", clock=world.clock, path="/digest"
        )
    )
    page = world.client.get(url)
    assert page.status_code == 200 and "This digest cannot be shown" in page.text
    assert "/preferences?t=" in page.text and "Something went wrong" not in page.text


def test_unknown_paths_and_methods_get_plain_pages(world: World) -> None:
    assert world.client.get("/nope").status_code == 404
    response = world.client.delete("/subscribe")
    assert response.status_code == 405 and "Nothing was changed" in response.text
