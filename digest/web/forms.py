"""Form input for the web front: parsed with size limits, validated by the same schema as the file.

Sign-ups and preference edits go through `SubscriberSettings` (and `check_email`, `check_timezone`),
so the web accepts exactly what the preferences file accepts (IANA time zone, "HH:MM", non-empty
keywords), plus length limits.  A post we cannot read as one of our forms (too large, too many
fields, another content type) raises `FormRefused` with its status; anything wrong in a field we
read (control or invisible characters, bytes that were not UTF-8, too long, not a number, not in
the schema) is an error on that field, so every bad input gets a 4xx and a message, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from pydantic import ValidationError

from digest.settings import MAX_AUTHORS, MAX_TOPICS, SubscriberSettings, check_email

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY = 16 * 1024  # bytes in one form post
MAX_UPLOAD = 5 * 1024 * 1024  # bytes in one library file posted from the preferences page
MAX_FIELDS = 100  # fields in one form post (a sign-up with every search result ticked has about 30)
MAX_FIELD = 2000  # characters in one field
MAX_EMAIL = 254
MAX_NAME = 80
MAX_KEYWORD = 80
MAX_KEYWORDS = 20
MAX_LIKED = 20
MAX_LIKED_ENTRY = 300

# Characters nobody types into a form: controls (tab and line breaks aside), invisible and
# direction-changing marks, and U+FFFD, which stands for bytes that were not UTF-8.
_UNUSABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ufffd]")
_LINE_BREAK = re.compile(r"[\t\r\n]")
_SEND_AT = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")  # ASCII digits only (a str \d takes any script's)
_NUMBER = re.compile(r"[0-9]{1,3}")


class FormRefused(Exception):
    """A post that is not one of our forms: `status` 413 (too large, too many fields) or 415
    (another content type or charset); the message is a sentence for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def too_large() -> FormRefused:
    return FormRefused(413, f"The form is larger than {MAX_BODY // 1024} KB. Nothing was changed.")


def parse_form(body: bytes, content_type: str | None = None) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body as field -> values, or FormRefused.

    At most MAX_BODY bytes and MAX_FIELDS fields.  No content type counts as a form; bad percent
    escapes stay as typed; bytes that are not UTF-8 become U+FFFD, which the field checks refuse."""
    if not is_form(content_type):
        raise FormRefused(415, "This address takes only the forms on our pages (sent as UTF-8). Nothing was changed.")
    if len(body) > MAX_BODY:
        raise too_large()
    pieces = [piece for piece in body.split(b"&") if piece]
    if len(pieces) > MAX_FIELDS:
        raise FormRefused(413, f"The form has more than {MAX_FIELDS} fields. Nothing was changed.")
    form: dict[str, list[str]] = {}
    for piece in pieces:
        name, _, value = piece.partition(b"=")
        form.setdefault(_unquoted(name), []).append(_unquoted(value))
    return form


def is_form(content_type: str | None) -> bool:
    """Is this Content-Type (None: none sent) a urlencoded form in UTF-8 (or ASCII)?"""
    mime, _, params = (content_type or FORM_TYPE).partition(";")
    charset = re.search(r"charset\s*=\s*\"?([^\s\";]*)", params, re.IGNORECASE)
    return mime.strip().lower() == FORM_TYPE and (
        not charset or charset.group(1).lower() in ("utf-8", "utf8", "us-ascii")
    )


def _unquoted(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", errors="replace")


def first(form: dict[str, list[str]], name: str) -> str:
    """A field's first value, trimmed ("" when absent); a repeated field counts once."""
    values = form.get(name) or [""]
    return values[0].strip()


def cleaned(value: str, limit: int = MAX_FIELD) -> str:
    """`value` without the characters nobody types, trimmed, at most `limit` characters."""
    return _UNUSABLE.sub("", value).strip()[:limit]


def shown(form: dict[str, list[str]], names: tuple[str, ...]) -> dict[str, str]:
    """The fields as typed, for showing the form again (`cleaned`)."""
    return {name: cleaned(first(form, name)) for name in names}


def usable(value: str) -> bool:
    """Could a person have typed this into one line of our forms?"""
    return not (_UNUSABLE.search(value) or _LINE_BREAK.search(value))


def split_list(text: str) -> list[str]:
    """Keywords typed as "a, b" or one per line."""
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


