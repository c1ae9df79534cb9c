"""The digest's top is not ten near-copies of one topic: MMR in the daily ranking step."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from digest.db import Paper, Subscriber
from digest.pipeline import rank_subscribers
from digest.rank import Corpus, IdMap, TrainData, make_ranker

NOW = datetime(2026, 11, 23, tzinfo=UTC)

# A reader who likes graph neural networks and protein folding; the day brings eight near-copies
# of one graph paper and a few papers on the reader's other interest.
LIKED = [
    ("l1", "Graph neural networks for molecules", "message passing graph neural networks on molecular graphs"),
    ("l2", "Protein structure prediction with deep learning", "protein folding structure prediction from sequence"),
]
COPIES = [
    (
        f"g{i}",
        f"Message passing graph neural networks variant {i}",
        "message passing graph neural networks molecular graphs message passing graph neural networks",
    )
    for i in range(8)
]
PROTEIN = [
    ("p0", "Protein structure prediction from coevolution", "protein structure prediction contact maps coevolution"),
    ("p1", "Deep learning for protein folding kinetics", "protein folding kinetics deep learning simulations"),
    ("p2", "Sequence models predict protein stability", "protein sequence stability prediction mutations"),
    ("p3", "Learning protein structure from cryo-EM maps", "protein structure density maps deep learning"),
]
OTHER = [(f"o{i}", f"Unrelated topic {i}", f"stock markets weather football cooking {i}") for i in range(6)]


def _setup(ranker_name: str) -> tuple[TrainData, list[Paper], Subscriber]:
    records = LIKED + COPIES + PROTEIN + OTHER
    corpus = Corpus.from_records(records)
    data = TrainData.from_pairs(corpus, IdMap(["r@example.org"]), [("r@example.org", "l1"), ("r@example.org", "l2")])
    papers = [
        Paper(id=i, title=t, title_key=t.lower(), abstract=a, first_seen=NOW, last_changed=NOW) for i, t, a in records
    ]
    candidates = [p for p in papers if not p.id.startswith("l")]
    sub = Subscriber(id=1, email="r@example.org", max_papers=5, created=NOW)
    return data, candidates, sub


def _picks(ranker_name: str, diversity: float) -> list[str]:
    data, candidates, sub = _setup(ranker_name)
    ranker = make_ranker(ranker_name).fit(data)
    picks = rank_subscribers(ranker, data, [sub], candidates, {}, diversity=diversity)[1]
    return [p.paper.id for p in picks]


def test_without_diversity_the_top_is_near_copies() -> None:
    top = _picks("content", 1.0)
    assert all(pid.startswith("g") for pid in top), top


def test_mmr_brings_the_readers_other_interest_into_the_top() -> None:
    for name in ("content", "hybrid"):
        top = _picks(name, 0.5)
        assert len(top) == 5
        assert top[0].startswith("g"), (name, top)  # the best paper still leads
        copies = sum(pid.startswith("g") for pid in top)
        proteins = sum(pid.startswith("p") for pid in top)
        assert copies <= 3 and proteins >= 2, (name, top)
        assert not any(pid.startswith("o") for pid in top), (name, top)  # diversity never brings in junk
        assert len(set(top)) == len(top)


def test_diversity_keeps_order_when_items_are_unrelated() -> None:
    from digest.rank.diversity import mmr_order

    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert list(mmr_order(scores, np.eye(4, dtype=np.float32), 4, 0.5)) == [0, 1, 2, 3]
