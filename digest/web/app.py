"""The web front's routes: signed links from emails, sign-up with double opt-in, preferences.

Every page is a Jinja2 template under `templates/web/` (autoescaped, inline CSS, no external
assets).  Every state change needs either a signed link token (feedback, click, unsubscribe,
confirm, preferences) or, for forms, a CSRF token too; unsubscribe also takes the RFC 8058 one-click
POST, where the signed URL alone is the proof.  Replies never say whether an address is subscribed.

    GET  /, /subscribe       sign-up form (?q= searches stored papers to tick as liked)
    POST /subscribe          sends a confirmation link; the same answer whatever the address
    GET  /confirm?t=         a button; POST /confirm?t= activates (single-use link)
    GET  /feedback?t=        more / fewer like this (single-use link; a replay changes nothing)
    GET  /click?t=           records a click, redirects to the paper's stored address only
    GET  /unsubscribe?t=     a button; POST /unsubscribe?t= unsubscribes at once (one-click)
    GET  /preferences?t=     preferences and likes; POST saves (web subscribers), /preferences/likes removes
    GET  /digest?t=          the latest digest, rendered with the email templates
    GET  /feed?t=            the reader's Atom feed (feed.py): 304 for a poll that has it, 404 for a
                             forged, altered or revoked link, 410 once the reader unsubscribed
    POST /preferences/feed   a new feed link (a new feed key): every older one stops working

Bad input never reaches the store: a post that is not one of our forms (over forms.MAX_BODY,
over forms.MAX_FIELDS fields, another content type) gets 413 or 415, a field the settings schema
refuses gets 400 with the reason beside it, a bad link 400.  A sign-up for an address that exists
changes nothing about its reader until the confirmation link is used (`Store.request_subscription`).

The store is synchronous (SQLite waits up to 30 s for a lock), so no handler runs on the event loop:
each route reads the posted form there (the body arrives there), then runs its handler, a plain
function of (request, form), in the thread pool (`_Front.route`; THREADS threads).  A locked database or a big page
stalls only its own request, never the others.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from digest import feed as atom
from digest import links
from digest.compose import compose, picks_from_row
from digest.db import Kind, Store, Subscriber
from digest.due import describe, local_date
from digest.errors import DataError, DeliveryError, DigestError, PermanentDeliveryError, StoreError
from digest.lookup import LookupReport, lookup_arxiv
from digest.pipeline import import_library
from digest.render import environment, paper_url
from digest.settings import Settings
from digest.sources.base import arxiv_id
from digest.sources.library import library_from_payload, library_payload, parse_library
from digest.web import forms, mail
from digest.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    RateLimiter,
    csrf_ok,
    csrf_token,
    new_csrf_cookie,
)

log = logging.getLogger(__name__)

MAX_TOKEN = 1000  # characters in a link token; longer is not ours
SUBSCRIBE_WINDOW = 600.0  # seconds over which web.subscribe_limit counts
LINK_WINDOW = 60.0  # seconds over which web.link_limit counts
# Threads the handlers run in: a few requests may wait for a locked database while another is served.
# No more: the store's work is mostly Python, and sqlite3 lets go of the GIL around every statement, so
# each thread more is more handing over of the GIL between cores.  On 2 idle cores, 50 busy clients:
# 2 threads 290-390 req/s, 4 threads 200-320, 8 threads 150-180 (anyio's default is 40); 4 waited
# best through a `digest send` and stays within the store's pool of 5 connections (BENCHMARKS.md).
THREADS = 4

SECURITY_HEADERS = {
    # No scripts at all, styles only inline, forms only to us; tokens in our URLs never leak as Referer.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The feed: personal, so never in a shared cache; kept by the reader's client and checked each poll.
FEED_HEADERS = SECURITY_HEADERS | {"Cache-Control": "private, no-cache"}
Form = dict[str, list[str]]
Handler = Callable[[Request, Form | None], Response]  # a route's work, run in the thread pool

UNEXPECTED = (
    '<!DOCTYPE html><html lang="en"><meta charset="utf-8"><title>Something went wrong · Paper digest</title>'
    "<h1>Something went wrong</h1><p>That was our fault, not yours. Please try again later.</p></html>"
)


class _Front:
    """The app's state (settings, store, key, clock, limiters) and its handlers."""

    def __init__(self, settings: Settings, store: Store, clock: links.Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.key = links.secret_key(settings)
        self.env = environment()
        self.subscribe_limiter = RateLimiter(store, "subscribe", settings.web.subscribe_limit, SUBSCRIBE_WINDOW, clock)
        self.link_limiter = RateLimiter(store, "link", settings.web.link_limit, LINK_WINDOW, clock)
        self.secure_cookie = settings.web.base_url.startswith("https://")

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def route(
        self, handler: Handler, *, any_type: bool = False, upload: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint for `handler`: a POST's form is read on the event loop (`form`; None for
        other methods), then `handler(request, form)` runs in the thread pool, where it may wait for
        the database, render a page or send mail without holding up any other request."""

        async def endpoint(request: Request) -> Response:
            if request.method != "POST":
                form = None
            else:
                form = await (self.upload(request) if upload else self.form(request, any_type=any_type))
            return await run_in_threadpool(handler, request, form)

        endpoint.__name__ = endpoint.__qualname__ = handler.__name__
        return endpoint

    # -- responses ------------------------------------------------------------------------------

    def page(self, request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from templates/web/, with a CSRF cookie and the matching form token."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        fresh = not (16 <= len(cookie) <= 64 and cookie.replace("-", "").replace("_", "").isalnum())
        if fresh:
            cookie = new_csrf_cookie()
        html = self.env.get_template(f"web/{name}.html").render(
            csrf=csrf_token(self.key, cookie, self.clock),
            csrf_field=CSRF_FIELD,
            signups=self.settings.web.allow_signups,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                max_age=links.CSRF_MAX_AGE,
                httponly=True,
                samesite="lax",
                secure=self.secure_cookie,
                path="/",
            )
        return response

    def message(self, request: Request, title: str, text: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        return self.page(request, "message", status=status, title=title, text=text, **context)

    def bad_link(self, request: Request, why: str = "This link is not valid.") -> HTMLResponse:
        return self.message(request, "This link does not work", why + " Nothing was changed.", status=400)

    def too_many(self, request: Request) -> HTMLResponse:
        response = self.message(request, "Too many requests", "Please wait a minute and try again.", status=429)
        response.headers["Retry-After"] = "60"
        return response

    # -- inputs ---------------------------------------------------------------------------------

    @staticmethod
    def ip(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def token(
        self, request: Request, purpose: str, *, max_age: int = links.TOKEN_MAX_AGE, form: Form | None = None
    ) -> dict[str, str | int]:
        """The payload of the link's `t` (query, or form field); raises InvalidToken."""
        raw = request.query_params.get("t") or (forms.first(form, "t") if form else "")
        if not raw or len(raw) > MAX_TOKEN:
            raise links.InvalidToken("this link is not valid")
        return links.read_token(self.key, purpose, raw, max_age=max_age, clock=self.clock)

    async def form(self, request: Request, *, any_type: bool = False) -> Form:
        """The posted form, refusing bodies over forms.MAX_BODY without reading them all
        (forms.FormRefused, answered by `refused`).  With `any_type` a body that is not a urlencoded
        form counts as no fields (RFC 8058 one-click unsubscribes may come as multipart/form-data)."""
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > forms.MAX_BODY:
            raise forms.too_large()
        body = b""
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > forms.MAX_BODY:
                    raise forms.too_large()
        except ClientDisconnect as e:
            raise forms.FormRefused(400, "The form did not arrive whole. Nothing was changed.") from e
        content_type = request.headers.get("content-type")
        if any_type and not forms.is_form(content_type):
            return {}
        return forms.parse_form(body, content_type)

    async def upload(self, request: Request) -> Form:
        """A posted multipart form with one file, at most forms.MAX_UPLOAD bytes (a 413 beyond,
        without reading it all), parsed by Starlette (python-multipart) from the bounded body; the
        file goes to `request.state.upload` as (file name, bytes)."""
        limit = forms.MAX_UPLOAD + forms.MAX_BODY
        declared = request.headers.get("content-length", "")
        too_large = forms.FormRefused(
            413, f"The file is larger than {forms.MAX_UPLOAD // (1024 * 1024)} MB. Nothing was changed."
        )
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
        except ClientDisconnect as e:
            raise forms.FormRefused(400, "The form did not arrive whole. Nothing was changed.") from e
        request.state.upload = None
        if not (request.headers.get("content-type") or "").lower().startswith("multipart/form-data"):
            return forms.parse_form(bytes(body), request.headers.get("content-type"))
        data = bytes(body)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": data, "more_body": False}

        try:
            parsed = await Request(request.scope, receive).form(max_files=1, max_fields=forms.MAX_FIELDS)
        except Exception as e:  # python-multipart's MultiPartException, or Starlette's 400 for it
            raise forms.FormRefused(400, "The form could not be read. Nothing was changed.") from e
        form: Form = {}
        for key, value in parsed.multi_items():
            if isinstance(value, str):
                form.setdefault(key, []).append(forms.cleaned(value))
            elif key == "library" and value.filename:
                name = forms.cleaned(value.filename.replace("\\", "/").rsplit("/", 1)[-1], 100) or "library"
                request.state.upload = (name, await value.read())
        await parsed.close()
        if request.state.upload and len(request.state.upload[1]) > forms.MAX_UPLOAD:
            raise too_large
        return form

    def csrf_valid(self, request: Request, form: Form) -> bool:
        return csrf_ok(self.key, request.cookies.get(CSRF_COOKIE), forms.first(form, CSRF_FIELD), self.clock)

    def subscriber_from(self, payload: dict[str, str | int]) -> Subscriber | None:
        email = payload.get("e")
        return self.store.subscriber(email=email) if isinstance(email, str) else None

    # -- sign-up --------------------------------------------------------------------------------

    def _subscribe_page(
        self, request: Request, *, values: dict[str, Any], errors: dict[str, str], status: int = 200
    ) -> HTMLResponse:
        query = forms.cleaned(request.query_params.get("q", ""), 200)
        found = self.store.search_papers(query) if query.strip() else []
        return self.page(
            request,
            "subscribe",
            status=status,
            title="Subscribe",
            values=values,
            errors=errors,
            query=query,
            found=found,
            offered_categories=self.offered_categories(),
            chosen_categories=values.get("categories") or [],
        )

    def offered_categories(self) -> list[str]:
        """The categories a reader may choose: the configured sources' and readers' (each once)."""
        return list(
            dict.fromkeys(
                [c for src in self.settings.sources for c in src.categories]
                + [c for sub in self.settings.subscribers for c in sub.categories]
            )
        )

    def subscribe_form(self, request: Request, form: Form | None) -> Response:
        if not self.settings.web.allow_signups:
            return self.message(
                request, "Sign-ups are closed", "This digest does not take new readers here.", status=404
            )
        if request.query_params.get("q") and not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        return self._subscribe_page(request, values={}, errors={})

    def subscribe(self, request: Request, form: Form | None) -> Response:
        if not self.settings.web.allow_signups:
            return self.message(
                request, "Sign-ups are closed", "This digest does not take new readers here.", status=404
            )
        form = form or {}
        if not self.csrf_valid(request, form):
            return self.message(
                request, "Please try again", "The form had expired. Reload the page and send it again.", status=403
            )
        if not self.subscribe_limiter.hit(self.ip(request)):
            return self.too_many(request)
        checked = forms.check_subscribe(
            form, smtputf8=self.settings.smtp.smtputf8, categories=self.offered_categories()
        )
        library: list[dict[str, Any]] = []
        upload = getattr(request.state, "upload", None)
        if upload:
            try:
                library.append(library_payload(parse_library(upload[1], upload[0])))
            except DataError as e:
                checked.errors["library"] = f"{e}. Choose a BibTeX, RIS or CSL-JSON export and send the form again."
        values: dict[str, Any] = forms.shown(
            form, ("email", "name", "timezone", "send_at", "frequency", "weekly_day", "keywords", "liked")
        )
        values["categories"] = form.get("categories", [])
        if checked.errors:
            return self._subscribe_page(request, values=values, errors=checked.errors, status=400)
        ids, problem = self._liked_ids(checked.liked)
        if problem:
            return self._subscribe_page(request, values=values, errors={"liked": problem}, status=400)
        email = checked.values["email"]
        if not self.subscribe_limiter.hit("email:" + email):
            return self.too_many(request)
        fields = {k: v for k, v in checked.values.items() if k != "email"}
        nonce = links.nonce()
        row = self.store.request_subscription(email, fields, ids, self.now(), nonce=nonce, library=library)
        if row.active:
            msg = mail.notice(
                self.settings,
                email=email,
                name=row.name,
                subject="You already get the paper digest",
                template="confirm",
                when=self.now(),
                link="",
                manage=links.manage_url(self.settings, self.key, email, clock=self.clock),
            )
        else:
            msg = mail.notice(
                self.settings,
                email=email,
                name=fields.get("name", ""),
                subject="Confirm your paper digest",
                template="confirm",
                when=self.now(),
                manage="",
                link=links.confirm_url(self.settings, self.key, email, nonce=nonce, clock=self.clock),
            )
        try:
            mail.send(self.settings, msg)
        except PermanentDeliveryError as e:  # the mail server refuses this address: retrying will not help
            log.warning("the mail server refused a confirmation email: %s", e)
            return self._subscribe_page(
                request,
                values=values,
                status=400,
                errors={"email": "our mail server cannot deliver to this address; please check it or use another one"},
            )
        except DeliveryError as e:
            log.warning("could not send a confirmation email: %s", e)
            return self.message(
                request, "We could not send the email", "Please try again in a few minutes.", status=503
            )
        shelf = "".join(
            f" The {len(lib['records'])} papers of your library {lib['name']} become papers you liked when you confirm."
            for lib in library
        )
        return self.message(
            request,
            "Check your inbox",
            f"If {email} can receive our emails, a message is on its way with a link to confirm. "
            f"Nothing is sent to an address that has not confirmed.{shelf}",
        )

    def _liked_ids(self, entries: list[str]) -> tuple[list[str], str]:
        """The stored papers a sign-up's liked entries name, and what is wrong with them ("" when
        nothing).  An arXiv id or URL the store lacks is looked up at arXiv now (one id_list
        request for them all), so a researcher can start from any paper they know, and hears at
        once about an id that does not exist."""
        resolved = {entry: self.store.resolve_paper(entry) for entry in entries}
        unknown = {e: arxiv_id(e) for e, pid in resolved.items() if pid is None}
        wanted = [aid for aid in unknown.values() if aid]
        looked = lookup_arxiv(wanted, self.settings, self.store, self.now(), quick=True) if wanted else LookupReport()
        for entry, aid in unknown.items():
            pid = self.store.resolve_paper(entry) if aid else None
            if pid is not None:
                resolved[entry] = pid
            elif aid and (aid in looked.missing or aid in looked.known_missing):
                return [], f"arXiv has no paper {aid}; check the id"
            elif aid and aid in looked.failed:
                return (
                    [],
                    f"could not look up {aid} at arXiv just now; try again in a few minutes, or give the exact title",
                )
            elif aid and looked.off:
                return (
                    [],
                    f"{aid} is not among this digest's papers, and it looks up no arXiv ids; give the exact title",
                )
            else:
                return [], f"no paper found for {entry!r}; use an arXiv id, an arXiv URL or the exact title"
        return [pid for pid in resolved.values() if pid], ""

    def confirm(self, request: Request, form: Form | None) -> Response:
        if not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        try:
            payload = self.token(request, links.CONFIRM, max_age=links.CONFIRM_MAX_AGE, form=form)
        except links.InvalidToken as e:
            return self.bad_link(request, str(e).capitalize() + ".")
        email, nonce = payload.get("e"), payload.get("n")
        if not isinstance(email, str) or not isinstance(nonce, str):
            return self.bad_link(request)
        if form is None:
            return self.page(
                request,
                "action",
                title="Confirm your subscription",
                text=f"Start sending the daily paper digest to {email}?",
                action=str(request.url.path) + "?" + str(request.url.query),
                button="Confirm my subscription",
            )
        if not self.csrf_valid(request, form):
            return self.message(
                request, "Please try again", "The form had expired. Open the link from the email again.", status=403
            )
        if not self.store.use_token(nonce, links.CONFIRM, self.now()):
            return self.message(request, "Already confirmed", "This link has been used already; nothing changed.")
        library = self.store.pending_library(nonce)
        row = self.store.confirm_subscription(email, self.now(), nonce=nonce)
        if row is None:
            return self.bad_link(request)
        shelf = ""
        if row.origin == "web":
            for payload in library:
                result = library_from_payload(payload)
                line = import_library(self.store, row.id, result, self.now(), origin=f"import:{result.name}")
                shelf += f" Your library {result.name}: {line}."
        return self.message(
            request,
            "You are subscribed",
            f"Your digests come at {describe(row)}.{shelf}",
            manage=links.manage_url(self.settings, self.key, email, clock=self.clock),
        )

    # -- links in the digest --------------------------------------------------------------------

    def _sub_and_paper(self, payload: dict[str, str | int]) -> tuple[Subscriber, Any] | None:
        sid, pid = payload.get("s"), payload.get("p")
        if not isinstance(sid, int) or not isinstance(pid, str):
            return None
        sub = self.store.subscriber(id=sid)
        papers = self.store.papers([pid])
        if sub is None or not papers:
            return None
        return sub, papers[0]

    def feedback(self, request: Request, form: Form | None) -> Response:
        """ "More / fewer like this": the link (GET) asks, the button (POST) records.  Mail security
        scanners open every link of an incoming message; a GET that recorded would like and then
        dislike every paper of the digest, and use up the reader's own single-use links."""
        if not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        try:
            payload = self.token(request, links.FEEDBACK, form=form)
        except links.InvalidToken as e:
            return self.bad_link(request, str(e).capitalize() + ".")
        found = self._sub_and_paper(payload)
        kind, nonce = payload.get("k"), payload.get("n")
        if found is None or kind not in (Kind.LIKE, Kind.DISLIKE) or not isinstance(nonce, str):
            return self.bad_link(request)
        sub, paper = found
        more = kind == Kind.LIKE
        if form is None:
            return self.page(
                request,
                "action",
                title="More like this" if more else "Fewer like this",
                text=f"Show {'more' if more else 'fewer'} papers like “{paper.title}” in your digests?",
                action=str(request.url.path) + "?" + str(request.url.query),
                button="Yes, more like this" if more else "Yes, fewer like this",
            )
        if not self.csrf_valid(request, form):
            return self.message(
                request, "Please try again", "The form had expired. Open the link from the email again.", status=403
            )
        manage = links.manage_url(self.settings, self.key, sub.email, clock=self.clock)
        if not self.store.use_token(nonce, links.FEEDBACK, self.now()):
            return self.message(
                request, "Already noted", "You used this link before; your digest already knows.", manage=manage
            )
        self.store.set_feedback(sub.id, paper.id, str(kind), self.now(), origin="web")
        return self.message(
            request,
            "Thanks, noted",
            f"You will see {'more' if more else 'fewer'} papers like “{paper.title}” from your next digest on.",
            manage=manage,
        )

    def click(self, request: Request, form: Form | None) -> Response:
        if not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        try:
            payload = self.token(request, links.CLICK)
        except links.InvalidToken as e:
            return self.bad_link(request, str(e).capitalize() + ".")
        found = self._sub_and_paper(payload)
        if found is None:
            return self.bad_link(request)
        sub, paper = found
        self.store.add_interactions(sub.id, [paper.id], Kind.CLICKED, self.now(), origin="web")
        # Only ever the stored paper's own address (http/https or its arXiv page), never one from the request.
        return RedirectResponse(paper_url(paper.id, paper.url, paper.title), status_code=303, headers=SECURITY_HEADERS)

    def unsubscribe(self, request: Request, form: Form | None) -> Response:
        """GET asks; POST unsubscribes, whatever its body (its route reads the form with `any_type`)."""
        if not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        try:
            payload = self.token(request, links.UNSUBSCRIBE, form=form)
        except links.InvalidToken as e:
            return self.bad_link(request, str(e).capitalize() + ".")
        email = payload.get("e")
        if not isinstance(email, str):
            return self.bad_link(request)
        if form is None:
            return self.page(
                request,
                "action",
                title="Unsubscribe",
                text=f"Stop sending the paper digest to {email}?",
                action=str(request.url.path) + "?" + str(request.url.query),
                button="Unsubscribe",
            )
        # RFC 8058 one-click: a mail client POSTs "List-Unsubscribe=One-Click" with no cookie; the signed URL is the proof.
        self.store.unsubscribe(email, self.now())
        return self.message(
            request,
            "You are unsubscribed",
            f"No more digests go to {email}. Changed your mind? Subscribe again any time.",
        )

    # -- preferences and the digest in the browser ---------------------------------------------

    def _preferences_page(
        self,
        request: Request,
        sub: Subscriber,
        *,
        errors: dict[str, str] | None = None,
        notice: str = "",
        status: int = 200,
        values: dict[str, Any] | None = None,
    ) -> HTMLResponse:
        t = request.query_params.get("t", "")
        current = {
            "timezone": sub.timezone,
            "send_at": sub.send_at,
            "max_papers": sub.max_papers,
            "frequency": sub.frequency,
            "weekly_day": sub.weekly_day,
            "keywords": ", ".join(sub.keywords),
            "exclude_keywords": ", ".join(sub.exclude_keywords),
            "categories": list(sub.categories),
            "delivery": sub.delivery,
            "topics": forms.topics_text(sub.topics or []),
            "authors": "\n".join(sub.authors or []),
        }
        return self.page(
            request,
            "preferences",
            status=status,
            title="Your preferences",
            sub=sub,
            t=t,
            values=values or current,
            errors=errors or {},
            notice=notice,
            editable=sub.origin == "web",
            offered_categories=self.offered_categories(),
            chosen_categories=(values or current).get("categories") or [],
            likes=self.store.liked_papers(sub.id, Kind.LIKE),
            dislikes=self.store.liked_papers(sub.id, Kind.DISLIKE),
            digest_url=links.manage_url(self.settings, self.key, sub.email, clock=self.clock, path="/digest"),
            unsubscribe_url=links.unsubscribe_url(self.settings, self.key, sub.email, clock=self.clock),
            feed_url=self.feed_url(sub),
        )

    def feed_url(self, sub: Subscriber) -> str:
        """The reader's feed link, or "" without a web front ([web] base_url): then there is no feed."""
        if not self.settings.web.base_url:
            return ""
        return links.feed_url(self.settings, self.key, sub.id, sub.feed_key, clock=self.clock)

    def _manage_reader(self, request: Request) -> Subscriber | Response:
        """The reader a manage link names, or the page that says why not (too many tries, a bad or
        expired link, a reader no longer known): the preamble of every page behind that link."""
        if not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        try:
            sub = self.subscriber_from(self.token(request, links.MANAGE))
        except links.InvalidToken as e:
            return self.bad_link(request, str(e).capitalize() + ".")
        return sub if sub is not None else self.bad_link(request)

    def _manage_post(self, request: Request, form: Form) -> Subscriber | Response:
        """`_manage_reader` for a form posted from behind the manage link: its CSRF token checked too."""
        sub = self._manage_reader(request)
        if isinstance(sub, Subscriber) and not self.csrf_valid(request, form):
            return self._form_expired(request)
        return sub

    def _form_expired(self, request: Request) -> Response:
        return self.message(
            request, "Please try again", "The form had expired. Reload the page and send it again.", status=403
        )

    def preferences(self, request: Request, form: Form | None) -> Response:
        sub = self._manage_reader(request)
        if not isinstance(sub, Subscriber):
            return sub
        if form is None:
            return self._preferences_page(request, sub)
        if not self.csrf_valid(request, form):
            return self._form_expired(request)
        if sub.origin != "web":
            return self._preferences_page(
                request,
                sub,
                status=409,
                errors={
                    "form": "Your settings come from the preferences file; ask whoever runs this digest to change them."
                },
            )
        checked = forms.check_preferences(form, categories=self.offered_categories())
        if checked.values.get("delivery", "email") != "email" and not self.settings.web.base_url:
            checked.errors["delivery"] = "this digest has no web front to serve a feed; choose email"
        if checked.errors:
            values: dict[str, Any] = forms.shown(
                form,
                (
                    "timezone",
                    "send_at",
                    "max_papers",
                    "frequency",
                    "weekly_day",
                    "keywords",
                    "exclude_keywords",
                    "delivery",
                    "topics",
                    "authors",
                ),
            )
            values["categories"] = form.get("categories", [])
            return self._preferences_page(request, sub, errors=checked.errors, values=values, status=400)
        try:
            sub = self.store.update_preferences(sub.id, checked.values)
        except DigestError as e:
            return self._preferences_page(request, sub, errors={"form": str(e)}, status=409)
        return self._preferences_page(request, sub, notice="Saved. Your next digest uses these settings.")

    def new_feed_link(self, request: Request, form: Form | None) -> Response:
        """A new feed key for the reader (from the web or the file alike): the feed links made
        before, in earlier emails or feed readers, stop working (404) at once."""
        form = form or {}
        sub = self._manage_post(request, form)
        if not isinstance(sub, Subscriber):
            return sub
        sub = self.store.new_feed_key(sub.id, links.new_feed_key())
        return self._preferences_page(
            request, sub, notice="Your feed has a new link, below; the old one no longer works."
        )

    def _no_feed(self, request: Request) -> Response:
        return self.message(
            request, "Page not found", "This feed link does not work (a newer one may have replaced it).", status=404
        )

    def feed(self, request: Request, form: Form | None) -> Response:
        """The reader's Atom feed.  A poll whose ETag or date still holds gets 304 after one query
        (`Store.feed_head`); a link that is forged, altered or revoked (an older feed key), or any
        link without a web front, 404; a reader who unsubscribed, 410: no data in either."""
        if not self.link_limiter.hit(self.ip(request)):
            return self.too_many(request)
        if not self.settings.web.base_url:
            return self._no_feed(request)
        try:
            payload = self.token(request, links.FEED, max_age=links.FEED_MAX_AGE)
        except links.InvalidToken:
            return self._no_feed(request)
        sid, key = payload.get("s"), payload.get("k")
        if not isinstance(sid, int) or not isinstance(key, str):
            return self._no_feed(request)
        head = self.store.feed_head(sid)
        if head is None or not hmac.compare_digest(head.feed_key.encode(), key.encode()):
            return self._no_feed(request)
        if not head.active:
            return self.message(request, "This feed has ended", "Its reader unsubscribed.", status=410)
        current = atom.validator(sid, head)
        headers = FEED_HEADERS | current.headers()
        if atom.not_modified(current, request.headers.get("if-none-match"), request.headers.get("if-modified-since")):
            return Response(status_code=304, headers=headers)
        sub = self.store.subscriber(id=sid)
        if sub is None:
            return self._no_feed(request)
        start = atom.window_start(head)
        rows = self.store.feed_rows(sid, start) if start is not None else []
        papers = {p.id: p for p in self.store.papers(list(dict.fromkeys(pid for r in rows for pid in r.papers)))}
        self_url = f"{self.settings.web.base_url}/feed?t={request.query_params.get('t', '')}"
        body = atom.build_feed(self.settings, self.env, sub, head, rows, papers, self_url=self_url)
        return Response(body, media_type=atom.MEDIA_TYPE, headers=headers)

    def import_library(self, request: Request, form: Form | None) -> Response:
        """A library file (BibTeX, RIS, CSL-JSON) posted from the preferences page becomes the
        reader's likes (replacing an earlier upload of the same file name); a bad file says why."""
        form = form or {}
        sub = self._manage_post(request, form)
        if not isinstance(sub, Subscriber):
            return sub
        upload = getattr(request.state, "upload", None)
        if not upload:
            return self._preferences_page(request, sub, status=400, errors={"library": "Choose a library file first."})
        name, data = upload
        try:
            result = parse_library(data, name)
        except DataError as e:
            return self._preferences_page(request, sub, status=400, errors={"library": f"{e} Nothing was changed."})
        line = import_library(self.store, sub.id, result, self.now(), origin=f"import:{name}")
        return self._preferences_page(request, sub, notice=f"Imported your library {name}: {line}")

    def remove_like(self, request: Request, form: Form | None) -> Response:
        form = form or {}
        sub = self._manage_post(request, form)
        if not isinstance(sub, Subscriber):
            return sub
        kind, paper = forms.first(form, "kind"), forms.first(form, "paper")
        if not paper or len(paper) > 200 or not forms.usable(paper):
            return self._preferences_page(
                request, sub, status=400, errors={"form": "That is not one of your papers; nothing was removed."}
            )
        removed = self.store.remove_interaction(
            sub.id, paper, kind if kind == Kind.DISLIKE else Kind.LIKE, origin="web"
        )
        return self._preferences_page(request, sub, notice="Removed." if removed else "Nothing to remove.")

    def digest(self, request: Request, form: Form | None) -> Response:
        sub = self._manage_reader(request)
        if not isinstance(sub, Subscriber):
            return sub
        now = self.now()
        row = self.store.latest_delivery(sub.id, local_date(now, sub.timezone))
        if row is None:
            return self.message(
                request,
                "No digest yet",
                f"Your first digest comes at {describe(sub)}.",
                manage=links.manage_url(self.settings, self.key, sub.email, clock=self.clock),
            )
        trending = [(str(t[0]), int(t[1])) for t in row.trending or [] if len(t) == 2]
        by_id = {p.id: p for p in self.store.papers(list(dict.fromkeys([*row.papers, *(pid for pid, _ in trending)])))}
        picks = picks_from_row(row, by_id)
        trend = [(by_id[pid], count) for pid, count in trending if pid in by_id]
        new_count = len(self.store.recent_paper_ids(now - timedelta(days=self.settings.ranking.window_days)))
        try:
            _, _, html, _ = compose(
                self.settings,
                self.key,
                sub,
                row.digest_date,
                picks,
                trend,
                max(new_count, len(picks)),
                now,
                notes=row.notes or [],
            )
        except DigestError as e:  # e.g. RenderError: text no renderer takes; the daily job has the same trouble
            log.warning("the digest page of subscriber %s cannot be shown: %s", sub.id, e)
            return self.message(
                request,
                "This digest cannot be shown",
                "Something in this digest could not be put on a page. Your settings and likes are "
                "unchanged; tomorrow's digest will show here as usual.",
                manage=links.manage_url(self.settings, self.key, sub.email, clock=self.clock),
            )
        return HTMLResponse(html, headers=SECURITY_HEADERS)


def create_app(settings: Settings, *, store: Store | None = None, clock: links.Clock = time.time) -> Starlette:
    """The web front over `store` (default: the configured database), with `clock` for tokens and limits."""
    own_store = store is None
    front = _Front(settings, store or Store(settings.database_url), clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS  # this server's event loop only
        yield
        if own_store:
            front.store.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        titles = {404: "Page not found", 405: "Not allowed", 413: "Too large"}
        return await run_in_threadpool(
            front.message, request, titles.get(status, "Something went wrong"), "Nothing was changed.", status=status
        )

    async def refused(request: Request, exc: Exception) -> Response:
        """A post that is not one of our forms (forms.FormRefused): 413, 415 or 400, with why."""
        status = getattr(exc, "status", 400)
        titles = {413: "Too large", 415: "Not one of our forms"}
        return await run_in_threadpool(
            front.message, request, titles.get(status, "Something is wrong with the form"), str(exc), status=status
        )

    async def database_down(request: Request, exc: Exception) -> Response:
        """The database failed (full, read-only, deleted, its server gone): one log line, and a 503
        that says nothing was changed, not a 500 with a traceback per request."""
        log.error("%s", exc)
        response = await run_in_threadpool(
            front.message,
            request,
            "Temporarily unavailable",
            "The digest cannot reach its database just now. Nothing was changed; please try again later.",
            status=503,
        )
        response.headers["Retry-After"] = "300"
        return response

    async def unexpected(request: Request, exc: Exception) -> Response:
        """The last resort for a bug: a plain page (no template, which may be what failed); the
        server logs the traceback, since Starlette raises the exception on after answering."""
        return HTMLResponse(UNEXPECTED, status_code=500, headers=SECURITY_HEADERS)

    route = front.route  # every handler in the thread pool, its form read first on the loop
    routes = [
        Route("/", route(front.subscribe_form), methods=["GET"]),
        Route("/subscribe", route(front.subscribe_form), methods=["GET"]),
        Route("/subscribe", route(front.subscribe, upload=True), methods=["POST"]),
        Route("/confirm", route(front.confirm), methods=["GET", "POST"]),
        Route("/feedback", route(front.feedback), methods=["GET", "POST"]),
        Route("/click", route(front.click), methods=["GET"]),
        Route("/unsubscribe", route(front.unsubscribe, any_type=True), methods=["GET", "POST"]),
        Route("/preferences", route(front.preferences), methods=["GET", "POST"]),
        Route("/preferences/likes", route(front.remove_like), methods=["POST"]),
        Route("/preferences/library", route(front.import_library, upload=True), methods=["POST"]),
        Route("/digest", route(front.digest), methods=["GET"]),
        Route("/feed", route(front.feed), methods=["GET"]),
        Route("/preferences/feed", route(front.new_feed_link), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            forms.FormRefused: refused,
            StoreError: database_down,
            Exception: unexpected,
        },
    )
    app.state.front = front
    return app
