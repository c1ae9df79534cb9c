"""Text features: the TF-IDF space every content-based ranker and the diversity step share.

Fitted on the whole corpus (titles and abstracts), so a brand-new paper nobody liked yet still
has a vector and can be matched to a reader's profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer


def make_vectorizer(*, ngram_max: int = 2, min_df: int = 1, max_features: int | None = 200_000) -> TfidfVectorizer:
    """The vectorizer: English stop words, unigrams and bigrams, sublinear tf, L2-normalised rows."""
    return TfidfVectorizer(
        strip_accents="unicode",
        lowercase=True,
        stop_words="english",
        ngram_range=(1, ngram_max),
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=True,
        dtype=np.float32,
    )


def fit_tfidf(texts: Sequence[str], **options: Any) -> tuple[TfidfVectorizer, sp.csr_matrix]:
    """Fit on the corpus; returns the vectorizer and the papers x terms matrix (rows L2-normalised)."""
    vectorizer = make_vectorizer(**options)
    if not texts:  # no papers at all: a one-term vocabulary and an empty matrix
        vectorizer = make_vectorizer(**{**options, "min_df": 1})
        vectorizer.set_params(stop_words=None, token_pattern=r"(?u)\b\w+\b")
        vectorizer.fit(["_"])
        return vectorizer, sp.csr_matrix((0, len(vectorizer.vocabulary_)), dtype=np.float32)
    texts = [t if t.strip() else "_" for t in texts]
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # empty vocabulary: every text is a stop word or blank
        vectorizer = make_vectorizer(**{**options, "min_df": 1})
        vectorizer.set_params(stop_words=None, token_pattern=r"(?u)\b\w+\b")
        matrix = vectorizer.fit_transform([t + " _" for t in texts])
    return vectorizer, sp.csr_matrix(matrix, dtype=np.float32)


def normalize_rows(matrix: sp.csr_matrix | np.ndarray) -> sp.csr_matrix | np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    if sp.issparse(matrix):
        sparse = cast(sp.csr_matrix, matrix)
        norms = np.sqrt(np.asarray(sparse.multiply(sparse).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms) @ matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)
