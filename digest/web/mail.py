"""The web front's own emails (confirm a sign-up; "you are already subscribed"), sent through delivery.

Rendered from `templates/email/confirm.*`; handed to the configured transport (SMTP or the outbox),
the same one the daily digest uses.  The outbox files them under `outbox/undated/`.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from digest.deliver import make_transport, parse_sender, recipient
from digest.render import environment
from digest.settings import Settings


def notice(
    settings: Settings, *, email: str, name: str, subject: str, template: str, when: datetime, **context: str
) -> EmailMessage:
    """A short multipart notice to one address from `templates/email/{template}.txt|.html`."""
    env = environment()
    sender = parse_sender(settings.smtp.sender)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient(name, email)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
    msg["Auto-Submitted"] = "auto-generated"
    values = {"email": email, "name": name, **context}
    msg.set_content(env.get_template(f"email/{template}.txt").render(**values), subtype="plain", charset="utf-8")
    msg.add_alternative(env.get_template(f"email/{template}.html").render(**values), subtype="html", charset="utf-8")
    return msg


def send(settings: Settings, msg: EmailMessage) -> None:
    """Deliver one message now (raises DeliveryError subclasses like the digest's delivery)."""
    transport = make_transport(settings)
    try:
        transport.send(msg)
    finally:
        transport.close()
