"""The one send step: a claimed delivery row in, its outcome recorded (sent, retry later, failed).

`digest send` sends its rows through this in-process, and each `digest worker` through the same
function in another process, so both keep the same promises: the row is claimed before the message
leaves, only the message in flight can ever go twice, a timeout after DATA is "may have arrived"
(UNCONFIRMED, never resent in the same run), 4xx waits with a doubling backoff, 5xx fails that
address only.  A feed-only reader's row goes through the same step and ends IN_FEED, unmailed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from digest.compose import as_render_error
from digest.db import (
    Delivery,
    DeliveryStatus,
    Store,
    owner_is_dead,
)
from digest.deliver import (
    RetryPolicy,
    Sender,
    WireMessage,
)
from digest.errors import (
    AuthenticationError,
    DeliveryError,
    DigestError,
    PermanentDeliveryError,
    ServerUnavailable,
    StoreError,
    TransientDeliveryError,
    UnconfirmedDelivery,
)


def sender_name() -> str:
    """This process as a holder of delivery claims: host:pid, so a run on this host can tell it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def free_dead_claims(store: Store, now: datetime) -> int:
    """Give back the claims of senders on this host that died (killed mid-batch): their rows need not
    wait for the claim to lapse; only the message in flight can then go twice (same Message-ID).
    `now` is the wall clock, as for every claim."""
    return store.drop_claims_of([h for h in store.claim_holders(now) if owner_is_dead(h)])


@dataclass
class SendResult:
    """What became of one claimed delivery, as recorded: its status and why; `unreachable` says the
    rest of the run should wait (the server cannot be reached), `fatal` that nothing can go (login)."""

    status: DeliveryStatus
    detail: str = ""
    unreachable: str = ""
    fatal: str = ""


def send_claimed(
    store: Store,
    sender: Sender,
    row: Delivery,
    build: Callable[[], EmailMessage | WireMessage],
    now: datetime,
    *,
    worker: str,
    policy: RetryPolicy,
    email: str,
    mail: bool = True,
    sent_later: list[tuple[int, str]] | None = None,
) -> SendResult:
    """Build, send and record one claimed delivery: the one send step of the daily run and the workers.

    A message that cannot be built waits like a transient failure; a transient failure waits
    `policy`'s doubling time, or fails after its attempts; an unconfirmed send (no answer after
    DATA) is tried once more on a later run, never in this one; a 5xx fails this address.  Without
    `mail` (a feed-only reader, `settings.mails`) nothing is built or sent: the row ends IN_FEED,
    its papers recorded as sent, as a mailed one's are.
    """
    if not mail:
        store.record_outcome(row, DeliveryStatus.IN_FEED, now, worker=worker, attempted=False, sent_later=sent_later)
        return SendResult(DeliveryStatus.IN_FEED)
    try:
        sender.send(build())  # building may connect (does the server take 8bit?): its errors are the sender's
    except UnconfirmedDelivery as e:
        if row.status == DeliveryStatus.UNCONFIRMED:  # unconfirmed twice: a third copy is worse than none
            store.record_outcome(row, DeliveryStatus.FAILED, now, worker=worker, error=f"{e} (twice: not sent again)")
            return SendResult(DeliveryStatus.FAILED, f"{e}; unconfirmed twice, not sent again")
        retry_at = now + policy.retry_after
        store.record_outcome(
            row, DeliveryStatus.UNCONFIRMED, now, worker=worker, error=str(e), next_attempt_at=retry_at
        )
        return SendResult(DeliveryStatus.UNCONFIRMED, f"{e}; tried once more after {retry_at:%H:%M} UTC")
    except TransientDeliveryError as e:
        result = _failed_attempt(store, row, e, now, worker, policy)
        if isinstance(e, ServerUnavailable):
            result.unreachable = str(e)
        return result
    except PermanentDeliveryError as e:
        store.record_outcome(row, DeliveryStatus.FAILED, now, worker=worker, error=str(e))
        return SendResult(DeliveryStatus.FAILED, str(e))
    except AuthenticationError as e:
        store.record_outcome(row, DeliveryStatus.PENDING, now, worker=worker, error=str(e), attempted=False)
        return SendResult(DeliveryStatus.PENDING, str(e), fatal=str(e))
    except DeliveryError as e:  # a message that cannot be sent as built (e.g. a line break in a header)
        return _failed_attempt(store, row, e, now, worker, policy)
    except StoreError:
        raise
    except Exception as e:
        return _failed_attempt(store, row, as_render_error(e, email), now, worker, policy)
    store.record_outcome(row, DeliveryStatus.SENT, now, worker=worker, sent_later=sent_later)
    return SendResult(DeliveryStatus.SENT)


def _failed_attempt(
    store: Store, row: Delivery, error: DigestError, now: datetime, worker: str, policy: RetryPolicy
) -> SendResult:
    """A digest that did not go out this time: pending with a doubling wait, or failed after the
    policy's attempts."""
    attempts = row.attempts + 1
    give_up, retry_at = policy.after(attempts, now)
    status = DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING
    store.record_outcome(row, status, now, worker=worker, error=str(error), next_attempt_at=retry_at)
    if give_up:
        return SendResult(status, f"{error} (gave up after {attempts} attempts)")
    return SendResult(status, f"{error}; next try after {retry_at:%H:%M} UTC")
