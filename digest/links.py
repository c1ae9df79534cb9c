"""Signed links that act for a subscriber (unsubscribe, feedback, their feed), so nobody can forge them.

A token is `base64url(body) "." base64url(tag)`: the body is the signing time (4 bytes, seconds
since the epoch) and the payload (a flat dict of short strings and ints, in a compact form), the
tag a 128-bit keyed BLAKE2b of the body under a key derived from the secret and the token's
purpose (so a token for one purpose is worthless for another).  Forged, altered, truncated,
wrong-purpose, expired and future-dated tokens are refused.  The key comes from
`DIGEST_SECRET_KEY`, or for a local set-up from a generated file in the data folder (never a
committed file).  A digest's ~50 links cost a few microseconds each (`DigestLinks`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from digest.errors import DigestError
from digest.settings import Settings

UNSUBSCRIBE = "unsubscribe"
FEEDBACK = "feedback"  # more / fewer like this: {"s": subscriber id, "p": paper id, "k": like|dislike, "n": nonce}
CLICK = "click"  # the paper link: {"s": subscriber id, "p": paper id}
MANAGE = "manage"  # preferences and the digest in the browser: {"e": email}
CONFIRM = "confirm"  # double opt-in: {"e": email, "n": nonce}; the nonce names the sign-up the store keeps
CSRF = "csrf"  # forms: {"c": the value of the CSRF cookie}
FEED = "feed"  # the reader's Atom feed: {"s": subscriber id, "k": their feed key}; a new key revokes it
TOKEN_MAX_AGE = 60 * 60 * 24 * 60  # links in a digest stay valid for 60 days
CONFIRM_MAX_AGE = 60 * 60 * 48  # a sign-up must be confirmed within two days
CSRF_MAX_AGE = 60 * 60 * 4  # a form must be sent within four hours of being shown
FEED_MAX_AGE = 60 * 60 * 24 * 365 * 100  # a feed reader keeps its link for years: it ends by a new key, not by age

Clock = Callable[[], float]  # seconds since the epoch, like time.time


class InvalidToken(DigestError):
    """A link token that is forged, altered, truncated, for another purpose, or expired."""


def secret_key(settings: Settings) -> str:
    """The signing key: the environment's, else one generated once into the data folder."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = settings.data_path / "secret.key"
    if not path.exists():
        # Written whole under another name, then linked into place: processes starting at once on a
        # fresh data folder (workers, a web front) all end up with the one key that won, never with
        # an empty or half-written file or keys of their own.
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret.key.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:  # mkstemp's file is 0600 already
                out.write(key)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: create it, if no one did meanwhile
                with contextlib.suppress(FileExistsError), open(path, "x", encoding="ascii") as new:
                    new.write(key)
                    os.chmod(path, 0o600)
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="ascii").strip()


_COMPACT, _JSON = b"c", b"j"  # payload encodings
_TAG = 16  # bytes of MAC


@lru_cache(maxsize=64)
def _purpose_key(key: str, purpose: str) -> bytes:
    return hashlib.blake2b(
        f"digest.{purpose}".encode(),
        key=hashlib.sha256(key.encode()).digest(),
        digest_size=32,
        person=b"digest-link-key",
    ).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode(payload: dict[str, str | int]) -> bytes:
    """key\x1e(s|i)value items joined by \x1f; JSON when a key or value holds a control character."""
    parts = []
    for k, v in payload.items():
        if isinstance(v, bool) or not isinstance(v, (str, int)) or not isinstance(k, str):
            raise TypeError(f"token payload values must be str or int, not {type(v).__name__}")
        text = v if isinstance(v, str) else str(v)
        if not (k.isprintable() and text.isprintable()):
            return _JSON + json.dumps(payload, separators=(",", ":")).encode()
        parts.append(f"{k}\x1e{'s' if isinstance(v, str) else 'i'}{text}")
    return _COMPACT + "\x1f".join(parts).encode()


