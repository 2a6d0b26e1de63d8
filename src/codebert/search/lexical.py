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

Words are written in a form (`FORM`), recorded beside the table, since a generation must be queried
in the form it was written in:
  "stems"  each sub-word's Snowball English (Porter2) stem, on both sides, and a query's English stop
           words (Lucene's EnglishAnalyzer set) dropped: "Returns the parsed values" -> return, pars,
           valu, which match `return parse_value(x)`. On csn6 valid BM25 alone goes from 0.622 to
           0.675 macro MRR (docs/results.md; `benchmarks/lexical_forms.py`).
  "words"  the sub-words as they are: indexes made before the stems (`codebert index` rewrites them).

The Table-2 BM25 baseline (`bm25.py`, bm25s: Lucene's BM25, k1 = 1.5) is the same family with
other constants; hybrid ranking is measured with this one (`FtsScorer`), the one the tool runs.

FTS5 scores every row that matches any query word, then sorts them: a query with common words
("the", "return") matches most functions of a large index (60 ms a query over 100,000 functions).
That suits `codebert query`, which answers one query and must not spend seconds loading anything;
the server answers many, so it holds the same scores as an inverted index in memory (`Bm25Matrix`).
"""

from __future__ import annotations

import functools
import math
import sqlite3
import threading
from collections import Counter

import numpy as np

from codebert.bm25 import bm25_tokens
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the query path imports this module: not the corpus readers
    from codebert.search.data import SearchExamples

TABLE = "lexical"
SCHEMA = f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(words, tokenize = 'unicode61')"
FORM_TABLE = "lexical_form"  # one row: the form TABLE's words are written in (absent: "words")
FORM = "stems"  # the form new lexical indexes are written in
FORMS = ("stems", "words")
# Lucene's English stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET), dropped from queries only:
# on the code side they are keywords (if, for, in, not, this) and cost nothing to keep.
# scikit-learn's 318-word list measured lower (0.666 on csn6 valid): it drops words code is named
# with (empty, first, last, find, fill).
STOP_WORDS = frozenset("a an and are as at be but by for if in into is it no not of on or such that the their then there "
                       "these they this to was will with".split())


@functools.lru_cache(maxsize=1 << 18)
def stem(word: str) -> str:
    """`word`'s Snowball English (Porter2) stem: parsed, parses, parse -> pars."""
    stemmer, lock = _stemmer()
    with lock:  # a Snowball stemmer keeps its word in itself: one caller at a time
        return stemmer.stemWord(word)


@functools.cache
def _stemmer():
    # Imported here: ~17 ms, paid by the first lexical query or index, not by every import.
    from snowballstemmer import stemmer

    return stemmer("english"), threading.Lock()


def indexed_words(text: str, form: str = FORM) -> list[str]:
    """The words a text is indexed by, in order: its sub-words (`bm25_tokens`), stemmed in "stems"."""
    tokens = bm25_tokens(text)
    return [stem(t) for t in tokens] if form == "stems" else tokens


def query_words(query: str, form: str = FORM) -> list[str]:
    """The words a query is matched by, once each, in order: in "stems", its sub-words less the stop
    words, stemmed."""
    tokens = bm25_tokens(query)
    if form == "stems":
        tokens = [stem(t) for t in tokens if t not in STOP_WORDS]
    return list(dict.fromkeys(tokens))


def words_of(text: str, form: str = FORM) -> str:
    """The indexed form of a text: its words, space-separated."""
    return " ".join(indexed_words(text, form))


def match_expression(query: str, form: str = FORM) -> str | None:
    """The FTS5 query for a plain-English query: its words, quoted, OR-ed; None if it has none."""
    words = query_words(query, form)
    return " OR ".join(f'"{w}"' for w in words) if words else None


def create(db: sqlite3.Connection, form: str = FORM) -> None:
    """An empty lexical table, its words to be written in `form`."""
    db.execute(SCHEMA)
    db.execute(f"CREATE TABLE IF NOT EXISTS {FORM_TABLE}(form TEXT NOT NULL)")
    db.execute(f"DELETE FROM {FORM_TABLE}")
    db.execute(f"INSERT INTO {FORM_TABLE}(form) VALUES (?)", (form,))


def form_of(db: sqlite3.Connection) -> str | None:
    """The form the database's lexical table is written in; None where it has none."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone() is None:
        return None
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (FORM_TABLE,)).fetchone() is None:
        return "words"  # written before there were forms
    row = db.execute(f"SELECT form FROM {FORM_TABLE}").fetchone()
    return row[0] if row is not None and row[0] in FORMS else "words"


def add(db: sqlite3.Connection, rows: list[tuple[int, str]], form: str = FORM) -> None:
    """Index (rowid, text) rows."""
    db.executemany(f"INSERT INTO {TABLE}(rowid, words) VALUES (?, ?)", [(i, words_of(t, form)) for i, t in rows])


def remove(db: sqlite3.Connection, ids: list[int]) -> None:
    db.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(i,) for i in ids])


def search(db: sqlite3.Connection, query: str, limit: int, join: str = "", where: str = "", params: tuple = (),
           form: str = FORM) -> list[tuple[int, float]]:
    """(rowid, score) of the `limit` best matches, best first; `join`/`where` narrow the rows (a
    language, a path) with `params` bound after the match expression; `form`: the table's."""
    expression = match_expression(query, form)
    if expression is None:
        return []
    sql = (f"SELECT {TABLE}.rowid, -bm25({TABLE}) FROM {TABLE} {join} WHERE {TABLE} MATCH ? {where} "
           f"ORDER BY bm25({TABLE}) LIMIT ?")
    return [(int(i), float(s)) for i, s in db.execute(sql, (expression, *params, limit))]


# fts5_aux.c's bm25() constants
K1 = 1.2
B = 0.75
IDF_FLOOR = 1e-6  # FTS5's IDF for a word in half the rows or more (where the formula gives <= 0)
FREQUENT = 3  # Bm25Matrix.search: a word in 1/FREQUENT of the rows or more is scored last, where it can matter


class Bm25Matrix:
    """FTS5's bm25() of a query for every row of the lexical table at once, from postings held in
    memory: `search`'s answers (same rows, same scores) at a fraction of its cost on a large index.

    Each word's postings (the rows that contain it, row positions ascending) carry its BM25 term
    weight, tf * (k1 + 1) / (tf + k1 * (1 - b + b * D / avgdl)) with D a row's token count, and a
    query is one numpy add per distinct query word over its postings, times the word's IDF. The
    arithmetic is fts5_aux.c's, in its order (IDF log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, the
    query's words summed in order, in double), so the scores are FTS5's; rows tied on score come
    in rowid order (FTS5 leaves that open). Built from the table's `words` in about 4 s for
    100,000 functions: what a server does once per index generation (`codebert serve`).
    """

    def __init__(self, db: sqlite3.Connection, form: str = FORM):
        self.form = form  # the table's: queries are matched in it
        cursor = db.cursor()
        cursor.row_factory = None  # plain tuples, whatever the connection's factory
        vocabulary: dict[str, int] = {}
        rowids, lengths, distinct, terms, counts = [], [], [], [], []
        for rowid, words in cursor.execute(f"SELECT rowid, words FROM {TABLE} ORDER BY rowid"):
            tokens = words.split()  # words are [a-z0-9]+ (stems too): FTS5's unicode61 splits them where a space does
            counted = Counter(tokens)
            terms.extend(vocabulary.setdefault(word, len(vocabulary)) for word in counted)
            counts.extend(counted.values())
            rowids.append(rowid)
            lengths.append(len(tokens))
            distinct.append(len(counted))
        self.vocabulary = vocabulary
        self.rowids = np.array(rowids, dtype=np.int64)  # ascending: a row's position orders ties
        n = len(rowids)
        length = np.array(lengths, dtype=np.float64)
        avgdl = float(length.sum()) / n if n else 1.0  # xColumnTotalSize / xRowCount
        row = np.repeat(np.arange(n, dtype=np.int64), distinct)
        term = np.array(terms, dtype=np.int64)
        tf = np.array(counts, dtype=np.float64)
        by_term = np.argsort(term, kind="stable")  # postings grouped by word, rows ascending within one
        self.rows = row[by_term].astype(np.int32)  # half the memory of int64: positions, not ids
        tf, doc_length = tf[by_term], length[self.rows]
        self.weights = (tf * (K1 + 1.0)) / (tf + K1 * (1 - B + B * doc_length / avgdl))
        hits = np.bincount(term, minlength=len(vocabulary))
        self.hits = hits.tolist()  # rows containing each word (a list: read one word at a time)
        self.starts = np.concatenate([[0], np.cumsum(hits)])
        # math.log, as the C library's log: fts5_aux.c calls it
        idf = [math.log((n - h + 0.5) / (h + 0.5)) for h in self.hits]
        self.idf = np.array([x if x > 0.0 else IDF_FLOOR for x in idf], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.rowids)

    def terms(self, query: str) -> list[int]:
        """The query's words that some row has, once each, in order (as `match_expression`): a word
        no row has adds 0 to every row (FTS5 adds its IDF times 0)."""
        return [t for word in query_words(query, self.form) if (t := self.vocabulary.get(word)) is not None]

    def scores(self, query: str, terms: list[int] | None = None) -> np.ndarray:
        """(rows,) each row's BM25 for `query` (0: matches none of its words), in `rowids` order."""
        out = np.zeros(len(self.rowids), dtype=np.float64)
        for t in self.terms(query) if terms is None else terms:
            span = slice(self.starts[t], self.starts[t + 1])
            out[self.rows[span]] += self.idf[t] * self.weights[span]
        return out

    def scores_of(self, terms: list[int], rows: np.ndarray) -> np.ndarray:
        """The BM25 of `rows` (positions) for these words, each word's weight looked up in its
        postings, summed in the words' order as fts5_aux.c sums them."""
        out = np.zeros(len(rows), dtype=np.float64)
        for t in terms:
            postings = self.rows[self.starts[t] : self.starts[t + 1]]
            at = np.minimum(np.searchsorted(postings, rows), len(postings) - 1)
            present = postings[at] == rows
            out[present] += self.idf[t] * self.weights[self.starts[t] + at[present]]
        return out

    def search(self, query: str, limit: int, admitted: np.ndarray | None = None) -> list[tuple[int, float]]:
        """`search`'s (rowid, score) of the `limit` best matches, best first (ties by rowid);
        `admitted`, a boolean mask over `rowids`, narrows the rows (a language, a path filter).

        Most of a query's postings are its frequent words' ("the", "of", "return": in a third of the
        rows or more), which add little: at most idf x (k1 + 1) each. So the rows are first scored
        with the rarer words only (MaxScore, Turtle and Flood 1995); a row can reach the answer only
        if its score so far is within the frequent words' bound of the limit-th best so far, and
        those few rows are scored with every word, as FTS5 scores them. Where the bound does not
        separate them, every row is scored with every word."""
        terms = self.terms(query)
        if limit <= 0 or not terms:
            return []
        rare = [t for t in terms if self.hits[t] * FREQUENT < len(self.rowids)]
        frequent = [t for t in terms if self.hits[t] * FREQUENT >= len(self.rowids)]
        partial = self.scores(query, rare)
        if admitted is not None:
            partial[~admitted] = 0.0
        hit = np.flatnonzero(partial > 0.0)
        bound = sum(float(self.idf[t]) for t in frequent) * (K1 + 1.0)  # the most the frequent words add to a row
        if frequent and len(hit) >= limit:
            cut = np.partition(partial[hit], len(hit) - limit)[len(hit) - limit]  # the limit-th best so far
            if cut > bound:  # a row matching only frequent words scores at most `bound`: below `limit` rows
                hit = hit[partial[hit] >= cut - bound]
                return self._best(hit, self.scores_of(terms, hit), limit)
        if frequent:  # the bound separates nothing: every word, every row
            partial = self.scores(query, terms)
            if admitted is not None:
                partial[~admitted] = 0.0
            hit = np.flatnonzero(partial > 0.0)
        return self._best(hit, partial[hit], limit)

    def _best(self, hit: np.ndarray, scores: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """The `limit` best of rows `hit` with `scores`, score descending then rowid ascending."""
        if len(hit) > limit:
            cut = np.partition(scores, len(hit) - limit)[len(hit) - limit]  # the limit-th best score
            above, tied = np.flatnonzero(scores > cut), np.flatnonzero(scores == cut)
            keep = np.concatenate([above, tied[: limit - len(above)]])  # ties at the cut: lowest rowids
            hit, scores = hit[keep], scores[keep]
        order = np.lexsort((hit, -scores))
        return [(int(self.rowids[hit[j]]), float(scores[j])) for j in order]


class FtsScorer:
    """FTS5 BM25 scores of queries against the candidates of one group, indexed on their own (as
    `bm25.BM25Scorer` does with bm25s): the lexical ranker of `search hybrid` and `evaluate --ranking`."""

    def __init__(self, examples: SearchExamples, form: str = FORM):
        self.examples, self.form = examples, form

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        db = sqlite3.connect(":memory:")
        create(db, self.form)
        add(db, [(j + 1, self.examples.codes[c]) for j, c in enumerate(codes)], self.form)  # rowid = position + 1 (0 is not a rowid)
        scores = np.zeros((len(queries), len(codes)), dtype=np.float32)
        for row, i in enumerate(queries):
            for rowid, score in search(db, self.examples.queries[i], len(codes), form=self.form):
                scores[row, rowid - 1] = score
        db.close()
        return scores
