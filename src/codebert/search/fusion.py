"""Hybrid ranking (beyond the paper): a dense and a lexical score matrix fused into one ranking.

Two fusions, both on the (queries, candidates) score matrices of the same candidates:
  rrf  reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): each ranker contributes
       1 / (k + rank) with rank its 1-based position among the candidates (tied candidates share
       the best of their positions), k = 60 as in that paper; scale-free, no weight.
  sum  each ranker's scores min-max normalised to [0, 1] over a query's candidates, then
       `weight * lexical + (1 - weight) * dense`; a query whose scores are all equal (BM25 of a query
       with no word) contributes 0 from that ranker.
The result is ranked by the paper's protocol like any other scorer (search/metrics.py: ties count
against the model), so a fused ranking is compared with dense and BM25 on the same groups.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Fusion = Literal["rrf", "sum"]
RRF_K = 60  # Cormack et al.'s constant


def competition_ranks(scores: np.ndarray) -> np.ndarray:
    """(queries, candidates) 1-based ranks, higher score first; tied candidates share the best rank."""
    scores = np.asarray(scores, dtype=np.float64)
    ordered = -np.sort(-scores, axis=1)  # each row descending
    # rank = 1 + the number of candidates scoring strictly higher
    return 1 + np.stack([np.searchsorted(-row, -value, side="left") for row, value in zip(ordered, scores)])


def min_max(scores: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1]; a constant row becomes 0."""
    scores = np.asarray(scores, dtype=np.float64)
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    span = high - low
    return np.where(span > 0, (scores - low) / np.where(span > 0, span, 1.0), 0.0)


def fuse(dense: np.ndarray, lexical: np.ndarray, method: Fusion, weight: float = 0.5, k: int = RRF_K) -> np.ndarray:
    """One (queries, candidates) score matrix from two; `weight` is the lexical share of `sum`."""
    if dense.shape != lexical.shape:
        raise ValueError(f"score matrices differ in shape: {dense.shape} and {lexical.shape}")
    if method == "rrf":
        return 1.0 / (k + competition_ranks(dense)) + 1.0 / (k + competition_ranks(lexical))
    if method == "sum":
        return weight * min_max(lexical) + (1.0 - weight) * min_max(dense)
    raise ValueError(f"fusion {method!r}: rrf or sum")


class FusedScorer:
    """A scorer (search/scorers.py's protocol) whose scores fuse a dense and a lexical scorer's."""

    def __init__(self, dense, lexical, method: Fusion, weight: float = 0.5, k: int = RRF_K):
        self.dense, self.lexical, self.method, self.weight, self.k = dense, lexical, method, weight, k

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return fuse(self.dense.score(queries, codes), self.lexical.score(queries, codes), self.method, self.weight, self.k)
