"""Signed links that act for a subscriber (unsubscribe, feedback), so nobody can forge them.

Tokens are itsdangerous timed signatures with a purpose-specific salt; the key comes from
`DIGEST_SECRET_KEY`, or for a local set-up from a generated file in the data folder (never a
committed file).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from digest.errors import DigestError
from digest.settings import Settings

UNSUBSCRIBE = "unsubscribe"
FEEDBACK = "feedback"  # more / fewer like this: {"s": subscriber id, "p": paper id, "k": like|dislike, "n": nonce}
CLICK = "click"  # the paper link: {"s": subscriber id, "p": paper id}
MANAGE = "manage"  # preferences and the digest in the browser: {"e": email}
CONFIRM = "confirm"  # double opt-in: {"e": email, "n": nonce}
CSRF = "csrf"  # forms: {"c": the value of the CSRF cookie}
TOKEN_MAX_AGE = 60 * 60 * 24 * 60  # links in a digest stay valid for 60 days
CONFIRM_MAX_AGE = 60 * 60 * 48  # a sign-up must be confirmed within two days
CSRF_MAX_AGE = 60 * 60 * 4  # a form must be sent within four hours of being shown

Clock = Callable[[], float]  # seconds since the epoch, like time.time


class InvalidToken(DigestError):
    """A link token that is forged, altered, truncated, for another purpose, or expired."""


def secret_key(settings: Settings) -> str:
    """The signing key: the environment's, else one generated once into the data folder."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = settings.data_path / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


class _ClockSigner(TimestampSigner):
    """A timestamp signer whose clock is a parameter, so tests can sign in the past or check in the future."""

    def __init__(self, *args: Any, clock: Clock = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock())


def _serializer(key: str, purpose: str, clock: Clock | None = None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        key, salt=f"digest.{purpose}", signer=_ClockSigner, signer_kwargs={"clock": clock or time.time}
    )


def make_token(key: str, purpose: str, payload: dict[str, str | int], *, clock: Clock | None = None) -> str:
    return _serializer(key, purpose, clock).dumps(payload)


def read_token(
    key: str, purpose: str, token: str, *, max_age: int = TOKEN_MAX_AGE, clock: Clock | None = None
) -> dict[str, str | int]:
    """The payload of a valid token; raises InvalidToken otherwise (also for one signed in the future)."""
    try:
        payload = _serializer(key, purpose, clock).loads(token, max_age=max_age)
    except SignatureExpired as e:
        raise InvalidToken("this link has expired") from e
    except BadSignature as e:
        raise InvalidToken("this link is not valid") from e
    if not isinstance(payload, dict):
        raise InvalidToken("this link is not valid")
    return payload


def at(moment: datetime) -> Clock:
    """A clock stopped at `moment`, for signing the links of a digest composed as of then."""
    stamp = moment.timestamp()
    return lambda: stamp


def _link(settings: Settings, path: str, token: str) -> str:
    return f"{settings.web.base_url}{path}?{urlencode({'t': token})}"


def unsubscribe_url(settings: Settings, key: str, email: str, *, clock: Clock | None = None) -> str:
    return _link(settings, "/unsubscribe", make_token(key, UNSUBSCRIBE, {"e": email}, clock=clock))


def nonce() -> str:
    """A random id that makes a token single-use once the store has recorded it."""
    return secrets.token_urlsafe(9)


def feedback_url(settings: Settings, key: str, subscriber_id: int, paper_id: str, kind: str, *, clock: Clock | None = None) -> str:
    """"More like this" (kind "like") or "fewer like this" ("dislike") for one paper; single-use."""
    payload: dict[str, str | int] = {"s": subscriber_id, "p": paper_id, "k": kind, "n": nonce()}
    return _link(settings, "/feedback", make_token(key, FEEDBACK, payload, clock=clock))


def click_url(settings: Settings, key: str, subscriber_id: int, paper_id: str, *, clock: Clock | None = None) -> str:
    """The paper link: records a click, then redirects to the paper's stored address (never to one in the link)."""
    return _link(settings, "/click", make_token(key, CLICK, {"s": subscriber_id, "p": paper_id}, clock=clock))


def manage_url(settings: Settings, key: str, email: str, *, clock: Clock | None = None, path: str = "/preferences") -> str:
    """The preferences page (or, with path="/digest", the digest in the browser) for one subscriber."""
    return _link(settings, path, make_token(key, MANAGE, {"e": email}, clock=clock))


def confirm_url(settings: Settings, key: str, email: str, *, clock: Clock | None = None) -> str:
    return _link(settings, "/confirm", make_token(key, CONFIRM, {"e": email, "n": nonce()}, clock=clock))


def unsubscribe_mailto(sender_address: str, email: str) -> str:
    return f"mailto:{sender_address}?subject={quote('unsubscribe ' + email)}"
