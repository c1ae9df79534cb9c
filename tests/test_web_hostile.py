"""Hostile input against a real `digest serve` process: a 4xx with a message, never a 5xx, nothing changed.

One server process per module (a subprocess on a free port with its own config, SQLite file and
data folder) and a real SMTP server (aiosmtpd) catching the confirmation emails; the test reads
the same SQLite file through a Store to check what changed.  Every class of bad form the web
front can get: too many fields, too large, bad encodings and characters, time-zone folders,
numbers in other scripts, addresses it cannot deliver to, other content types, odd query strings.
Then the sign-up takeover: a sign-up for an existing address changes nothing until its
confirmation link is used.  Last, delivery: an address the SMTP server cannot take is a permanent
failure for that address.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlmodel import select
from starlette.testclient import TestClient

from digest import links
from digest.db import Interaction, Kind, OptOut, PendingSignup, Store, Subscriber, UsedToken
from digest.deliver import SmtpTransport
from digest.errors import PermanentDeliveryError
from digest.settings import Settings, load_settings
from digest.sources.base import PaperRecord
from digest.web import create_app

from .conftest import ConfigFactory, Inbox, digest_serve, free_port

KEY = "hostile-forms-test-key-not-a-secret"
FORM = "application/x-www-form-urlencoded"
PAPERS = [
    PaperRecord(
        id=f"2411.0000{i}",
        title=f"Hostile input paper number {i}",
        abstract="About forms.",
        url=f"https://arxiv.org/abs/2411.0000{i}",
    )
    for i in range(1, 8)
]
P1, P2, P3, P4, P5, P6, P7 = (p.id for p in PAPERS)

CONFIG = """
data_dir = "{data}"

[delivery]
method = "smtp"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "Digest <digest@example.org>"
timeout = 5
smtputf8 = {smtputf8}

[web]
base_url = "http://127.0.0.1:{port}"
subscribe_limit = 10000
link_limit = 100000

[ranking]
embeddings = "none"  # the forms are the subject here, not the ranking: no test waits for the sample's vectors

[[sources]]
kind = "sample"

[[subscribers]]
email = "vera@example.org"
name = "Vera"
timezone = "Europe/Berlin"
send_at = "07:00"

