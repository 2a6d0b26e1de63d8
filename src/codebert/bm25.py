"""BM25 (Lucene's, through `bm25s`) over code split into sub-words: what search's BM25 row, its
hard negatives and the tool's lexical index rank with, and what code2nl's exemplars are retrieved by."""

from __future__ import annotations

import logging
import re

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
