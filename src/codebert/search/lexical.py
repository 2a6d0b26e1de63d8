"""BM25 in SQLite's FTS5 over identifier-split sub-words: the lexical half of hybrid ranking.

The search index keeps it in the same SQLite file as its functions (`codebert.tool.store`): a
virtual table `lexical(words)` whose rowid is the function's id and whose `words` are
`bm25.bm25_tokens` of the text the vectors encode (camelCase and snake_case split, the whole
identifier kept too). SQLite is already the index's metadata store, so the lexical index comes
with no new dependency and no import cost on the query path (bm25s needs scipy: 0.7 s to import,
most of `codebert query`'s 1 s budget), is updated row by row when files change, and lives and
dies with its generation's file (same crash safety).

Scores are FTS5's `bm25()` (Okapi BM25, k1 = 1.2, b = 0.75; negated, so that higher is better); a
query's words are OR-ed, so a function matching any of them scores, and one matching none scores 0.
The Table-2 BM25 baseline (`bm25.py`, bm25s: Lucene's BM25, k1 = 1.5) is the same family with
other constants; hybrid ranking is measured with this one (`FtsScorer`), the one the tool runs.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from codebert.bm25 import bm25_tokens
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the query path imports this module: not the corpus readers
    from codebert.search.data import SearchExamples

TABLE = "lexical"
SCHEMA = f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(words, tokenize = 'unicode61')"


def words_of(text: str) -> str:
    """The indexed form of a text: its sub-words, space-separated."""
    return " ".join(bm25_tokens(text))


def match_expression(query: str) -> str | None:
    """The FTS5 query for a plain-English query: its sub-words, quoted, OR-ed; None if it has none."""
    words = list(dict.fromkeys(bm25_tokens(query)))  # once each, in order
    return " OR ".join(f'"{w}"' for w in words) if words else None


def add(db: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
    """Index (rowid, text) rows."""
    db.executemany(f"INSERT INTO {TABLE}(rowid, words) VALUES (?, ?)", [(i, words_of(t)) for i, t in rows])


def remove(db: sqlite3.Connection, ids: list[int]) -> None:
    db.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(i,) for i in ids])


def search(db: sqlite3.Connection, query: str, limit: int, join: str = "", where: str = "", params: tuple = ()) -> list[tuple[int, float]]:
    """(rowid, score) of the `limit` best matches, best first; `join`/`where` narrow the rows (a
    language, a path) with `params` bound after the match expression."""
    expression = match_expression(query)
    if expression is None:
        return []
    sql = (f"SELECT {TABLE}.rowid, -bm25({TABLE}) FROM {TABLE} {join} WHERE {TABLE} MATCH ? {where} "
           f"ORDER BY bm25({TABLE}) LIMIT ?")
    return [(int(i), float(s)) for i, s in db.execute(sql, (expression, *params, limit))]


class FtsScorer:
    """FTS5 BM25 scores of queries against the candidates of one group, indexed on their own (as
    `bm25.BM25Scorer` does with bm25s): the lexical ranker of `search hybrid` and `evaluate --ranking`."""

    def __init__(self, examples: SearchExamples):
        self.examples = examples

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        db = sqlite3.connect(":memory:")
        db.execute(SCHEMA)
        add(db, [(j + 1, self.examples.codes[c]) for j, c in enumerate(codes)])  # rowid = position + 1 (0 is not a rowid)
        scores = np.zeros((len(queries), len(codes)), dtype=np.float32)
        for row, i in enumerate(queries):
            for rowid, score in search(db, self.examples.queries[i], len(codes)):
                scores[row, rowid - 1] = score
        db.close()
        return scores