[[subscribers]]
email = "ivan@example.org"
name = "Ivan"
timezone = "America/New_York"
send_at = "06:30"
keywords = ["compilers"]
"""


@dataclass
class Front:
    """A running `digest serve` and what the test needs to talk to it and look behind it."""

    base: str
    settings: Settings
    store: Store
    inbox: Inbox
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=20, follow_redirects=False)

    def path(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    def manage(self, email: str, path: str = "/preferences") -> str:
        return self.path(links.manage_url(self.settings, KEY, email, path=path))

    def csrf(self, client: httpx.Client, path: str = "/subscribe") -> str:
        page = client.get(path)
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, (page.status_code, page.text[:500])
        return match.group(1)

    def snapshot(self) -> list:
        """Every row a bad request must leave alone (the rate-limit counts aside)."""
        with self.store.session() as s:
            return [
                sorted(repr(r.model_dump()) for r in s.exec(select(model)))
                for model in (Subscriber, Interaction, OptOut, PendingSignup, UsedToken)
            ]

    def reader(self, email: str) -> Subscriber:
        row = self.store.subscriber(email=email)
        assert row is not None, email
        return row

    def likes(self, email: str) -> set[str]:
        return {p.id for p, _ in self.store.liked_papers(self.reader(email).id, Kind.LIKE)}

    def web_reader(self, email: str, *, liked: list[str], **fields: object) -> Subscriber:
        """A confirmed web reader (through the store, as the sign-up and its link would make one)."""
        values = {"name": "", "timezone": "UTC", "send_at": "07:30", "keywords": [], **fields}
        now = datetime.now(UTC)
        self.store.request_subscription(email, values, liked, now, nonce="setup-" + email)
        row = self.store.confirm_subscription(email, now, nonce="setup-" + email)
        assert row is not None and row.active
        return row

    def confirm_links(self, email: str) -> list[str]:
        found = []  # by the envelope: the test's email parser garbles a raw UTF-8 To: header
        for msg, (_, rcpt) in zip(self.inbox.messages, self.inbox.envelopes, strict=True):
            if rcpt != [email]:
                continue
            match = re.search(r"http://127\.0\.0\.1:\d+/confirm\?t=\S+", msg.get_body(("plain",)).get_content())
            if match:
                found.append(self.path(match.group(0)))
        return found

    def confirm(self, link: str) -> httpx.Response:
        """Open a confirmation link and press its button, as the reader would."""
        with self.client() as client:
            page = client.get(link)
            assert page.status_code == 200 and "Confirm my subscription" in page.text, page.text[:500]
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            return client.post(link, data={"csrf": csrf})


def _serve(folder: Path, *, smtputf8: bool) -> Iterator[Front]:
    inbox = Inbox()
    smtp_port, port = free_port(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port, enable_SMTPUTF8=smtputf8)
    smtp.start()
    config = folder / "digest.toml"
    config.write_text(
        CONFIG.format(
            data=(folder / "data").as_posix(), smtp_port=smtp_port, port=port, smtputf8=str(smtputf8).lower()
        ),
        encoding="utf-8",
    )
    settings = load_settings(config, env={"DIGEST_SECRET_KEY": KEY})
    store = Store(settings.database_url)  # the schema exists before the server starts
    now = datetime.now(UTC)
    store.upsert_papers(PAPERS, now)
    store.sync_subscribers(settings.subscribers, now)
    try:
        with digest_serve(config, port, key=KEY, data=folder / "data", log=folder / "serve.log") as base:
            inbox.messages.clear()
            yield Front(base, settings, store, inbox, folder / "serve.log")
    finally:
        store.close()
        smtp.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """One `digest serve` for the module; its mail server has no SMTPUTF8 (smtp.smtputf8 = false)."""
    yield from _serve(tmp_path_factory.mktemp("hostile"), smtputf8=False)


@pytest.fixture(scope="module")
def utf8_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """A second one whose mail server offers SMTPUTF8 (smtp.smtputf8 = true)."""
    yield from _serve(tmp_path_factory.mktemp("hostile-utf8"), smtputf8=True)


@pytest.fixture(autouse=True)
def _server_never_fails(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: the server logged no 5xx answer and no traceback."""
    fronts = [request.getfixturevalue(name) for name in ("front", "utf8_front") if name in request.fixturenames]
    start = {f.log: f.log.stat().st_size for f in fronts}
    yield
    for f in fronts:
        with f.log.open("rb") as log:
            log.seek(start[f.log])
            new = log.read().decode("utf-8", errors="replace")
        assert not re.search(r'HTTP/1\.[01]" 5\d\d|Traceback', new), new


def _form(csrf: str, *pieces: bytes | str, email: str = "newcomer@example.org") -> bytes:
    """A urlencoded body: the given pieces first (the first value of a field wins), then sane defaults."""
    raw = [p.encode() if isinstance(p, str) else p for p in pieces]
    defaults = [f"csrf={csrf}", f"email={quote(email)}", "timezone=UTC", "send_at=07%3A30", "max_papers=5"]
    return b"&".join([*raw, *(d.encode() for d in defaults)])


def _post(client: httpx.Client, path: str, body: bytes, content_type: str | None = FORM) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=body, headers=headers)


def _refused(response: httpx.Response, status: int, *texts: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:2000])
    for text in texts:
        assert text in response.text, (text, response.text[:3000])


# -- the shape of the post ----------------------------------------------------------------------


def _form_routes(front: Front) -> dict[str, str]:
    """Every route that reads a form, with a link token that works (where it needs one)."""
    wren = front.store.subscriber(email="forms@example.org") or front.web_reader("forms@example.org", liked=[P1])
    return {
        "subscribe": "/subscribe",
        "confirm": front.path(links.confirm_url(front.settings, KEY, "nobody@example.org", nonce="n-forms")),
        "feedback": front.path(links.feedback_url(front.settings, KEY, wren.id, P2, "like")),
        "unsubscribe": front.path(links.unsubscribe_url(front.settings, KEY, "vera@example.org")),
        "preferences": front.manage("forms@example.org"),
        "remove a like": front.manage("forms@example.org").replace("/preferences?", "/preferences/likes?"),
    }


