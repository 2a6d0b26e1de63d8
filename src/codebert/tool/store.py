"""The search index on disk, and searching it (`codebert index` writes it, `codebert query` and
`codebert serve` read it).

An index folder holds, for generation g (bumped by every update):
  meta-g.sqlite   files (path, root, language, content hash) and functions (name, language,
                  line span, text) in SQLite
  vectors-g.npy   one unit vector per function (rows aligned with ids-g.npy, the function ids),
                  rows grouped by language (the manifest's `language_rows`), so that a language
                  filter is a slice
  faiss-g.index   FAISS over those vectors: HNSW (M = 32, efConstruction 128) above --exact-limit
                  (100,000) vectors; below it, search is exact, one matrix product over vectors-g.npy
  query-encoder/  the encoder as an ONNX graph with its tokenizer (`codebert.tool.query_encoder`):
                  `codebert query` answers without importing torch
  manifest.json   the current generation, the model, the counts and the ranking; written last, so
                  a run killed at any moment leaves the previous index intact
The SQLite file also holds the lexical index (`codebert.search.lexical`: FTS5 BM25 over each
function's sub-words), updated with its functions. A query is ranked by the vectors (dense), by
BM25 (lexical) or by both fused (hybrid, `codebert.search.fusion`): the manifest's `ranking`,
what the model's search_model.json says (`codebert search hybrid --save` chose it on valid) or,
for a model without one, ZERO_SHOT_RANKING.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codebert.errors import UserError
from codebert.search import lexical
from codebert.search.fusion import fuse
from codebert.tool.filters import PathFilter

MANIFEST = "manifest.json"
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, root TEXT NOT NULL, language TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS functions (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id), name TEXT NOT NULL, language TEXT NOT NULL,
    start_line INTEGER NOT NULL, end_line INTEGER NOT NULL, text TEXT NOT NULL,
    tokens TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS functions_file ON functions(file_id);
"""


RANKINGS = ("dense", "lexical", "hybrid")
HYBRID_DEPTH = 100  # candidates each ranker puts into a fused ranking
FILTERS_KEPT = 64  # path filters whose admitted functions a store keeps worked out


