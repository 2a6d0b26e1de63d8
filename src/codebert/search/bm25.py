"""BM25 (Lucene's, through `bm25s`) over code split into sub-words: a Table-2 row and the hard negatives of bi-encoder fine-tuning."""

from __future__ import annotations

import logging
import re

import numpy as np

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the query path imports this module: not the corpus readers
    from codebert.search.data import SearchExamples

_WORD = re.compile(r"[A-Za-z0-9]+")
_SUBWORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased sub-words of every alphanumeric run, plus the run itself when it has several:
    `parseHTTPHeader_v2` -> parse, http, header, parsehttpheader, v, 2, v2."""
    out = []
    for word in _WORD.findall(text):
        parts = _SUBWORD.findall(word)
        out.extend(p.lower() for p in parts)
        if len(parts) > 1:
            out.append(word.lower())
    return out


def bm25_index(texts: list[str]):
    # Imported here: bm25s (and scipy) only when a BM25 index is built.
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG
    index = bm25s.BM25()  # Lucene's BM25, k1 = 1.5, b = 0.75
    index.index([bm25_tokens(t) or ["<empty>"] for t in texts], show_progress=False)
    return index


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