@pytest.mark.parametrize("fields", [201, 150, 101])
def test_too_many_fields_answer_413_on_every_form(front: Front, fields: int) -> None:
    routes = _form_routes(front)
    before = front.snapshot()
    with front.client() as client:
        csrf = front.csrf(client)
        for path in routes.values():
            body = _form(csrf, *(f"f{i}=1" for i in range(fields)))
            _refused(_post(client, path, body), 413, "more than 100 fields", "Nothing was changed")
            _refused(_post(client, path, body + b"&" + b"&" * 5000), 413)  # empty pieces are no fields, but bytes
    assert front.snapshot() == before


def test_large_bodies_answer_413_declared_or_not(front: Front) -> None:
    routes = _form_routes(front)
    before = front.snapshot()
    with front.client() as client:
        csrf = front.csrf(client)
        for path in routes.values():
            huge = _form(csrf, "liked=" + "x" * 20_000)
            _refused(_post(client, path, huge), 413, "larger than 16 KB")
            chunked = client.post(path, content=iter([huge[:8000], huge[8000:]]), headers={"content-type": FORM})
            assert "content-length" not in chunked.request.headers
            _refused(chunked, 413, "larger than 16 KB")
    assert front.snapshot() == before
    # A small form without a Content-Length (chunked) is read as usual.
    with front.client() as client:
        body = _form(front.csrf(client), email="chunked@example.org")
        done = client.post("/subscribe", content=iter([body[:10], body[10:]]), headers={"content-type": FORM})
        assert done.status_code == 200 and "Check your inbox" in done.text
    assert not front.reader("chunked@example.org").active
    with front.client() as client:  # and one without a Content-Type (curl -d sends one, a script may not)
        response = _post(
            client, "/subscribe", _form(front.csrf(client), email="untyped@example.org"), content_type=None
        )
        assert "content-type" not in response.request.headers
        assert response.status_code == 200 and "Check your inbox" in response.text


@pytest.mark.parametrize(
    "content_type, body",
    [
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="email"\r\n\r\nmp@example.org\r\n--xyz--\r\n',
        ),
        ("application/json", b'{"email": "json@example.org", "timezone": "UTC"}'),
        ("text/plain", b"email=plain@example.org"),
        ("application/x-www-form-urlencoded; charset=iso-8859-1", b"email=latin%E9@example.org"),
        ("application/x-www-form-urlencoded; charset=utf-16", "email=u16@example.org".encode("utf-16")),
        ("image/png", b"\x89PNG\r\n\x1a\n"),
    ],
)
def test_other_content_types_answer_415_on_form_routes(front: Front, content_type: str, body: bytes) -> None:
    before = front.snapshot()
    with front.client() as client:
        csrf = front.csrf(client)
        for path in (
            "/subscribe",
            front.manage("vera@example.org"),
            front.manage("vera@example.org").replace("/preferences?", "/preferences/likes?"),
        ):
            response = _post(client, path, body + f"&csrf={csrf}".encode(), content_type)
            if path == "/subscribe" and content_type.startswith("multipart/"):
                # the sign-up takes a library file, so multipart is its form; this one has no csrf field
                _refused(response, 403, "The form had expired")
            else:
                _refused(response, 415, "Not one of our forms")
    assert front.snapshot() == before


def test_one_click_unsubscribe_may_come_as_multipart(front: Front) -> None:
    """RFC 8058 says the one-click POST SHOULD be multipart/form-data: the signed URL is the proof."""
    front.web_reader("olga@example.org", liked=[P1])
    url = front.path(links.unsubscribe_url(front.settings, KEY, "olga@example.org"))
    with front.client() as client:
        response = _post(
            client,
            url,
            b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        )
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert not front.reader("olga@example.org").active


# -- bytes and characters in a field --------------------------------------------------------------