@dataclass(frozen=True)
class Ranking:
    """How an index ranks its functions (the fields of search_model.json that `search hybrid --save` writes)."""

    ranking: str = "dense"  # dense | lexical | hybrid
    fusion: str = "sum"  # hybrid: sum (min-max normalised scores) | rrf (reciprocal ranks)
    lexical_weight: float = 0.0  # hybrid sum: BM25's share

    @staticmethod
    def of(record: dict[str, Any] | None) -> Ranking | None:
        """The ranking a search_model.json or a manifest records, if it records one."""
        if not record or record.get("ranking") not in RANKINGS:
            return None
        return Ranking(record["ranking"], record.get("fusion", "sum"), float(record.get("lexical_weight", 0.0)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# A model with no search_model.json choice (zero-shot MiniLM, any sentence-transformers folder): the
# fusion `codebert search hybrid --model minilm --data csn6` chose on csn6's valid split (docs/results.md:
# macro MRR 0.694 -> 0.749 on the summaries, 0.532 -> 0.588 on 4-word queries).
ZERO_SHOT_RANKING = Ranking("hybrid", "sum", 0.3)


# ------------------------------------------------------------------------------------- storage
def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path}: damaged index manifest; remove the folder and index again") from None


GENERATION_FILES = ("meta-{g}.sqlite", "faiss-{g}.index", "vectors-{g}.npy", "ids-{g}.npy")
REPAIR = "run `codebert index` on the same paths again to rebuild it, or remove the folder"


def generation_files(g: int, store: str = "local") -> list[str]:
    """Generation g's files; a Milvus store keeps its vectors' index in Milvus, not in a FAISS file."""
    return [name.format(g=g) for name in GENERATION_FILES if store == "local" or not name.startswith("faiss")]


CHECKSUM_LIMIT = 4 << 20  # files up to 4 MiB also get a SHA-256 (milliseconds to check on every open)


def file_sizes(folder: Path, g: int, store: str = "local") -> dict[str, int]:
    """What the manifest records of generation g's files: their sizes in bytes."""
    return {name: (folder / name).stat().st_size for name in generation_files(g, store)}


def file_checksums(folder: Path, g: int, store: str = "local") -> dict[str, str]:
    """SHA-256 of generation g's files small enough to check on every open (the ids always, a small index all)."""
    return {name: _sha256(folder / name) for name in generation_files(g, store) if (folder / name).stat().st_size <= CHECKSUM_LIMIT}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_generation(folder: Path, manifest: dict[str, Any]) -> None:
    """One UserError line naming the first missing or damaged file of the manifest's generation: missing,
    or of another size than the manifest recorded (an index made before sizes were recorded: existence)."""
    g = manifest["generation"]
    missing = [name for name in generation_files(g, manifest.get("store", "local")) if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: damaged index, {MANIFEST} names generation {g} but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} missing; remove the folder and index again")
    for name, size in manifest.get("files", {}).items():
        actual = (folder / name).stat().st_size if (folder / name).is_file() else -1
        if actual != size:
            raise UserError(f"{folder / name}: damaged index file ({actual:,} bytes, the manifest says {size:,}); {REPAIR}")
    for name, digest in manifest.get("checksums", {}).items():
        if _sha256(folder / name) != digest:
            raise UserError(f"{folder / name}: damaged index file (its SHA-256 is not the one the manifest recorded); {REPAIR}")


def damaged(path: Path, exc: Exception) -> UserError:
    return UserError(f"{path}: damaged index file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {REPAIR}")


def build_faiss(vectors: np.ndarray, ids: np.ndarray, exact_limit: int):
    # Imported here: faiss only for HNSW (exact search is a numpy product; `codebert query` stays lean).
    import faiss

    dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[0] else 1
    if len(ids) > exact_limit:
        inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        # efConstruction 128 rather than FAISS's 40: recall@10 0.987 -> 0.999 at 100k vectors and
        # 0.974 -> 0.996 at 250k (efSearch 128), for 2.3x the build time (docs/scale.md).
        inner.hnsw.efConstruction = 128
        inner.hnsw.efSearch = 128
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


class IndexStore:
    """A read-only view of one generation of an index folder."""

    def __init__(self, folder: Path):
        manifest = read_manifest(folder)
        if manifest is None:
            raise UserError(f"{folder}: not an index (no {MANIFEST}); build one with `codebert index`")
        self.folder, self.manifest = folder, manifest
        g = manifest["generation"]
        # The manifest names a generation whose files may since have been deleted, cut short or
        # overwritten: say which and what to do, rather than let SQLite, numpy or FAISS fail with
        # a bare message.
        check_generation(folder, manifest)
        meta = folder / f"meta-{g}.sqlite"
        try:
            self.db = sqlite3.connect(f"file:{meta}?mode=ro", uri=True, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(functions)")}
        except sqlite3.DatabaseError as exc:
            raise damaged(meta, exc) from None
        if not columns:
            raise damaged(meta, ValueError("no functions table"))
        self._tokens = "f.tokens" if "tokens" in columns else "'' AS tokens"  # an index made before --rerank
        self._selectors: dict[str, tuple[Any, Any]] = {}  # language -> (FAISS id selector, search parameters)
        # The last FILTERS_KEPT path filters: the function ids each admits, and which rows of the
        # vectors and of the BM25 postings those are (a server sees a few filters, many times each;
        # bounded, as the filters are the users' to choose).
        self._allowed: OrderedDict[PathFilter, np.ndarray] = OrderedDict()
        self._admitted: OrderedDict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._filters_lock = threading.Lock()  # the MCP server's tools may run in threads of their own

    @functools.cached_property
    def faiss(self):
        """The generation's FAISS index (read on first use: exact search works on the vectors)."""
        # Imported here: faiss only for HNSW (exact search is a numpy product; `codebert query` stays lean).
        import faiss

        path = self.folder / f"faiss-{self.manifest['generation']}.index"
        try:
            return faiss.read_index(str(path))
        except RuntimeError as exc:  # FAISS reports a short or foreign file as a RuntimeError
            raise damaged(path, exc) from None

    @functools.cached_property
    def exact(self) -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
        """(vectors, ids, language -> rows) of the generation, rows grouped by language.

        Exact search is one matrix product: numpy's BLAS runs a batch of queries against every row
        several times faster than FAISS's flat index does here (docs/scale.md, docs/results.md),
        and grouping the rows by language makes a language filter a contiguous slice, never a scan."""
        g = self.manifest["generation"]
        vectors, ids = (load_array(self.folder / f"{kind}-{g}.npy") for kind in ("vectors", "ids"))
        if len(vectors) != len(ids):
            raise damaged(self.folder / f"vectors-{g}.npy", ValueError(f"{len(vectors)} vectors for {len(ids)} ids"))
        rows = self.manifest.get("language_rows")
        if rows is None:  # an index made before the rows were grouped at index time: group them now
            language_of = dict(self.db.execute("SELECT id, language FROM functions").fetchall())
            vectors, ids, rows = group_by_language(vectors, ids, language_of)
        return np.ascontiguousarray(vectors, dtype=np.float32), ids, {lang: slice(a, b) for lang, (a, b) in rows.items()}

    def _exact_search(self, queries: np.ndarray, k: int, language: str | None, allowed: np.ndarray | None = None,
                      lowest: bool = False) -> tuple[list[list[tuple[int, float]]], list[float | None]]:
        """(each query's k best (id, cosine), each query's lowest cosine over the searched rows, with
        `lowest`, else None): one pass over the vectors gives both."""
        vectors, ids, slices = self.exact
        rows = slice(0, len(ids)) if language is None else slices.get(language, slice(0, 0))
        none: list[float | None] = [None] * len(queries)
        if allowed is not None:  # a path filter: the admitted rows of the language's block, gathered
            admitted = self._admitted_rows(allowed, ids, "vectors")[rows]
            block_ids = ids[rows][admitted]
            k = min(k, len(block_ids))
            if k == 0:
                return [[] for _ in queries], none
            block = vectors[rows][admitted]
            scores = queries @ block.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            floors = [float(low) for low in scores.min(axis=1)] if lowest else none
            return [[(int(block_ids[j]), float(scores[r, j])) for j in row] for r, row in enumerate(top)], floors
        k = min(k, rows.stop - rows.start)
        if k == 0:
            return [[] for _ in queries], none
        top, top_scores, lows = self.top_k(queries, rows, k, lowest)
        block_ids = ids[rows]
        floors = [float(low) for low in lows] if lows is not None else none
        return [[(int(block_ids[j]), float(s)) for j, s in zip(row, row_scores)] for row, row_scores in zip(top, top_scores)], floors

    def top_k(self, queries: np.ndarray, rows: slice, k: int, lowest: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(positions within `rows`, scores), best first, of each query's k highest inner products
        with the vectors in `rows`, and with `lowest` each query's lowest one (else None). numpy
        here; the server swaps in a torch one (`serve.TorchTopK`)."""
        scores = queries @ self.exact[0][rows].T  # (queries, rows)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        lows = scores.min(axis=1) if lowest else None
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1), lows

    @functools.cached_property
    def languages(self) -> dict[str, int]:
        """Functions per indexed language."""
        return dict(self.db.execute("SELECT language, COUNT(*) FROM functions GROUP BY language").fetchall())

    def _only(self, language: str):
        """HNSW search parameters that admit only `language`'s functions (one id set per language,
        made once): the filter runs inside the search, so a rare language costs what any search
        costs. (An exact index filters by slicing its language-grouped rows instead.)"""
        if language not in self._selectors:
            self._selectors[language] = self._selecting(self._language_ids(language))
        return self._selectors[language][1]

    def _language_ids(self, language: str) -> np.ndarray:
        return np.array([r[0] for r in self.db.execute("SELECT id FROM functions WHERE language = ?", (language,))], dtype=np.int64)

    def _selecting(self, ids: np.ndarray):
        """(FAISS id selector, HNSW search parameters admitting only `ids`): the selector must outlive its parameters."""
        # Imported here: faiss only for HNSW (exact search is a numpy product; `codebert query` stays lean).
        import faiss

        selector = faiss.IDSelectorBatch(ids.astype(np.int64))
        return selector, faiss.SearchParametersHNSW(sel=selector, efSearch=max(128, faiss.downcast_index(self.faiss.index).hnsw.efSearch))

    def search(self, vector: np.ndarray, k: int, language: str | None = None) -> list[dict[str, Any]]:
        """Top-k functions by cosine similarity, optionally of one language only."""
        return self.search_many(vector.reshape(1, -1), k, [language])[0]

    def search_many(self, vectors: np.ndarray, k: int, languages: list[str | None], paths: PathFilter | None = None) -> list[list[dict[str, Any]]]:
        """`search` for a batch of query vectors (row i filtered to languages[i], every row to `paths`):
        one matrix product (exact) or FAISS call (HNSW) per language present, one SQLite query for
        every hit. A language the index lacks raises UserError."""
        self._check_languages(languages)
        return self._attach(self._dense_hits(np.ascontiguousarray(vectors, dtype=np.float32), k, languages, self.allowed_ids(paths))[0])

    def rank_many(self, vectors: np.ndarray, texts: list[str], k: int, languages: list[str | None],
                  ranking: Ranking | None = None, paths: PathFilter | None = None) -> list[list[dict[str, Any]]]:
        """`search_many` ranked as `ranking` says (default: the index's own, `self.ranking`).

        lexical: FTS5's BM25 of the query's sub-words. hybrid: the union of each ranker's
        HYBRID_DEPTH best, each candidate scored by both (a candidate BM25 did not return scores
        0; one the vectors did not return gets its cosine computed), fused as `search hybrid`
        fuses a group's scores. For `sum`, the dense scores are min-max normalised between the
        lowest cosine in the searched rows (exact search; HNSW: among the candidates) and the
        best, and BM25's between 0 (a function matching no query word) and the best, as over
        the 1,000 candidates of a group. Results carry `vector_score` and `lexical_score`."""
        ranking = ranking or self.ranking
        if ranking.ranking == "dense":
            return self.search_many(vectors, k, languages, paths)
        if not self.has_lexical:
            raise UserError(f"{self.folder}: this index has no lexical index (built before it existed); "
                            f"run `codebert index` on it again to add one, or rank with --ranking dense")
        self._check_languages(languages)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        depth = max(k, HYBRID_DEPTH)
        allowed = self.allowed_ids(paths)
        dense, floors = self._dense_hits(vectors, depth, languages, allowed, lowest=True) if ranking.ranking == "hybrid" else (None, None)
        hits = []
        for row, (text, language) in enumerate(zip(texts, languages)):
            found = self.lexical_hits(text, depth, language, allowed)
            if dense is None:
                hits.append([(i, s, {"lexical_score": s}) for i, s in found[:k]])
            else:
                hits.append(self._fused(vectors[row], dense[row], found, ranking, floors[row])[:k])
        return self._attach(hits)

    def _check_languages(self, languages: list[str | None]) -> None:
        unknown = sorted({lang for lang in languages if lang is not None and lang not in self.languages})
        if unknown:
            raise UserError(f"language {', '.join(unknown)}: not in this index (indexed: {', '.join(sorted(self.languages)) or 'none'})")

    def _dense_hits(self, vectors: np.ndarray, k: int, languages: list[str | None], allowed: np.ndarray | None = None,
                    lowest: bool = False) -> tuple[list[list[tuple[int, float]]], list[float | None]]:
        """(each query's k best (id, cosine), and with `lowest` each query's lowest cosine over the
        rows it searches: exact search only, None for HNSW and Milvus, which see no more than their
        candidates). The lowest cosine is where hybrid's `sum` puts the bottom of the dense scale."""
        hits: list[list[tuple[int, float]]] = [[] for _ in range(len(vectors))]
        floors: list[float | None] = [None] * len(vectors)
        total = int(self.manifest.get("functions", 0))
        for language in set(languages):
            rows = [i for i, lang in enumerate(languages) if lang == language]
            if self.milvus is not None:
                for row, found in zip(rows, self.milvus.search(vectors[rows], k, language, allowed)):
                    hits[row] = found
                continue
            if self.manifest.get("search") != "hnsw":
                found, lows = self._exact_search(vectors[rows], k, language, allowed, lowest)
                for row, row_hits, low in zip(rows, found, lows):
                    hits[row], floors[row] = row_hits, low
                continue
            want = min(k, total if language is None else self.languages[language])
            if allowed is not None:
                want = min(want, len(allowed))
            if want == 0:
                continue
            if allowed is not None:
                params, keep_alive = self._admitting(allowed, language)  # the selector must outlive the search
            else:
                params = None if language is None else self._only(language)
            scores, ids = self.faiss.search(vectors[rows], want, params=params)
            for row, row_scores, row_ids in zip(rows, scores, ids):
                hits[row] = [(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
        return hits, floors

    def _attach(self, hits: list[list[tuple]]) -> list[list[dict[str, Any]]]:
        """Each hit (id, score[, extra fields]) with its function's row, one SQLite query for all."""
        found = self.functions(sorted({hit[0] for row in hits for hit in row}))
        return [[{**found[hit[0]], "score": hit[1], **(hit[2] if len(hit) > 2 else {})} for hit in row if hit[0] in found]
                for row in hits]

    @functools.cached_property
    def milvus(self):
        """The Milvus collection of an index made with --store milvus (`codebert.tool.milvus_store`), else None."""
        if self.manifest.get("store", "local") != "milvus":
            return None
        # Imported here: pymilvus only for an index that uses Milvus.
        from codebert.tool.milvus_store import MilvusSearch

        return MilvusSearch(self.manifest["milvus"]["uri"], self.manifest["milvus"]["collection"])

    lexical_matrix: tuple[lexical.Bm25Matrix, dict[str, np.ndarray]] | None = None  # (postings, language -> its rows' mask); None: FTS5

    def load_lexical_matrix(self) -> None:
        """Hold the lexical index's postings in memory (`lexical.Bm25Matrix`: ~4 s for 100,000
        functions), so that each later lexical query costs about a millisecond instead of an FTS5
        scan of every row matching a common word: for a server, not for a one-query process."""
        if not self.has_lexical:
            return
        matrix = lexical.Bm25Matrix(self.db, self.lexical_form)
        language_of = dict(self.db.execute("SELECT id, language FROM functions").fetchall())
        labels = np.array([language_of.get(int(i), "") for i in matrix.rowids], dtype=object)
        self.lexical_matrix = matrix, {language: labels == language for language in self.languages}

    @functools.cached_property
    def lexical_form(self) -> str | None:
        """The form its lexical index's words are written in (`lexical.FORMS`), which queries are
        matched in; None: the index has no lexical index."""
        return lexical.form_of(self.db)

    @property
    def has_lexical(self) -> bool:
        return self.lexical_form is not None

    @functools.cached_property
    def ranking(self) -> Ranking:
        """The index's ranking: its manifest's (`codebert index` records the model's), else dense
        for an index made before there was a choice."""
        return Ranking.of(self.manifest.get("ranking")) or Ranking("dense")

    def lexical_hits(self, text: str, limit: int, language: str | None, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(function id, BM25) of the best `limit` lexical matches, optionally of one language and of
        the functions a path filter admits (`allowed`): from the postings in memory once
        `load_lexical_matrix` has run (the server), else one FTS5 query (the same answers)."""
        if self.lexical_matrix is not None:
            matrix, languages = self.lexical_matrix
            admitted = None if language is None else languages[language]
            if allowed is not None:
                admitted = self._admitted_rows(allowed, matrix.rowids, "postings") & (True if admitted is None else admitted)
            return matrix.search(text, limit, admitted)
        join, where, params = "", "", ()
        if language is not None:
            join, where, params = "JOIN functions f ON f.id = lexical.rowid", "AND f.language = ?", (language,)
        if allowed is not None:  # any number of ids, as one JSON array
            where += " AND lexical.rowid IN (SELECT value FROM json_each(?))"
            params += (json.dumps(allowed.tolist()),)
        return lexical.search(self.db, text, limit, join, where, params, self.lexical_form)

    def allowed_ids(self, paths: PathFilter | None) -> np.ndarray | None:
        """The ids of the functions a path filter admits (None: no filter), worked out once per filter."""
        if not paths:
            return None
        with self._filters_lock:
            allowed = self._allowed.get(paths)
            if allowed is None:
                files = [fid for fid, path, root in self.db.execute("SELECT id, path, root FROM files") if paths.admits(path, root)]
                function_ids, file_ids = self._function_files
                allowed = self._allowed[paths] = np.sort(function_ids[np.isin(file_ids, np.array(files, dtype=np.int64))])
                if len(self._allowed) > FILTERS_KEPT:
                    self._allowed.popitem(last=False)
            self._allowed.move_to_end(paths)
            return allowed

    def _admitted_rows(self, allowed: np.ndarray, rowids: np.ndarray, kind: str) -> np.ndarray:
        """`np.isin(rowids, allowed)`: which of `rowids` (the vectors' ids, or the BM25 postings'
        rows: `kind` names which) a path filter admits, worked out once per filter rather than per
        query (a pass over 100,000 ids costs ~2.5 ms, about what a whole hybrid query costs the
        server). `allowed` comes from `allowed_ids`, so its identity names the filter; the entry
        holds the array, so that identity is not reused by another while it is kept."""
        key = (id(allowed), kind)
        with self._filters_lock:
            entry = self._admitted.get(key)
            if entry is None or entry[0] is not allowed:
                entry = self._admitted[key] = (allowed, np.isin(rowids, allowed))
                if len(self._admitted) > 2 * FILTERS_KEPT:  # two kinds of rows per filter
                    self._admitted.popitem(last=False)
            self._admitted.move_to_end(key)
            return entry[1]

    @functools.cached_property
    def _function_files(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array(self.db.execute("SELECT id, file_id FROM functions").fetchall(), dtype=np.int64).reshape(-1, 2)
        return rows[:, 0], rows[:, 1]

    def _admitting(self, allowed: np.ndarray, language: str | None):
        """HNSW search parameters that admit only `allowed` (and `language`'s) functions; with the selector they need."""
        selector, params = self._selecting(allowed if language is None else np.intersect1d(allowed, self._language_ids(language)))
        return params, selector

    def _fused(self, vector: np.ndarray, dense: list[tuple[int, float]], found: list[tuple[int, float]], ranking: Ranking,
               floor: float | None) -> list[tuple[int, float, dict[str, float]]]:
        cosine, bm25 = dict(dense), dict(found)
        ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in found]))
        missing = [i for i in ids if i not in cosine]  # BM25's candidates the vectors did not return
        if missing:
            cosine.update(zip(missing, (float(c) for c in self._vectors_of(missing) @ vector)))
        if not ids:
            return []
        floor = min(cosine.values()) if floor is None else floor
        # One extra candidate at the floor of both rankers: min-max then spans what a group's would.
        d = np.array([cosine[i] for i in ids] + [floor])[None]
        b = np.array([bm25.get(i, 0.0) for i in ids] + [0.0])[None]
        fused = fuse(d, b, ranking.fusion, ranking.lexical_weight)[0][:-1]
        order = np.argsort(-fused, kind="stable")
        return [(ids[j], float(fused[j]), {"vector_score": cosine[ids[j]], "lexical_score": bm25.get(ids[j], 0.0)}) for j in order]

    @functools.cached_property
    def _rows_by_id(self) -> dict[int, int]:
        return {int(i): row for row, i in enumerate(self.exact[1])}

    def _vectors_of(self, function_ids: list[int]) -> np.ndarray:
        """(len(function_ids), dim) the functions' vectors, in that order."""
        if self.milvus is not None:
            found = self.milvus.vectors_of(function_ids)
            return np.stack([found[i] for i in function_ids])
        if self.manifest.get("search") == "hnsw":
            return np.stack([self.faiss.reconstruct(int(i)) for i in function_ids])
        return self.exact[0][[self._rows_by_id[i] for i in function_ids]]

    def functions(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT f.id, f.name, f.language, f.start_line, f.end_line, f.text, {self._tokens}, files.path, files.root "
            f"FROM functions f JOIN files ON files.id = f.file_id WHERE f.id IN ({marks})", ids).fetchall()
        return {row["id"]: dict(row) for row in rows}

    def stats(self) -> dict[str, Any]:
        per_language = self.languages
        files = self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        return {**{k: self.manifest[k] for k in ("model", "generation", "functions", "search")}, "files": files,
                "ranking": self.ranking.as_dict(), "lexical_index": self.has_lexical, "store": self.manifest.get("store", "local"),
                "per_language": per_language, "roots": self.manifest.get("roots", [])}


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load (`mmap`: memory-mapped, which checks the header and the size without reading the data),
    a damaged file (cut short, overwritten) as one UserError line."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise damaged(path, exc) from None


def group_by_language(vectors: np.ndarray, ids: np.ndarray, language_of: dict[int, str]) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """Rows reordered so that each language's functions are contiguous (order kept within one),
    and {language: [first row, end row]}: a language filter is then a slice of the vectors."""
    labels = np.array([language_of.get(int(i), "") for i in ids], dtype=object)
    order = np.argsort(labels, kind="stable") if len(ids) else np.zeros(0, dtype=np.int64)
    vectors, ids, labels = np.ascontiguousarray(vectors[order], dtype=np.float32), ids[order], labels[order]
    rows: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        rows.setdefault(label, [row, row])[1] = row + 1
    return vectors, ids, rows
