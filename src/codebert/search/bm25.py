"""BM25 scores of queries against a group's candidates: the Table-2 row (`search baseline --kind bm25`).

The tokens and the index are `codebert.bm25`'s (shared with code2nl's exemplars)."""

from __future__ import annotations

import numpy as np

from typing import TYPE_CHECKING

from codebert.bm25 import bm25_index, bm25_tokens

if TYPE_CHECKING:  # the query path imports this module: not the corpus readers
    from codebert.search.data import SearchExamples


class BM25Scorer:
    """BM25 scores of queries against the candidates of one group, indexed on their own."""

    def __init__(self, examples: SearchExamples):
        self.examples = examples
        self.query_tokens = [bm25_tokens(q) for q in examples.queries]

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        index = bm25_index([self.examples.codes[j] for j in codes])
        scores = np.zeros((len(queries), len(codes)), dtype=np.float32)
        for row, i in enumerate(queries):
            if self.query_tokens[i]:  # a query with no word (symbols only) scores 0 everywhere: the worst rank
                scores[row] = index.get_scores(self.query_tokens[i])
        return scores