@pytest.mark.parametrize(
    "field, piece",
    [
        ("name", b"name=%ff%fe"),  # not UTF-8
        ("name", b"name=caf\xe9"),  # raw Latin-1
        ("name", b"name=a%00b"),  # NUL
        ("name", b"name=a\x00b"),  # a raw NUL byte in the body
        ("name", b"name=a%1b%5B31m"),  # an escape sequence
        ("name", b"name=%e2%80%aeevil"),  # right-to-left override
        ("name", b"name=a%0d%0aBcc:%20x@example.org"),  # a header injection
        ("name", b"name=" + b"n" * 81),
        ("email", b"email=a%00b@example.org"),
        ("email", b"email=a%01@example.org"),
        ("email", b"email=a%7f@example.org"),
        ("email", b"email=%c3%28@example.org"),
        ("email", b"email=a%e2%80%8b@example.org"),  # zero-width space
        ("email", b"email=a%0a@example.org"),
        ("keywords", b"keywords=graphs%2C%00"),
        ("keywords", b"keywords=%ff"),
        ("keywords", b"keywords=" + b",".join(b"k%d" % i for i in range(21))),
        ("keywords", b"keywords=" + b"k" * 81),
        ("liked", b"liked=%ff"),
        ("liked", b"liked_id=2411.00001%00"),
        ("liked", b"liked_id=" + b"x" * 301),
        ("liked", b"&".join(b"liked_id=2411.%05d" % i for i in range(21))),
        ("liked", b"liked=No%20such%20paper%20at%20all"),
        ("timezone", b"timezone=UTC%00"),
        ("timezone", b"timezone=Europe%2FBer%0alin"),
        ("send_at", b"send_at=07%3A30%00"),
        ("frequency", b"frequency=daily%00"),
        ("frequency", b"frequency=hourly"),
        ("frequency", b"frequency=%ef%bc%a4%ef%bc%a1%ef%bc%a9%ef%bc%ac%ef%bc%b9"),  # DAILY in full-width letters
        ("weekly_day", b"weekly_day=funday"),
        ("weekly_day", b"weekly_day=" + b"monday" * 10),
    ],
)
def test_bad_bytes_and_characters_are_field_errors_on_sign_up(front: Front, field: str, piece: bytes) -> None:
    before, mails = front.snapshot(), len(front.inbox.messages)
    with front.client() as client:
        response = _post(client, "/subscribe", _form(front.csrf(client), piece))
    _refused(response, 400, f'id="{field}-error"', "Please check the fields marked below")
    assert "\x00" not in response.text and "\x1b" not in response.text and "\u202e" not in response.text
    assert front.snapshot() == before and len(front.inbox.messages) == mails


@pytest.mark.parametrize(
    "field, piece",
    [
        ("timezone", b"timezone=%00"),
        ("timezone", b"timezone=Europe"),
        ("send_at", b"send_at=%ff"),
        ("keywords", b"keywords=a%00b"),
        ("exclude_keywords", b"exclude_keywords=%e2%80%ae"),
        ("exclude_keywords", b"exclude_keywords=" + b",".join(b"k%d" % i for i in range(21))),
        ("frequency", b"frequency=hourly"),
        ("weekly_day", b"weekly_day=%00"),
    ],
)
def test_bad_bytes_and_characters_are_field_errors_on_preferences(front: Front, field: str, piece: bytes) -> None:
    front.store.subscriber(email="pim@example.org") or front.web_reader("pim@example.org", liked=[P1])
    url = front.manage("pim@example.org")
    before = front.snapshot()
    with front.client() as client:
        response = _post(client, url, _form(front.csrf(client, url), piece))
    _refused(response, 400, f'id="{field}-error"')
    assert "\x00" not in response.text
    assert front.snapshot() == before


def test_bad_percent_escapes_and_repeated_fields_are_read_as_typed(front: Front) -> None:
    """Not an error: a browser never sends these, and nothing breaks (the first of repeated fields counts)."""
    with front.client() as client:
        body = _form(
            front.csrf(client),
            "name=100%25%20%zz%",
            "email=first@example.org",
            "email=second@example.org",
            "timezone=Asia%2FTokyo",
            "timezone=Mars",
            "%ff%fe=unknown-field",
            "=nameless",
            "novalue",
        )
        response = _post(client, "/subscribe", body)
    assert response.status_code == 200 and "Check your inbox" in response.text, response.text[:2000]
    first = front.reader("first@example.org")
    assert (first.name, first.timezone, first.active) == ("100% %zz%", "Asia/Tokyo", False)
    assert front.store.subscriber(email="second@example.org") is None


# -- time zones, numbers and times ----------------------------------------------------------------


ZONES = [
    "Europe",
    "Europe/",
    "America",
    "America/Argentina",
    "Etc",
    "../../../../etc/passwd",
    "/etc/localtime",
    "Europe/Berlin/x",
    "Europe/../Europe/Berlin",
    "A" * 300,
    "Europe/" + "B" * 300,
    "zone.tab",
    "Mars/Olympus",
]


