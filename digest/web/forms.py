"""Form input for the web front: parsed with size limits, validated by the same schema as the file.

Sign-ups and preference edits go through `SubscriberSettings`, so the web accepts exactly what the
preferences file accepts (IANA time zone, "HH:MM", non-empty keywords), plus length limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from digest.settings import SubscriberSettings

MAX_BODY = 16 * 1024  # bytes in one form post
MAX_FIELD = 2000  # characters in one field
MAX_EMAIL = 254
MAX_NAME = 80
MAX_KEYWORD = 80
MAX_KEYWORDS = 20
MAX_LIKED = 20
MAX_LIKED_ENTRY = 300


class FormTooLarge(Exception):
    """The body is larger than MAX_BODY."""


def parse_form(body: bytes) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body as field -> values (bad bytes replaced, not fatal)."""
    if len(body) > MAX_BODY:
        raise FormTooLarge()
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=200)


def first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


def split_list(text: str) -> list[str]:
    """Keywords typed as "a, b" or one per line."""
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


@dataclass
class Checked:
    """Validated values (model fields for the store) and per-field error messages for the page."""

    values: dict[str, Any] = field(default_factory=dict)
    liked: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _too_long(checked: Checked, form: dict[str, list[str]]) -> None:
    for name, values in form.items():
        if any(len(v) > MAX_FIELD for v in values):
            checked.errors[name] = f"at most {MAX_FIELD} characters"


def _validate(checked: Checked, raw: dict[str, Any]) -> None:
    try:
        sub = SubscriberSettings.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            name = str(err["loc"][0]) if err["loc"] else "form"
            checked.errors.setdefault(name, err["msg"].removeprefix("Value error, "))
        return
    checked.values = {
        "timezone": sub.timezone,
        "send_at": sub.send_at,
        "max_papers": sub.max_papers,
        "keywords": sub.keywords,
        "exclude_keywords": sub.exclude_keywords,
        "frequency": sub.frequency,
        "weekly_day": sub.weekly_day,
    }
    if "email" in raw:
        checked.values["email"] = sub.email
        checked.values["name"] = sub.name


def _keywords(checked: Checked, form: dict[str, list[str]], name: str) -> list[str]:
    words = split_list(first(form, name))
    if len(words) > MAX_KEYWORDS:
        checked.errors[name] = f"at most {MAX_KEYWORDS} keywords"
    elif any(len(w) > MAX_KEYWORD for w in words):
        checked.errors[name] = f"keywords are at most {MAX_KEYWORD} characters each"
    return words[:MAX_KEYWORDS]


def _how_often(form: dict[str, list[str]]) -> dict[str, str]:
    """frequency (daily, weekdays, weekly) and weekly_day, daily on Monday when left out."""
    return {"frequency": first(form, "frequency") or "daily", "weekly_day": first(form, "weekly_day") or "monday"}


def check_subscribe(form: dict[str, list[str]]) -> Checked:
    """A sign-up: email, name, time zone, send time, how often, keywords, liked papers (typed or ticked)."""
    checked = Checked()
    _too_long(checked, form)
    email, name = first(form, "email"), first(form, "name")
    if len(email) > MAX_EMAIL:
        checked.errors["email"] = "that address is too long"
    if len(name) > MAX_NAME:
        checked.errors["name"] = f"at most {MAX_NAME} characters"
    liked = [line.strip() for line in first(form, "liked").splitlines() if line.strip()]
    liked += [v.strip() for v in form.get("liked_id", []) if v.strip()]
    if len(liked) > MAX_LIKED or any(len(x) > MAX_LIKED_ENTRY for x in liked):
        checked.errors["liked"] = f"at most {MAX_LIKED} papers, one per line"
    checked.liked = list(dict.fromkeys(liked))[:MAX_LIKED]
    raw = {
        "email": email,
        "name": name,
        "timezone": first(form, "timezone") or "UTC",
        "send_at": first(form, "send_at") or "07:30",
        "keywords": _keywords(checked, form, "keywords"),
        **_how_often(form),
    }
    if not checked.errors:
        _validate(checked, raw)
    return checked


def check_preferences(form: dict[str, list[str]]) -> Checked:
    """A preferences edit: time zone, send time, how often, keywords, exclude keywords, max papers."""
    checked = Checked()
    _too_long(checked, form)
    max_papers = first(form, "max_papers") or "10"
    if not max_papers.isdigit() or not 1 <= int(max_papers) <= 50:
        checked.errors["max_papers"] = "a whole number from 1 to 50"
    raw = {
        "email": "x@example.org",  # the schema wants one; the address itself is not editable here
        "timezone": first(form, "timezone") or "UTC",
        "send_at": first(form, "send_at") or "07:30",
        "max_papers": int(max_papers) if max_papers.isdigit() else 10,
        "keywords": _keywords(checked, form, "keywords"),
        "exclude_keywords": _keywords(checked, form, "exclude_keywords"),
        **_how_often(form),
    }
    if not checked.errors:
        _validate(checked, raw)
        checked.values.pop("email", None)
        checked.values.pop("name", None)
    return checked