@dataclass
class Checked:
    """Validated values (model fields for the store) and per-field error messages for the page."""

    values: dict[str, Any] = field(default_factory=dict)
    liked: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _checked_text(checked: Checked, name: str, value: str, *, limit: int = MAX_FIELD, lines: bool = False) -> str:
    """`value` if it fits in `limit` characters and has only characters a person types (line breaks
    only where `lines`); else an error on field `name` and ""."""
    if len(value) > limit:
        checked.errors.setdefault(name, f"at most {limit} characters")
    elif _UNUSABLE.search(value) or (not lines and _LINE_BREAK.search(value)):
        checked.errors.setdefault(
            name,
            "has control or invisible characters (or bytes that are not UTF-8)"
            if _UNUSABLE.search(value)
            else "must be a single line",
        )
    else:
        return value
    return ""


def _text(
    checked: Checked, form: dict[str, list[str]], name: str, *, limit: int = MAX_FIELD, lines: bool = False
) -> str:
    return _checked_text(checked, name, first(form, name), limit=limit, lines=lines)


def _validate(checked: Checked, raw: dict[str, Any]) -> None:
    try:
        sub = SubscriberSettings.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            name = str(err["loc"][0]) if err["loc"] else "form"
            checked.errors.setdefault(name, err["msg"].removeprefix("Value error, "))
        return
    checked.values = {
        "topics": [t.model_dump() for t in sub.topics],
        "authors": sub.authors,
        "timezone": sub.timezone,
        "send_at": sub.send_at,
        "max_papers": sub.max_papers,
        "keywords": sub.keywords,
        "exclude_keywords": sub.exclude_keywords,
        "categories": sub.categories,
        "frequency": sub.frequency,
        "weekly_day": sub.weekly_day,
    }
    if "delivery" in raw:
        checked.values["delivery"] = str(sub.delivery)
    if "email" in raw:
        checked.values["email"] = sub.email
        checked.values["name"] = sub.name


def _keywords(checked: Checked, form: dict[str, list[str]], name: str) -> list[str]:
    words = split_list(_text(checked, form, name, lines=True))
    if len(words) > MAX_KEYWORDS:
        checked.errors[name] = f"at most {MAX_KEYWORDS} keywords"
    elif any(len(w) > MAX_KEYWORD for w in words):
        checked.errors[name] = f"keywords are at most {MAX_KEYWORD} characters each"
    return words[:MAX_KEYWORDS]


def topics_text(topics: Sequence[dict[str, Any]]) -> str:
    """A reader's topics as the preferences page shows them: one a line, "name: keyword, keyword"."""
    return "\n".join(f"{t.get('name', '')}: {', '.join(t.get('keywords') or [])}" for t in topics)


