"""Request-level safety for the web front: CSRF tokens for forms and per-client rate limits.

CSRF is a signed double-submit: the page sets a random cookie and puts a signed, timed copy of it in
the form; a POST must bring both and they must match.  Rate limits are an in-process sliding window
per (bucket, client IP), with an injectable clock; enough for one `digest serve` process.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable

from digest import links

CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf"


class RateLimiter:
    """At most `limit` hits per `window` seconds for each key."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> bool:
        """Count one hit for `key`; False when it is over the limit (the hit is not counted then)."""
        now = self.clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self._hits) > 10_000:  # forget idle clients so memory stays small
            for k in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
                del self._hits[k]
        return True


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(18)


def csrf_token(key: str, cookie: str, clock: links.Clock) -> str:
    """The form field that goes with a CSRF cookie value."""
    return links.make_token(key, links.CSRF, {"c": cookie}, clock=clock)


def csrf_ok(key: str, cookie: str | None, field: str | None, clock: links.Clock) -> bool:
    """Does the form's field match the cookie (signed by us, not too old)?"""
    if not cookie or not field:
        return False
    try:
        payload = links.read_token(key, links.CSRF, field, max_age=links.CSRF_MAX_AGE, clock=clock)
    except links.InvalidToken:
        return False
    return secrets.compare_digest(str(payload.get("c", "")), cookie)