def test_time_zone_folders_paths_and_long_names_are_field_errors(front: Front) -> None:
    front.store.subscriber(email="tz@example.org") or front.web_reader("tz@example.org", liked=[])
    url = front.manage("tz@example.org")
    before = front.snapshot()
    with front.client() as client:
        csrf = front.csrf(client)
        for zone in ZONES:
            for path in ("/subscribe", url):
                response = _post(client, path, _form(csrf, "timezone=" + quote(zone, safe="")))
                _refused(response, 400, 'id="timezone-error"', "unknown time zone")
    assert front.snapshot() == before


@pytest.mark.parametrize(
    "value", ["²", "٣", "１０", "𝟓", "1e1", "-1", "+5", "0", "51", "500", "9" * 40, "1.5", "0x10", "5%00", "five", "١٠"]
)
def test_max_papers_takes_ascii_digits_only(front: Front, value: str) -> None:
    front.store.subscriber(email="num@example.org") or front.web_reader("num@example.org", liked=[])
    url = front.manage("num@example.org")
    before = front.snapshot()
    with front.client() as client:
        piece = "max_papers=" + (value if "%" in value else quote(value))
        response = _post(client, url, _form(front.csrf(client, url), piece))
    _refused(response, 400, 'id="max_papers-error"', "a whole number from 1 to 50")
    assert front.snapshot() == before


@pytest.mark.parametrize(
    "value",
    ["٠٧:٣٠", "0٧:30", "07:3٠", "𝟎𝟕:𝟑𝟎", "０７:３０", "24:00", "7:30", "07:30:00", "07.30", "07:60", "x" * 3000],
)
def test_send_at_takes_hh_mm_in_ascii_digits_only(front: Front, value: str) -> None:
    front.store.subscriber(email="clock@example.org") or front.web_reader("clock@example.org", liked=[])
    url = front.manage("clock@example.org")
    before = front.snapshot()
    with front.client() as client:
        csrf = front.csrf(client)
        for path in ("/subscribe", url):
            response = _post(client, path, _form(csrf, "send_at=" + quote(value)))
            _refused(response, 400, 'id="send_at-error"')
    assert front.snapshot() == before


def test_a_good_preferences_edit_still_saves(front: Front) -> None:
    front.store.subscriber(email="good@example.org") or front.web_reader("good@example.org", liked=[])
    url = front.manage("good@example.org")
    with front.client() as client:
        body = _form(
            front.csrf(client, url),
            "timezone=America%2FArgentina%2FBuenos_Aires",
            "send_at=06%3A05",
            "max_papers=12",
            "keywords=graph+neural+networks%2C+mol%C3%A9cules",
            "frequency=weekly",
            "weekly_day=Friday",
        )
        response = _post(client, url, body)
    assert response.status_code == 200 and "Saved" in response.text, response.text[:2000]
    row = front.reader("good@example.org")
    assert (row.timezone, row.send_at, row.max_papers, row.frequency, row.weekly_day) == (
        "America/Argentina/Buenos_Aires",
        "06:05",
        12,
        "weekly",
        "friday",
    )
    assert row.keywords == ["graph neural networks", "molécules"]


# -- addresses --------------------------------------------------------------------------------------


BAD_ADDRESSES = [
    "a\x00b@example.org",
    "a\x01@example.org",
    "a\x7f@example.org",
    "a\u200b@example.org",
    "a@example.org\u202e",
    "a\u0085b@example.org",
    "a" * 65 + "@example.org",
    "a@" + "b" * 250 + ".org",
    "a@b",
    "@example.org",
    "a@@example.org",
    "a b@example.org",
    "<a@example.org>",
    "a@example.org, b@example.org",
]
NON_ASCII = ["zoë@example.org", "x@exämple.org", "пётр@example.org", "a@例え.jp", "ａ@example.org"]


def test_addresses_delivery_cannot_use_are_refused_at_the_form(front: Front) -> None:
    before, mails = front.snapshot(), len(front.inbox.messages)
    with front.client() as client:
        csrf = front.csrf(client)
        for address in BAD_ADDRESSES + NON_ASCII:
            response = _post(client, "/subscribe", _form(csrf, email=address))
            _refused(response, 400, 'id="email-error"')
            if address in NON_ASCII:
                assert "non-ASCII" in response.text, address
    assert front.snapshot() == before and len(front.inbox.messages) == mails


