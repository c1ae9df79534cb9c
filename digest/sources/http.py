"""The one polite HTTP client every network source uses: timeouts, a pause between requests,
bounded retries with exponential backoff on 429/5xx and transport errors (honouring Retry-After),
and a User-Agent that says who we are.

Every failure ends as a `SourceError` naming the URL and what went wrong.  `sleep` and `clock` are
parameters so tests never wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from digest.errors import SourceError
from digest.settings import SourceSettings

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # decoded; a bigger answer (or a compression bomb) is refused

Sleep = Callable[[float], None]


def user_agent(contact_email: str = "") -> str:
    """`digest/<version> (personal paper digest; mailto:contact)`: lets an API operator reach the operator.

    Set `contact_email` on the source so arXiv and Hugging Face can reach whoever runs this instance.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("digest")
    except PackageNotFoundError:
        ours = "0.1"
    contact = f"; mailto:{contact_email}" if contact_email else ""
    return f"digest/{ours} (personal research-paper digest{contact})"


@dataclass(frozen=True)
class HttpPolicy:
    """How hard and how politely to ask: per-request timeout, attempts, backoff and pause."""

    timeout: float = 30.0
    max_attempts: int = 4
    backoff: float = 2.0  # first retry waits this long, then twice as long each time
    max_wait: float = 60.0  # cap on any single wait, Retry-After included
    delay: float = 3.0  # minimum seconds between the starts of two requests
    contact_email: str = ""


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value[:12])
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Http:
    """A shared `httpx.Client` for one source's run; use as a context manager."""

    def __init__(
        self,
        policy: HttpPolicy,
        *,
        sleep: Sleep = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self._last_start: float | None = None
        self.client = httpx.Client(
            timeout=policy.timeout,
            headers={"User-Agent": user_agent(policy.contact_email)},
            follow_redirects=True,
            transport=transport,
        )

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def _pace(self) -> None:
        if self._last_start is not None and self.policy.delay > 0:
            wait = self.policy.delay - (self.clock() - self._last_start)
            if wait > 0:
                self.sleep(wait)
        self._last_start = self.clock()

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> bytes:
        """The body of a successful (2xx) answer (decoded, at most MAX_RESPONSE_BYTES), or
        SourceError after at most `max_attempts` tries."""
        policy = self.policy
        problem = ""
        cause: Exception | None = None
        for attempt in range(1, policy.max_attempts + 1):
            self._pace()
            wait = min(policy.backoff * 2 ** (attempt - 1), policy.max_wait)
            try:
                response, body = self._fetch(url, params)
            except _TooLarge as e:
                raise SourceError(f"{url}: the answer is larger than {MAX_RESPONSE_BYTES // 2**20} MB; refused") from e
            except httpx.TimeoutException as e:
                problem, cause = f"no answer within {policy.timeout:g} s", e
            except httpx.TransportError as e:
                problem, cause = f"cannot connect ({e.__class__.__name__}: {e})", e
            else:
                if response.is_success:
                    return body
                problem, cause = f"HTTP {response.status_code} {response.reason_phrase}".rstrip(), None
                if response.status_code not in RETRY_STATUSES:
                    break
                asked = retry_after(response.headers.get("Retry-After"))
                if asked is not None:
                    wait = min(asked, policy.max_wait)
            if attempt < policy.max_attempts:
                self.sleep(wait)
        tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
        raise SourceError(
            f"{url}: {problem} (gave up after {tries}; is the service up and the base_url right?)"
        ) from cause

    def _fetch(self, url: str, params: Mapping[str, Any] | None) -> tuple[httpx.Response, bytes]:
        """GET with the body read up to MAX_RESPONSE_BYTES (decoded), so no answer can exhaust memory."""
        with self.client.stream("GET", url, params=params) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                raise _TooLarge()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise _TooLarge()
        return response, bytes(body)


class _TooLarge(Exception):
    """An answer over MAX_RESPONSE_BYTES."""


def policy_for(src: SourceSettings) -> HttpPolicy:
    """The HTTP policy a source's settings ask for."""
    return HttpPolicy(
        timeout=src.timeout,
        max_attempts=src.max_attempts,
        backoff=src.backoff,
        max_wait=src.max_wait,
        delay=src.request_delay,
        contact_email=src.contact_email,
    )
