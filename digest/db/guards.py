"""The web front's guards kept in the database: rate-limit hits and used single-use link nonces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    delete,
    func,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from digest.db.base import StoreBase
from digest.db.tables import RATE_HIT_KEEP, RateHit, UsedToken, _utc


class Guards(StoreBase):
    """Rate-limit hits and used link nonces."""

    def rate_hit(self, key: str, limit: int, window: float, now: float) -> bool:
        """Count one hit for `key`; False (and not counted) when `key` already had `limit` hits in the
        last `window` seconds.  Kept in the database, so all web processes share one count."""
        if window > RATE_HIT_KEEP:
            raise ValueError(f"rate-limit windows are at most {RATE_HIT_KEEP:g} s")
        key = key[:200]
        with self.session() as s:
            recent = s.exec(
                select(func.count()).select_from(RateHit).where(col(RateHit.key) == key, col(RateHit.at) > now - window)
            ).one()
            if recent >= limit:
                return False
            s.add(RateHit(key=key, at=now))
            self._rate_hits += 1
            if self._rate_hits % 500 == 1:  # now and then, forget old hits
                s.exec(delete(RateHit).where(col(RateHit.at) <= now - RATE_HIT_KEEP))
            s.commit()
        return True

    def use_token(self, jti: str, purpose: str, now: datetime) -> bool:
        """Record a single-use token's nonce; False if it was used before (a replay)."""
        with self.session() as s:
            if s.get(UsedToken, jti) is not None:
                return False
            s.add(UsedToken(jti=jti, purpose=purpose, at=_utc(now)))
            try:
                s.commit()
            except IntegrityError:  # the same link clicked twice at once
                return False
        return True