def test_non_ascii_addresses_are_taken_when_the_mail_server_has_smtputf8(utf8_front: Front) -> None:
    with utf8_front.client() as client:
        csrf = utf8_front.csrf(client)
        response = _post(client, "/subscribe", _form(csrf, email="Zoë@Example.org"))
        assert response.status_code == 200 and "Check your inbox" in response.text, response.text[:2000]
        for address in BAD_ADDRESSES:
            _refused(_post(client, "/subscribe", _form(csrf, email=address)), 400, 'id="email-error"')
    assert ("digest@example.org", ["zoë@example.org"]) in utf8_front.inbox.envelopes
    (link,) = utf8_front.confirm_links("zoë@example.org")
    assert "You are subscribed" in utf8_front.confirm(link).text
    assert utf8_front.reader("zoë@example.org").active


# -- query strings and link tokens ------------------------------------------------------------------


def test_odd_query_strings_and_tokens_get_a_4xx_page(front: Front) -> None:
    manage = front.manage("vera@example.org")
    good = manage.split("t=", 1)[1]
    before = front.snapshot()
    with front.client() as client:
        assert client.get("/subscribe?q=%00%ff%fe").status_code == 200
        assert client.get("/subscribe?" + "&".join(f"q{i}=x" for i in range(1500))).status_code == 200
        assert client.get("/subscribe?q=" + "x" * 5000).status_code == 200
        for path in ("/preferences", "/digest", "/click", "/feedback", "/unsubscribe", "/confirm"):
            for query in (
                "t=" + "x" * 5000,
                "t=%00",
                "t=%ff%fe",
                "t=" + quote("é" * 10),
                "t=" + good[:-1] + "%00",
                "t=" + good + "%0a",
                "&".join(["t=x"] * 500),
                "t=" + quote(good + "." + good),
                "t=" + quote("\x00".join([good] * 3)),
            ):
                response = client.get(f"{path}?{query}")
                _refused(response, 400, "This link does not work", "Nothing was changed")
        assert client.get(manage + "&" + "&".join(f"x{i}=1" for i in range(1000))).status_code == 200
    assert front.snapshot() == before


def test_removing_a_like_with_a_hostile_paper_field(front: Front) -> None:
    front.store.subscriber(email="rex@example.org") or front.web_reader("rex@example.org", liked=[P1])
    url = front.manage("rex@example.org").replace("/preferences?", "/preferences/likes?")
    before = front.snapshot()
    with front.client() as client:
        csrf = front.csrf(client)
        for piece in (b"paper=%00", b"paper=2411.00001%00", b"paper=" + b"p" * 5000, b"paper=%ff", b"paper="):
            _refused(_post(client, url, _form(csrf, piece, b"kind=like")), 400, "nothing was removed")
    assert front.snapshot() == before and front.likes("rex@example.org") == {P1}


# -- nobody changes a reader without the confirmation link -------------------------------------------


def _sign_up(front: Front, email: str, *pieces: str) -> httpx.Response:
    """A stranger's sign-up: a fresh client with no cookies but the form's."""
    with front.client() as client:
        response = _post(client, "/subscribe", _form(front.csrf(client), *pieces, email=email))
    assert response.status_code == 200 and "Check your inbox" in response.text, response.text[:2000]
    return response


def _settings_of(front: Front, email: str) -> tuple:
    row = front.reader(email)
    return (row.active, row.name, row.timezone, row.send_at, row.frequency, row.keywords, row.max_papers, row.origin)


