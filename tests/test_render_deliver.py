"""Rendering escapes untrusted paper text; messages are well-formed and cannot carry injected headers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from email import message_from_bytes, policy

import pytest

from digest.deliver import Envelope, OutboxTransport, build_message, message_id, parse_sender, recipient
from digest.errors import DeliveryError
from digest.render import DigestView, PaperView, paper_url, render_digest, trim

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'


def view(**overrides: object) -> DigestView:
    paper = PaperView(
        id="2106.09685",
        title=EVIL,
        url="https://arxiv.org/abs/2106.09685",
        authors="A. Author, B. Author",
        abstract="An abstract with <b>tags</b> & ampersands.",
        date="23 Nov 2026",
        reason=f"close to {EVIL}",
    )
    base = dict(
        name="Ada",
        email="ada@example.org",
        digest_date=date(2026, 11, 23),
        picks=[paper],
        new_count=12,
        unsubscribe_url="http://localhost:8000/unsubscribe?t=abc",
        subject="Your digest",
        trending=[
            PaperView(
                id="t-1", title="Hot paper", url="https://example.org/p", authors="", abstract="", date="", count=42
            )
        ],
    )
    base.update(overrides)
    return DigestView(**base)  # type: ignore[arg-type]


def test_html_escapes_paper_text_and_inlines_css() -> None:
    text, html = render_digest(view())
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert "<b>tags</b>" not in html
    assert "<style" not in html  # CSS inlined for mail clients that drop <style>
    assert 'style="' in html
    assert "Trending today" in html and "42 upvotes" in html
    assert "http://localhost:8000/unsubscribe?t=abc" in html
    # The plain-text twin has the same content, unescaped.
    assert EVIL in text and "https://arxiv.org/abs/2106.09685" in text
    assert "Hot paper (42 upvotes)" in text


def test_empty_digest_says_so() -> None:
    text, html = render_digest(view(picks=[], trending=[]))
    assert "No new papers matched your interests today." in text
    assert "No new papers matched your interests today." in html


def test_paper_links_and_trimming() -> None:
    assert paper_url("2106.09685v2", "", "x") == "https://arxiv.org/abs/2106.09685"
    assert paper_url("t-abc", "", "Graph Nets") == "https://arxiv.org/search/?searchtype=title&query=Graph+Nets"
    assert paper_url("x", "https://example.org/p", "t") == "https://example.org/p"
    assert trim("one two three four", 9) == "one two…"
    assert trim("short", 100) == "short"


def envelope(name: str = "Ada Lovelace", subject: str = "Your digest") -> Envelope:
    sender = parse_sender("Paper digest <digest@example.org>")
    day = date(2026, 11, 23)
    return Envelope(
        sender,
        recipient(name, "ada@example.org"),
        subject,
        message_id(sender, "ada@example.org", day),
        datetime(2026, 11, 23, 8, tzinfo=UTC),
        day,
    )


def test_message_is_multipart_with_headers() -> None:
    msg = build_message(
        envelope(), "text", "<p>html</p>", unsubscribe_url="https://x/u?t=1", unsubscribe_mailto="mailto:d@example.org"
    )
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["List-Unsubscribe"] == "<mailto:d@example.org>, <https://x/u?t=1>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"].startswith("<digest.20261123.") and parsed["Message-ID"].endswith("@example.org>")
    assert parsed["To"] == "Ada Lovelace <ada@example.org>"


def test_message_id_is_stable_per_subscriber_and_day() -> None:
    sender = parse_sender("digest@example.org")
    a = message_id(sender, "ada@example.org", date(2026, 11, 23))
    assert a == message_id(sender, "ada@example.org", date(2026, 11, 23))
    assert a != message_id(sender, "ada@example.org", date(2026, 11, 24))
    assert a != message_id(sender, "bob@example.org", date(2026, 11, 23))


@pytest.mark.parametrize("name", ["Ada\nBcc: victim@example.org", "Ada\r\nX-Evil: 1"])
def test_newline_in_name_cannot_inject_headers(name: str) -> None:
    with pytest.raises(DeliveryError, match="line break"):
        envelope(name=name)


def test_newline_in_subject_cannot_inject_headers() -> None:
    with pytest.raises(DeliveryError, match="line break"):
        build_message(
            envelope(subject="Hi\r\nBcc: victim@example.org"), "t", "h", unsubscribe_url="u", unsubscribe_mailto="m"
        )


def test_unicode_names_are_encoded_safely() -> None:
    msg = build_message(envelope(name='Zoë Ünïcode, "quoted"'), "t", "h", unsubscribe_url="u", unsubscribe_mailto="m")
    raw = msg.as_bytes()
    assert b"\nBcc" not in raw
    assert message_from_bytes(raw, policy=policy.default)["To"].addresses[0].display_name == 'Zoë Ünïcode, "quoted"'


def test_outbox_writes_one_file_per_subscriber_and_day(tmp_path) -> None:
    msg = build_message(envelope(), "text", "<p>html</p>", unsubscribe_url="u", unsubscribe_mailto="m")
    OutboxTransport(tmp_path).send(msg)
    OutboxTransport(tmp_path).send(msg)  # the same digest again replaces, never duplicates
    files = list(tmp_path.rglob("*.eml"))
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["2026-11-23/ada@example.org.eml"]


@pytest.mark.parametrize(
    "name,subject", [("Ada Lovelace", "Your digest"), ("Zoë Ñúñez, Jr.", "Vos articles — lundi"), ("", "x" * 200)]
)
def test_wire_bytes_match_the_built_message(name: str, subject: str) -> None:
    """`message_bytes` (the fast path the workers send) parses to the same headers and bodies as `build_message`."""
    from digest.deliver import message_bytes

    env = envelope(name, subject)
    text, html = render_digest(view(name="Zoë"))
    text += "\nA line with trailing space \nand = signs and a very long line " + "word " * 40 + "\n.leading dot"
    kwargs = dict(
        unsubscribe_url="https://digest.example.org/unsubscribe?t=" + "A" * 90 + ".b",
        unsubscribe_mailto="mailto:digest@example.org?subject=unsubscribe%20ada%40example.org",
    )
    built = build_message(env, text, html, **kwargs)
    for eight_bit, long_line in ((False, ""), (True, ""), (True, "z" * 1200)):
        raw = message_bytes(env, text + long_line, html, eight_bit=eight_bit, **kwargs)
        wire = message_from_bytes(raw, policy=policy.default)
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        assert raw.isascii() or eight_bit
        for header in (
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "Auto-Submitted",
            "X-Digest-Date",
        ):
            assert str(wire[header]) == str(built[header]), header
        assert wire.get_content_type() == "multipart/alternative"
        for kind, body in (("plain", text + long_line), ("html", html)):
            got = wire.get_body((kind,)).get_content().replace("\r\n", "\n")
            assert got == (body if body.endswith("\n") else body + "\n")
    with pytest.raises(DeliveryError):
        message_bytes(envelope(subject="x\r\nBcc: evil@example.org"), text, html, **kwargs)


def test_html_from_inlined_pieces_equals_the_whole_template_render() -> None:
    """The fast path (page and rows inlined once, values put into slots) is byte-identical to Jinja + inliner per digest."""
    from dataclasses import replace

    from digest.render import render_digest_reference

    base = view(manage_url="https://d.example.org/preferences?t=a.b", browser_url="https://d.example.org/digest?t=a.b")
    odd = 'Zoë & <b>Ünïcode</b> "quotes" it\'s\xa0nbsp\r\nline'
    paper = base.picks[0]
    linked = replace(
        paper,
        click_url="https://d.example.org/click?t=x.y",
        more_url="https://d.example.org/feedback?t=m&x=1",
        fewer_url="https://d.example.org/feedback?t=f.g",
    )
    variants = [
        base,
        replace(
            base,
            name=odd,
            email="o'dd&x@example.org",
            subject=odd,
            picks=[replace(linked, reason=odd, authors=odd)] * 3,
        ),
        replace(base, picks=[], trending=[]),
        replace(base, picks=[], origin="web"),
        replace(
            base,
            picks=[linked, replace(linked, id="2", title="Other", abstract="", authors="", reason="")],
            trending=[],
            origin="config",
            manage_url="",
            browser_url="",
            name="",
        ),
        replace(base, trending=[replace(base.trending[0], count=1)], trending_label="likes"),
    ]
    for v in variants * 2:  # the second round comes from the caches
        assert render_digest(v) == render_digest_reference(v)


@pytest.mark.parametrize(
    "name",
    [
        "Ada Lovelace",
        "Reader 5",
        "",
        "Zoë Ñúñez",
        "O'Brien",
        "Lovelace, Ada",
        "Ada (the first)",
        "A very long display name that goes on and on and on",
        "ada.lovelace+digest",
    ],
)
def test_plain_address_headers_skip_the_parser_with_the_same_result(name: str) -> None:
    from digest.deliver import _folded, _folded_by_policy

    for value in (str(recipient(name, "ada.lovelace+x@mail.example.org")), str(recipient(name, "d@example.org"))):
        for header in ("To", "From"):
            assert _folded(header, value) == _folded_by_policy(header, value), value


def test_wire_bytes_with_leading_dots_arrive_intact(smtp_server) -> None:
    """Our DATA (dot-stuffing by byte replace) through a real SMTP server: the body comes back as sent."""
    from digest.deliver import _WireSMTP, message_bytes

    inbox, port = smtp_server
    text = ".leading dot\n..two dots\nmiddle . dot\n.\nlast line ."
    raw = message_bytes(
        envelope(),
        text,
        "<p>.html</p>\n.<b>x</b>",
        unsubscribe_url="https://x/u?t=1",
        unsubscribe_mailto="mailto:d@example.org",
        eight_bit=True,
    )
    conn = _WireSMTP("127.0.0.1", port, timeout=10)
    try:
        assert conn.sendmail("digest@example.org", ["ada@example.org"], raw, mail_options=["BODY=8BITMIME"]) == {}
        assert conn.sendmail("digest@example.org", ["ada@example.org"], raw.decode("ascii")) == {}  # smtplib's own path
    finally:
        conn.quit()
    for i, got in enumerate(inbox.messages):
        assert got.get_body(("plain",)).get_content().replace("\r\n", "\n") == text + "\n", i
        assert got.get_body(("html",)).get_content().replace("\r\n", "\n") == "<p>.html</p>\n.<b>x</b>\n"
    assert len(inbox.messages) == 2


def test_a_full_digest_goes_as_8bit_not_base64() -> None:
    """Long abstracts and feedback links keep every HTML line under 998 bytes, so the HTML part is sent
    as 8bit (readable, a quarter smaller, a third of the lines) instead of falling back to base64;
    folding the abstract only at spaces leaves the text as read (hyphens and long words intact)."""
    from dataclasses import replace

    from digest.deliver import message_bytes

    words = ("state-of-the-art " + "https://example.org/" + "x" * 240 + " ") + "A sentence of an abstract, ü. " * 60
    base = view()
    paper = replace(
        base.picks[0],
        abstract=words.strip(),
        click_url="https://d.example.org/click?t=" + "c" * 80,
        more_url="https://d.example.org/feedback?t=" + "m" * 110,
        fewer_url="https://d.example.org/feedback?t=" + "f" * 110,
    )
    text, html = render_digest(replace(base, picks=[paper] * 10, manage_url="https://d.example.org/p?t=x.y"))
    assert max(len(line.encode()) for line in html.splitlines()) <= 998
    assert " ".join(html.split()).count(" ".join(words.split())) == 10  # the same words, only the line breaks moved
    raw = message_bytes(
        envelope(),
        text,
        html,
        unsubscribe_url="https://x/u?t=1",
        unsubscribe_mailto="mailto:d@example.org",
        eight_bit=True,
    )
    assert b"Content-Transfer-Encoding: base64" not in raw
    assert raw.count(b"Content-Transfer-Encoding: 8bit") == 2
