"""The Store: one object per process over one database, made of the parts in this package."""

from __future__ import annotations

from digest.db.guards import Guards
from digest.db.leases import Leases
from digest.db.papers import Papers
from digest.db.queue import DeliveryQueue
from digest.db.readers import Readers


class Store(Papers, Readers, DeliveryQueue, Leases, Guards):
    """All reads and writes of digest's data; one per process, shared by the stages."""
