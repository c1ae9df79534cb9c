"""Hybrid ranker: text, collaborative signal carried to new papers through text, and the trend.

Six components, each standardised per user (z-score against the user's scores over a fixed sample
of the corpus, so a pair's score does not depend on the rest of the candidate block) and blended
with weights.  One module each, keeping the contract in `component` (fit, fold a day in, raw
scores, a reason):

- ``content`` (`content`): the TF-IDF profile against each paper (the `ContentRanker`);
  explained "close to <liked title>" / "matches keyword X";
- ``lsa`` (`lsa`): the same profile in a 200-dimension LSA space of the TF-IDF;
- ``cf`` (`cf`): `implicit` ALS factors, carried to papers nobody liked through a ridge map from
  their text and their nearest liked papers; explained "liked by readers with similar libraries";
- ``trend`` (`trend`): log(1 + likes + community counts); explained "trending: N upvotes";
- ``emb`` (`emb`): a sentence-embedding profile, when `embeddings` are given (the default install's);
- ``ridge`` (`ridge`): each reader's own linear scorer over the same vectors, learned by weighted
  least squares against every paper, when `embeddings` are given.

`blend` holds `HybridRanker`: the z-scoring and the weighted sum, the weights (`DEFAULT_WEIGHTS`,
`NO_CF_WEIGHTS`), the daily fold-in (`update`) and the explanations; `tuning` chooses the weights
inside `fit` on a validation split of the training likes (`tune="cold"` or `"warm"`).
"""

from __future__ import annotations

from digest.rank.hybrid.blend import COMPONENTS, DEFAULT_WEIGHTS, NO_CF_WEIGHTS, NO_CF_WEIGHTS_EMB, HybridRanker
from digest.rank.hybrid.component import NEIGHBOUR_POOL
from digest.rank.hybrid.emb import smooth_embeddings
from digest.rank.hybrid.tuning import GRID

__all__ = [
    "COMPONENTS",
    "DEFAULT_WEIGHTS",
    "GRID",
    "NEIGHBOUR_POOL",
    "NO_CF_WEIGHTS",
    "NO_CF_WEIGHTS_EMB",
    "HybridRanker",
    "smooth_embeddings",
]
