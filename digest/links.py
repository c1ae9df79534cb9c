"""Signed links that act for a subscriber (unsubscribe, feedback), so nobody can forge them.

Tokens are itsdangerous timed signatures with a purpose-specific salt; the key comes from
`DIGEST_SECRET_KEY`, or for a local set-up from a generated file in the data folder (never a
committed file).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from digest.errors import DigestError
from digest.settings import Settings

UNSUBSCRIBE = "unsubscribe"
TOKEN_MAX_AGE = 60 * 60 * 24 * 60  # links in a digest stay valid for 60 days


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


def _serializer(key: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt=f"digest.{purpose}")


def make_token(key: str, purpose: str, payload: dict[str, str | int]) -> str:
    return _serializer(key, purpose).dumps(payload)


def read_token(key: str, purpose: str, token: str, *, max_age: int = TOKEN_MAX_AGE) -> dict[str, str | int]:
    """The payload of a valid token; raises InvalidToken otherwise."""
    try:
        payload = _serializer(key, purpose).loads(token, max_age=max_age)
    except SignatureExpired as e:
        raise InvalidToken("this link has expired") from e
    except BadSignature as e:
        raise InvalidToken("this link is not valid") from e
    if not isinstance(payload, dict):
        raise InvalidToken("this link is not valid")
    return payload


def unsubscribe_url(settings: Settings, key: str, email: str) -> str:
    token = make_token(key, UNSUBSCRIBE, {"e": email})
    return f"{settings.web.base_url}/unsubscribe?{urlencode({'t': token})}"


def unsubscribe_mailto(sender_address: str, email: str) -> str:
    return f"mailto:{sender_address}?subject={quote('unsubscribe ' + email)}"