def _topics(checked: Checked, form: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Topics typed one a line as "name: keyword, keyword" (liked papers come from the file only)."""
    out: list[dict[str, Any]] = []
    lines = [line.strip() for line in _text(checked, form, "topics", lines=True).splitlines() if line.strip()]
    if len(lines) > MAX_TOPICS:
        checked.errors["topics"] = f"at most {MAX_TOPICS} topics, one per line"
        return []
    for line in lines:
        name, colon, words = line.partition(":")
        keywords = split_list(words.replace(";", ","))
        if not colon or not name.strip() or not keywords:
            checked.errors["topics"] = f'write each topic as "name: keyword, keyword" (not {line[:60]!r})'
            return []
        if len(name.strip()) > MAX_KEYWORD or any(len(k) > MAX_KEYWORD for k in keywords):
            checked.errors["topics"] = f"topic names and keywords are at most {MAX_KEYWORD} characters each"
            return []
        out.append({"name": name.strip(), "keywords": keywords[:MAX_KEYWORDS]})
    return out


def _authors(checked: Checked, form: dict[str, list[str]]) -> list[str]:
    """Followed authors typed one a line (names or ORCID iDs)."""
    lines = [line.strip() for line in _text(checked, form, "authors", lines=True).splitlines() if line.strip()]
    if len(lines) > MAX_AUTHORS:
        checked.errors["authors"] = f"at most {MAX_AUTHORS} authors, one per line"
    elif any(len(a) > MAX_NAME for a in lines):
        checked.errors["authors"] = f"names are at most {MAX_NAME} characters each"
    return lines[:MAX_AUTHORS]


def _categories(checked: Checked, form: dict[str, list[str]], offered: Sequence[str]) -> list[str]:
    """The ticked categories, each one of `offered` (the configured sources' categories)."""
    ticked = list(dict.fromkeys(v.strip() for v in form.get("categories", []) if v.strip()))
    if any(c not in offered for c in ticked):
        checked.errors["categories"] = "choose from the categories listed"
        return []
    return ticked


def _when(checked: Checked, form: dict[str, list[str]]) -> dict[str, str]:
    """Time zone, send time ("HH:MM" in ASCII digits), frequency (daily, weekdays, weekly) and
    weekly_day, with the file's defaults for what is left out; the schema checks the rest."""
    send_at = _text(checked, form, "send_at") or "07:30"
    if "send_at" not in checked.errors and not _SEND_AT.fullmatch(send_at):
        checked.errors["send_at"] = 'not a time of day as "HH:MM" (24h), e.g. "07:30"'
    return {
        "timezone": _text(checked, form, "timezone", limit=MAX_FIELD) or "UTC",
        "send_at": send_at,
        "frequency": _text(checked, form, "frequency", limit=20) or "daily",
        "weekly_day": _text(checked, form, "weekly_day", limit=20) or "monday",
    }


NON_ASCII_ADDRESS = (
    "this digest's mail server cannot send to addresses with non-ASCII characters; please use another address"
)


def check_subscribe(form: dict[str, list[str]], *, smtputf8: bool, categories: Sequence[str] = ()) -> Checked:
    """A sign-up: email, name, time zone, send time, how often, keywords, liked papers (typed or ticked).

    A non-ASCII address only when the mail server takes SMTPUTF8 (`smtp.smtputf8`)."""
    checked = Checked()
    email = _text(checked, form, "email", limit=MAX_EMAIL)
    if "email" in checked.errors and checked.errors["email"].startswith("at most"):
        checked.errors["email"] = "that address is too long"
    if "email" not in checked.errors:
        try:
            email = check_email(email, utf8=smtputf8)
        except ValueError as e:
            checked.errors["email"] = NON_ASCII_ADDRESS if not (smtputf8 or email.isascii()) else str(e)
    name = _text(checked, form, "name", limit=MAX_NAME)
    typed = _text(checked, form, "liked", lines=True).splitlines()
    ticked = [_checked_text(checked, "liked", v.strip(), limit=MAX_LIKED_ENTRY) for v in form.get("liked_id", [])]
    liked = [x.strip() for x in [*typed, *ticked] if x.strip()]
    if len(liked) > MAX_LIKED or any(len(x) > MAX_LIKED_ENTRY for x in liked):
        checked.errors["liked"] = f"at most {MAX_LIKED} papers, one per line"
    checked.liked = list(dict.fromkeys(liked))[:MAX_LIKED]
    raw = {
        "email": email,
        "name": name,
        "keywords": _keywords(checked, form, "keywords"),
        "categories": _categories(checked, form, categories),
        **_when(checked, form),
    }
    if not checked.errors:
        _validate(checked, raw)
    return checked


def check_preferences(form: dict[str, list[str]], *, categories: Sequence[str] = ()) -> Checked:
    """A preferences edit: time zone, send time, how often, keywords, exclude keywords, categories
    (from `categories`, the configured ones), max papers, delivery (email, feed or both), topics
    (one a line, "name: keyword, keyword") and followed authors (one a line)."""
    checked = Checked()
    max_papers = first(form, "max_papers") or "10"
    if not _NUMBER.fullmatch(max_papers) or not 1 <= int(max_papers) <= 50:
        checked.errors["max_papers"] = "a whole number from 1 to 50"
    raw = {
        "email": "x@example.org",  # the schema wants one; the address itself is not editable here
        "max_papers": int(max_papers) if "max_papers" not in checked.errors else 10,
        "keywords": _keywords(checked, form, "keywords"),
        "exclude_keywords": _keywords(checked, form, "exclude_keywords"),
        "categories": _categories(checked, form, categories),
        "delivery": _text(checked, form, "delivery", limit=10) or "email",
        "topics": _topics(checked, form),
        "authors": _authors(checked, form),
        **_when(checked, form),
    }
    if not checked.errors:
        _validate(checked, raw)
        checked.values.pop("email", None)
        checked.values.pop("name", None)
    return checked
