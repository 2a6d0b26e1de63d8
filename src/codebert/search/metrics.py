"""The code-search metric, as CodeBERT's `codesearch/mrr.py` computes it."""

from __future__ import annotations

import numpy as np


def gold_ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Rank of each query's gold candidate: the number of candidates scoring >= the gold one.

    `scores` is (queries, candidates), higher is better; `gold[i]` is the column of query i's
    own code. Ties count against the model (a candidate with the gold's exact score ranks ahead
    of it), so a model that scores everything equally gets rank = number of candidates, never 1.
    """
    scores = np.asarray(scores)
    gold_scores = scores[np.arange(len(scores)), gold]
    return (scores >= gold_scores[:, None]).sum(axis=1)


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    """Mean of 1 / rank over queries (ranks start at 1)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to average")
    return float(np.mean(1.0 / ranks))


def random_ranker_mrr(group_size: int) -> float:
    """Expected MRR of a ranker that orders each group at random: (1/N) * sum_{k=1..N} 1/k.

    The gold's rank is uniform on 1..N, so its expected reciprocal rank is the N-th harmonic number
    over N (0.0075 for the paper's groups of 1,000): the floor a trained model must clear.
    """
    if group_size < 1:
        raise ValueError(f"group size must be at least 1, got {group_size}")
    return float(np.sum(1.0 / np.arange(1, group_size + 1)) / group_size)
