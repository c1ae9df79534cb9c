"""Request-level safety for the web front: CSRF tokens for forms and per-client rate limits.

CSRF is a signed double-submit: the page sets a random cookie and puts a signed, timed copy of it in
the form; a POST must bring both and they must match.  Rate limits are a sliding window per
(bucket, client IP) counted in the database (`Store.rate_hit`), so several `digest serve` processes,
on one machine or behind a load balancer, share them; the clock is injectable.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from digest import links
from digest.db import Store

CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf"


class RateLimiter:
    """At most `limit` hits per `window` seconds for each key of this bucket, counted in the store."""

    def __init__(self, store: Store, bucket: str, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.store = store
        self.bucket = bucket
        self.limit = limit
        self.window = window
        self.clock = clock

    def hit(self, key: str) -> bool:
        """Count one hit for `key`; False when it is over the limit (the hit is not counted then)."""
        return self.store.rate_hit(f"{self.bucket}:{key}", self.limit, self.window, self.clock())


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