def _decode(raw: bytes) -> dict[str, str | int]:
    kind, rest = raw[:1], raw[1:].decode("utf-8")
    if kind == _JSON:
        payload = json.loads(rest)
        if not isinstance(payload, dict):
            raise ValueError("not a dict")
        return payload
    if kind != _COMPACT:
        raise ValueError("unknown encoding")
    out: dict[str, str | int] = {}
    for item in rest.split("\x1f") if rest else ():
        k, v = item.split("\x1e", 1)
        out[k] = v[1:] if v[:1] == "s" else int(v[1:]) if v[:1] == "i" else _bad()
    return out


def _bad() -> str:
    raise ValueError("unknown value type")


def _sign(purpose_key: bytes, stamp: int, body: bytes) -> str:
    body = stamp.to_bytes(4, "big") + body
    tag = hashlib.blake2b(body, key=purpose_key, digest_size=_TAG).digest()
    return f"{_b64(body)}.{_b64(tag)}"


def make_token(key: str, purpose: str, payload: dict[str, str | int], *, clock: Clock | None = None) -> str:
    return _sign(_purpose_key(key, purpose), int((clock or time.time)()), _encode(payload))


def read_token(
    key: str, purpose: str, token: str, *, max_age: int = TOKEN_MAX_AGE, clock: Clock | None = None
) -> dict[str, str | int]:
    """The payload of a valid token; raises InvalidToken otherwise (also for one signed in the future)."""
    try:
        body64, tag64 = token.split(".")
        body, tag = _unb64(body64), _unb64(tag64)
    except (ValueError, TypeError, UnicodeError) as e:  # binascii.Error is a ValueError
        raise InvalidToken("this link is not valid") from e
    if len(body) < 5 or _b64(body) != body64 or _b64(tag) != tag64:  # one spelling per token
        raise InvalidToken("this link is not valid")
    expected = hashlib.blake2b(body, key=_purpose_key(key, purpose), digest_size=_TAG).digest()
    if not hmac.compare_digest(expected, tag):
        raise InvalidToken("this link is not valid")
    age = int((clock or time.time)()) - int.from_bytes(body[:4], "big")
    if age < 0:
        raise InvalidToken("this link is not valid")
    if age > max_age:
        raise InvalidToken("this link has expired")
    try:
        return _decode(body[4:])
    except (ValueError, UnicodeError) as e:
        raise InvalidToken("this link is not valid") from e


def at(moment: datetime) -> Clock:
    """A clock stopped at `moment`, for signing the links of a digest composed as of then."""
    stamp = moment.timestamp()
    return lambda: stamp


def _link(settings: Settings, path: str, token: str) -> str:
    return f"{settings.web.base_url}{path}?t={token}"  # base64url and "." need no quoting


def unsubscribe_url(settings: Settings, key: str, email: str, *, clock: Clock | None = None) -> str:
    return _link(settings, "/unsubscribe", make_token(key, UNSUBSCRIBE, {"e": email}, clock=clock))


def nonce() -> str:
    """A random id that makes a token single-use once the store has recorded it."""
    return secrets.token_urlsafe(9)


def feedback_url(
    settings: Settings, key: str, subscriber_id: int, paper_id: str, kind: str, *, clock: Clock | None = None
) -> str:
    """ "More like this" (kind "like") or "fewer like this" ("dislike") for one paper; single-use."""
    payload: dict[str, str | int] = {"s": subscriber_id, "p": paper_id, "k": kind, "n": nonce()}
    return _link(settings, "/feedback", make_token(key, FEEDBACK, payload, clock=clock))


def click_url(settings: Settings, key: str, subscriber_id: int, paper_id: str, *, clock: Clock | None = None) -> str:
    """The paper link: records a click, then redirects to the paper's stored address (never to one in the link)."""
    return _link(settings, "/click", make_token(key, CLICK, {"s": subscriber_id, "p": paper_id}, clock=clock))


