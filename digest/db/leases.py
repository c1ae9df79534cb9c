"""Named leases in the database: one daily run at a time, across processes and hosts."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import (
    delete,
    insert,
    or_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from digest.db.base import StoreBase
from digest.db.tables import Lease, _utc
from digest.due import Clock, wall_clock
from digest.errors import LeaseBusy, StoreError

log = logging.getLogger("digest.schedule")


class Leases(StoreBase):
    """Named leases with an expiry."""

    def acquire_lease(self, name: str, owner: str, *, now: datetime, ttl: float) -> bool:
        """Take (or extend) the lease `name` for `owner` until now + ttl; False if someone else holds it."""
        stamp = _utc(now)
        expires = stamp + timedelta(seconds=ttl)
        with self._begin() as conn:
            taken = conn.execute(
                update(Lease)
                .where(col(Lease.name) == name, or_(col(Lease.expires) <= stamp, col(Lease.owner) == owner))
                .values(owner=owner, acquired=stamp, expires=expires)
            ).rowcount
        if taken:
            return True
        try:
            with self._begin() as conn:
                conn.execute(insert(Lease).values(name=name, owner=owner, acquired=stamp, expires=expires))
        except IntegrityError:  # the row exists and is held by someone else
            return False
        return True

    def renew_lease(self, name: str, owner: str, *, now: datetime, ttl: float) -> bool:
        """Push the expiry of a lease we hold; False if it is no longer ours (it lapsed and was taken)."""
        with self._begin() as conn:
            return bool(
                conn.execute(
                    update(Lease)
                    .where(col(Lease.name) == name, col(Lease.owner) == owner)
                    .values(expires=_utc(now) + timedelta(seconds=ttl))
                ).rowcount
            )

    def take_over_lease(self, name: str, owner: str, *, previous: str, now: datetime, ttl: float) -> bool:
        """Take a lease from `previous` (known to be dead) before it expires; False if it changed hands."""
        stamp = _utc(now)
        with self._begin() as conn:
            return bool(
                conn.execute(
                    update(Lease)
                    .where(col(Lease.name) == name, col(Lease.owner) == previous)
                    .values(owner=owner, acquired=stamp, expires=stamp + timedelta(seconds=ttl))
                ).rowcount
            )

    def release_lease(self, name: str, owner: str) -> None:
        """Give a lease back (only if we still hold it)."""
        with self._begin() as conn:
            conn.execute(delete(Lease).where(col(Lease.name) == name, col(Lease.owner) == owner))

    def lease(self, name: str) -> Lease | None:
        """Who holds the lease `name` and until when (an expired row included)."""
        with self.session() as s:
            return s.get(Lease, name)


RUN_LEASE = "daily-run"


def lease_owner() -> str:
    """host:pid:random, so a lease left by a dead process on this host can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """Is `owner` a process on this host that no longer exists?"""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunLease:
    """The daily-run lease: taken on enter (waiting up to `wait` seconds), renewed every ttl/3 by
    a background thread, released on exit.  `lost` is set if a renewal finds it taken over (this
    process stalled past the expiry), and the run then stops sending."""

    def __init__(
        self,
        store: Leases,
        *,
        ttl: float,
        wait: float = 0.0,
        name: str = RUN_LEASE,
        owner: str | None = None,
        clock: Clock = wall_clock,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.ttl, self.wait, self.name = store, ttl, wait, name
        self.owner = owner or lease_owner()
        self.clock, self.sleep = clock, sleep
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        deadline = time.monotonic() + self.wait
        while True:
            if self.store.acquire_lease(self.name, self.owner, now=self.clock(), ttl=self.ttl):
                return True
            holder = self.store.lease(self.name)
            if (
                holder is not None
                and owner_is_dead(holder.owner)
                and self.store.take_over_lease(
                    self.name, self.owner, previous=holder.owner, now=self.clock(), ttl=self.ttl
                )
            ):
                log.warning("took over the run lease from %s (process gone)", holder.owner)
                return True
            if time.monotonic() >= deadline:
                return False
            self.sleep(min(1.0, max(0.05, self.ttl / 20)))

    def holder(self) -> str:
        row = self.store.lease(self.name)
        return f"{row.owner} until {row.expires:%Y-%m-%d %H:%M:%S} UTC" if row else "nobody"

    def start(self) -> bool:
        """Take the lease and keep it renewed; False if another run holds it (after waiting)."""
        if not self.acquire():
            return False
        self._thread = threading.Thread(target=self._renew, name="digest-lease", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop renewing and give the lease back (if we hold it).  If the database failed, the lease
        is left to lapse (or to be taken over from this dead process): the run's own error is the
        one to see, not a second one from here."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            try:
                self.store.release_lease(self.name, self.owner)
            except StoreError as e:
                log.info("the run lease was not given back, it lapses by itself: %s", e)

    def __enter__(self) -> RunLease:
        if not self.start():
            raise LeaseBusy(f"another daily run is in progress ({self.holder()}); nothing done")
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.renew_lease(self.name, self.owner, now=self.clock(), ttl=self.ttl):
                    self.lost.set()
                    return
            except StoreError as e:  # the run itself meets the same failure and stops
                log.warning("could not renew the run lease: %s", e)
            except Exception:
                log.exception("could not renew the run lease")

    def __exit__(self, *exc: object) -> None:
        self.stop()
