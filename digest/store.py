"""Transitional: the store moved to `digest.db`; this name goes once nothing imports it."""

from digest.db import *  # noqa: F403
from digest.db import DeliveryStatus, Kind

LIKE, DISLIKE, SENT, CLICKED = Kind.LIKE, Kind.DISLIKE, Kind.SENT, Kind.CLICKED
PENDING, SENT_STATUS, FAILED, UNCONFIRMED = (
    DeliveryStatus.PENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.UNCONFIRMED,
)