def test_a_sign_up_for_an_unsubscribed_reader_changes_nothing_until_confirmed(front: Front) -> None:
    wren = front.web_reader(
        "wren@example.org",
        liked=[P1, P2],
        name="Wren",
        timezone="Asia/Tokyo",
        send_at="06:15",
        keywords=["graphs"],
        max_papers=7,
    )
    front.store.set_feedback(wren.id, P3, Kind.LIKE, datetime.now(UTC), origin="web")  # "more like this" later
    front.store.set_feedback(wren.id, P5, Kind.DISLIKE, datetime.now(UTC), origin="web")
    with front.client() as client:
        url = front.path(links.unsubscribe_url(front.settings, KEY, "wren@example.org"))
        assert "You are unsubscribed" in client.post(url, data={"List-Unsubscribe": "One-Click"}).text
    kept = _settings_of(front, "wren@example.org")
    assert kept == (False, "Wren", "Asia/Tokyo", "06:15", "daily", ["graphs"], 7, "web")
    before = front.snapshot()

    _sign_up(
        front,
        "Wren@Example.org",
        "name=Mallory",
        "timezone=Europe%2FParis",
        "send_at=09%3A00",
        "keywords=spam%2C+more+spam",
        "frequency=weekly",
        "weekly_day=sunday",
        f"liked_id={P4}",
        f"liked_id={P5}",
    )
    assert _settings_of(front, "wren@example.org") == kept  # nothing changed before the link is used
    assert front.likes("wren@example.org") == {P1, P2, P3}
    assert front.snapshot()[:3] == before[:3]  # readers, likes and opt-outs as they were; only the request is kept

    (link,) = front.confirm_links("wren@example.org")
    done = front.confirm(link)
    assert done.status_code == 200 and "You are subscribed" in done.text and "09:00 Europe/Paris" in done.text
    row = front.reader("wren@example.org")
    assert (row.active, row.name, row.timezone, row.send_at, row.frequency, row.weekly_day, row.keywords) == (
        True,
        "Mallory",
        "Europe/Paris",
        "09:00",
        "weekly",
        "sunday",
        ["spam", "more spam"],
    )
    assert front.likes("wren@example.org") == {P1, P2, P3, P4, P5}  # the old likes kept, the ticked ones added
    assert not front.store.liked_papers(row.id, Kind.DISLIKE)  # ticked as liked now: the old dislike of P5 gave way
    with front.store.session() as s:
        assert not list(s.exec(select(PendingSignup).where(PendingSignup.email == "wren@example.org")))


def test_the_confirmed_link_applies_its_own_request_and_older_links_bring_nothing_back(front: Front) -> None:
    front.web_reader("yara@example.org", liked=[P1], timezone="UTC")
    front.store.unsubscribe("yara@example.org", datetime.now(UTC))
    _sign_up(front, "yara@example.org", "timezone=Asia%2FTokyo", f"liked_id={P2}")
    _sign_up(front, "yara@example.org", "timezone=America%2FChicago", f"liked_id={P3}")
    first, second = front.confirm_links("yara@example.org")
    assert _settings_of(front, "yara@example.org")[:3] == (False, "", "UTC")
    assert "You are subscribed" in front.confirm(first).text
    assert front.reader("yara@example.org").timezone == "Asia/Tokyo" and front.likes("yara@example.org") == {P1, P2}
    later = front.confirm(second)  # the other request went when the first link was used: it only subscribes
    assert later.status_code == 200 and "Asia/Tokyo" in later.text
    assert front.reader("yara@example.org").timezone == "Asia/Tokyo" and front.likes("yara@example.org") == {P1, P2}
    again = front.confirm(first)
    assert "Already confirmed" in again.text


def test_a_new_address_takes_only_the_confirmed_requests_settings_and_likes(front: Front) -> None:
    """A stranger signs up an address first (making its inactive row); the owner's own sign-up and link win."""
    _sign_up(front, "zed@example.org", "timezone=Asia%2FTokyo", "keywords=junk", f"liked_id={P6}")
    assert _settings_of(front, "zed@example.org")[:3] == (False, "", "Asia/Tokyo")  # a new address: inactive row
    _sign_up(front, "zed@example.org", "name=Zed", "timezone=Europe%2FOslo", f"liked_id={P7}")
    assert front.reader("zed@example.org").timezone == "Asia/Tokyo"  # the second request waits for its link
    strangers, owners = front.confirm_links("zed@example.org")
    assert "You are subscribed" in front.confirm(owners).text
    row = front.reader("zed@example.org")
    assert (row.active, row.name, row.timezone, row.keywords) == (True, "Zed", "Europe/Oslo", [])
    assert front.likes("zed@example.org") == {P7}
    front.confirm(strangers)
    assert front.reader("zed@example.org").timezone == "Europe/Oslo" and front.likes("zed@example.org") == {P7}


