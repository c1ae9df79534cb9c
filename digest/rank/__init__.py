"""Rankers: every one keeps the contract in `base` (fit on TrainData, score users x candidates).

`make_ranker(name)` builds one by name, for the daily digest and for `digest eval`.
"""

from __future__ import annotations

from typing import Any

from digest.errors import ConfigError
from digest.rank.base import Corpus, IdMap, Ranker, TrainData, top_k
from digest.rank.collaborative import CollaborativeRanker
from digest.rank.content import ContentRanker
from digest.rank.hybrid import HybridRanker
from digest.rank.interests import InterestRanker
from digest.rank.popularity import PopularityRanker
from digest.rank.randomized import RandomRanker
from digest.rank.svm import SVMRanker
from digest.rank.trending import TrendingRanker

RANKERS: dict[str, type[Ranker]] = {
    "content": ContentRanker,
    "popularity": PopularityRanker,
    "random": RandomRanker,
    "svm": SVMRanker,
    "collaborative": CollaborativeRanker,
    "hybrid": HybridRanker,
    "trending": TrendingRanker,
    "interests": InterestRanker,  # `digest eval` only: per-interest rankings of the base ranker, merged
}


def make_ranker(name: str, **options: Any) -> Ranker:
    """A fresh ranker by name; unknown names raise ConfigError listing the known ones."""
    try:
        cls = RANKERS[name]
    except KeyError as e:
        raise ConfigError(
            f"unknown ranker {name!r}; choose one of {', '.join(sorted(RANKERS))}", field="ranking.ranker"
        ) from e
    return cls(**options)


__all__ = ["RANKERS", "Corpus", "IdMap", "Ranker", "TrainData", "make_ranker", "top_k"]
