"""The web front (`digest serve`): feedback links from emails, sign-up with double opt-in, preferences.

A small Starlette app over the same store as the daily job.  `create_app(settings)` builds it; the
clock is a parameter so tests can expire links and empty rate-limit windows.
"""

from digest.web.app import create_app

__all__ = ["create_app"]