def test_sign_ups_for_active_and_file_readers_keep_their_settings(front: Front) -> None:
    before, mails = front.snapshot(), len(front.inbox.to("vera@example.org"))
    _sign_up(front, "vera@example.org", "timezone=Asia%2FTokyo", f"liked_id={P1}")
    assert front.snapshot() == before  # an active reader: nothing kept, nothing changed
    notices = front.inbox.to("vera@example.org")[mails:]
    assert [m["Subject"] for m in notices] == ["You already get the paper digest"]
    assert not front.confirm_links("vera@example.org")

    ivan = _settings_of(front, "ivan@example.org")
    front.store.unsubscribe("ivan@example.org", datetime.now(UTC))
    _sign_up(front, "ivan@example.org", "timezone=Asia%2FTokyo", "keywords=spam", f"liked_id={P1}")
    assert _settings_of(front, "ivan@example.org") == (False, *ivan[1:])
    (link,) = front.confirm_links("ivan@example.org")
    assert "You are subscribed" in front.confirm(link).text
    assert _settings_of(front, "ivan@example.org") == ivan  # the file's settings, active again
    assert front.likes("ivan@example.org") == set()


def test_pending_sign_ups_in_the_store_on_both_backends(store: Store) -> None:
    """The store's side of the rules above, on SQLite and PostgreSQL."""
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    store.upsert_papers(PAPERS, now)
    store.request_subscription("kim@example.org", {"timezone": "Asia/Tokyo", "keywords": ["a"]}, [P1], now, nonce="n1")
    assert store.confirm_subscription("kim@example.org", now, nonce="n1").active
    store.unsubscribe("kim@example.org", now)
    store.request_subscription(
        "kim@example.org", {"timezone": "Europe/Oslo", "keywords": ["b"]}, [P2, P2], now, nonce="n2"
    )
    kim = store.subscriber(email="kim@example.org")
    assert (kim.active, kim.timezone, kim.keywords) == (False, "Asia/Tokyo", ["a"])
    assert {p.id for p, _ in store.liked_papers(kim.id)} == {P1}
    kim = store.confirm_subscription("KIM@example.org", now, nonce="n2")
    assert (kim.active, kim.timezone, kim.keywords) == (True, "Europe/Oslo", ["b"])
    assert sorted(p.id for p, _ in store.liked_papers(kim.id)) == [P1, P2]
    assert store.confirm_subscription("nobody@example.org", now, nonce="n2") is None
    store.request_subscription("old@example.org", {}, [], now, nonce="n3")
    store.request_subscription("new@example.org", {}, [], now + timedelta(days=8), nonce="n4")
    with store.session() as s:
        assert sorted(p.nonce for p in s.exec(select(PendingSignup))) == ["n4"]  # old requests are forgotten


# -- delivery: an address the server cannot take ------------------------------------------------------


@pytest.fixture
def plain_smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server without SMTPUTF8 (aiosmtpd's Controller offers it unless told not to)."""
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "digest@example.org", to, "Hello"
    msg.set_content("Hello")
    return msg


def test_an_address_the_smtp_server_cannot_take_is_a_permanent_failure(
    make_config: ConfigFactory,
    plain_smtp: tuple[Inbox, int],
) -> None:
    inbox, port = plain_smtp
    transport = SmtpTransport(make_config(smtp_port=port, method="smtp"))
    try:
        with pytest.raises(PermanentDeliveryError, match="SMTPUTF8"):
            transport.send(_message("zoë@example.org"))
        with pytest.raises(PermanentDeliveryError, match="UnicodeEncodeError"):
            transport.send_bytes("digest@example.org", "zoë@example.org", b"Subject: x\r\n\r\nx\r\n")
        transport.send(_message("fine@example.org"))  # the next reader's message still goes
    finally:
        transport.close()
    assert [rcpt for _, rcpt in inbox.envelopes] == [["fine@example.org"]]


def test_a_sign_up_the_mail_server_refuses_is_a_field_error_not_a_retry_later(
    make_config: ConfigFactory,
    plain_smtp: tuple[Inbox, int],
) -> None:
    """smtp.smtputf8 = true but the server lacks SMTPUTF8: the form says so (400), not "try again" (503)."""
    inbox, port = plain_smtp
    settings = make_config('[web]\nbase_url = "https://digest.example.org"\n', smtp_port=port, method="smtp")
    settings = settings.model_copy(update={"smtp": settings.smtp.model_copy(update={"smtputf8": True})})
    store = Store(settings.database_url)
    try:
        with TestClient(create_app(settings, store=store), base_url="https://digest.example.org") as client:
            page = client.get("/subscribe")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            response = client.post("/subscribe", data={"csrf": csrf, "email": "zoë@example.org", "timezone": "UTC"})
        _refused(response, 400, 'id="email-error"', "cannot deliver to this address")
        assert not inbox.messages
    finally:
        store.close()
