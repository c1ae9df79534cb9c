"""The store: the only package that talks to the database (SQLModel over SQLite or PostgreSQL).

Tables (`tables`): papers, subscribers, interactions (like, dislike, sent, clicked), deliveries (one
row per subscriber and local digest date, written before sending so nothing is lost or sent
twice), leases and source checkpoints, plus the web front's used single-use link nonces, rate-limit
hits, opt-outs and sign-ups waiting for confirmation.  One `Store` joins the parts: `papers`,
`readers`, `queue` (the delivery state machine), `leases`, `guards`, over `base` (the engine and
its guard) and `engine` (opening a database by URL).  Times go in and come out as aware UTC
datetimes.
"""

from digest.db.engine import MARKER_SUFFIX, database_trouble, discard_database
from digest.db.leases import RUN_LEASE, RunLease, lease_owner, owner_is_dead
from digest.db.store import Store
from digest.db.tables import (
    DELIVERED,
    WAITING,
    Delivery,
    DeliveryStatus,
    Interaction,
    Kind,
    Lease,
    LikeRow,
    OptOut,
    Paper,
    PaperLookup,
    PendingSignup,
    RateHit,
    SourceState,
    Subscriber,
    UpsertCounts,
    UsedToken,
    aware,
)

__all__ = [
    "DELIVERED",
    "MARKER_SUFFIX",
    "RUN_LEASE",
    "WAITING",
    "Delivery",
    "DeliveryStatus",
    "Interaction",
    "Kind",
    "Lease",
    "LikeRow",
    "OptOut",
    "Paper",
    "PaperLookup",
    "PendingSignup",
    "RateHit",
    "RunLease",
    "SourceState",
    "Store",
    "Subscriber",
    "UpsertCounts",
    "UsedToken",
    "aware",
    "database_trouble",
    "discard_database",
    "lease_owner",
    "owner_is_dead",
]