def manage_url(
    settings: Settings, key: str, email: str, *, clock: Clock | None = None, path: str = "/preferences"
) -> str:
    """The preferences page (or, with path="/digest", the digest in the browser) for one subscriber."""
    return _link(settings, path, make_token(key, MANAGE, {"e": email}, clock=clock))


def feed_url(settings: Settings, key: str, subscriber_id: int, feed_key: str, *, clock: Clock | None = None) -> str:
    """The reader's Atom feed.  It carries their `feed_key` (empty until the first "new feed link"),
    so giving them a new key (`Store.new_feed_key`) revokes every feed link made before."""
    return _link(settings, "/feed", make_token(key, FEED, {"s": subscriber_id, "k": feed_key}, clock=clock))


def new_feed_key() -> str:
    return secrets.token_urlsafe(12)


def confirm_url(settings: Settings, key: str, email: str, *, nonce: str, clock: Clock | None = None) -> str:
    """The double opt-in link; `nonce` (from `nonce()`) names the sign-up the store keeps for it."""
    return _link(settings, "/confirm", make_token(key, CONFIRM, {"e": email, "n": nonce}, clock=clock))


class DigestLinks:
    """The per-paper links of one digest (click, more, fewer), signed as of one moment.

    Exactly the tokens `click_url` / `feedback_url` make, with the keyed hash states, the time
    stamp and the subscriber part prepared once per digest and the nonces drawn in one go.
    """

    def __init__(self, settings: Settings, key: str, subscriber_id: int, *, clock: Clock | None = None) -> None:
        self.base = settings.web.base_url
        self.stamp = int((clock or time.time)()).to_bytes(4, "big")
        self.click_hash = hashlib.blake2b(key=_purpose_key(key, CLICK), digest_size=_TAG)
        self.feedback_hash = hashlib.blake2b(key=_purpose_key(key, FEEDBACK), digest_size=_TAG)
        self.sid = int(subscriber_id)
        self.head = self.stamp + _COMPACT + f"s\x1ei{self.sid}\x1fp\x1es".encode()

    def _token(self, keyed: Any, body: bytes) -> str:
        h = keyed.copy()
        h.update(body)
        return f"{_b64(body)}.{_b64(h.digest())}"

    def for_paper(self, paper_id: str) -> tuple[str, str, str]:
        """(click url, more-like-this url, fewer-like-this url) for one paper."""
        if not paper_id.isprintable():  # the general encoder handles it
            stamp = int.from_bytes(self.stamp, "big")
            raw = os.urandom(18)
            more: dict[str, str | int] = {"s": self.sid, "p": paper_id, "k": "like", "n": _b64(raw[:9])}
            fewer: dict[str, str | int] = {"s": self.sid, "p": paper_id, "k": "dislike", "n": _b64(raw[9:])}
            return (
                f"{self.base}/click?t={self._token(self.click_hash, self.stamp + _encode({'s': self.sid, 'p': paper_id}))}",
                f"{self.base}/feedback?t={self._token(self.feedback_hash, stamp.to_bytes(4, 'big') + _encode(more))}",
                f"{self.base}/feedback?t={self._token(self.feedback_hash, stamp.to_bytes(4, 'big') + _encode(fewer))}",
            )
        click = self.head + paper_id.encode()
        raw = _b64(os.urandom(18)).encode()
        more_body = click + b"\x1fk\x1eslike\x1fn\x1es" + raw[:12]
        fewer_body = click + b"\x1fk\x1esdislike\x1fn\x1es" + raw[12:]
        base = self.base
        return (
            f"{base}/click?t={self._token(self.click_hash, click)}",
            f"{base}/feedback?t={self._token(self.feedback_hash, more_body)}",
            f"{base}/feedback?t={self._token(self.feedback_hash, fewer_body)}",
        )


def unsubscribe_mailto(sender_address: str, email: str) -> str:
    return f"mailto:{sender_address}?subject={quote('unsubscribe ' + email)}"
