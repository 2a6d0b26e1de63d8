"""`codebert index` and `codebert query`: semantic search over your own source trees.

An index folder holds, for generation g (bumped by every update):
  meta-g.sqlite   files (path, root, language, content hash) and functions (name, language,
                  line span, text) in SQLite
  vectors-g.npy   one unit vector per function (rows aligned with ids-g.npy, the function ids),
                  rows grouped by language (the manifest's `language_rows`), so that a language
                  filter is a slice
  faiss-g.index   FAISS over those vectors: HNSW (M = 32, efConstruction 128) above --exact-limit
                  (100,000) vectors; below it, search is exact, one matrix product over vectors-g.npy
  query-encoder/  the encoder as an ONNX graph with its tokenizer (`codebert.query_encoder`):
                  `codebert query` answers without importing torch
  manifest.json   the current generation, the model and the counts; written last, so a run
                  killed at any moment leaves the previous index intact
Re-running `codebert index` on the same roots re-encodes only files whose content changed and
drops the functions of deleted files. Every function and method with a body is indexed,
documented or not (declarations without one, such as `@overload` stubs, are not); its text is the
doc comment (unless --no-include-docs) and its code tokens. Only regular files inside the roots
are read (links out of them are skipped and counted).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebert.config import option
from codebert.corpus.extract import SourceFile, read_source, walk
from codebert.corpus.jsonl import atomic_write
from codebert.corpus.languages import SPECS
from codebert.errors import UserError
from codebert.report import format_table

log = logging.getLogger(__name__)

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


@dataclass
class IndexConfig:
    paths: list[Path] = option(help="source trees (folders or files) to index", positional=True, metavar="PATH")
    model: str = option(help="encoder folder: our bi-encoder (best/ of `search finetune --mode bi`), a pre-trained checkpoint, or a sentence-transformers folder")
    out: Path = option(help="index folder (created, or updated in place)")
    languages: list[str] = option([], "languages to index (empty: all supported)")
    include_docs: bool = option(True, "encode each function's doc comment with its code")
    exact_limit: int = option(100_000, "exact search up to this many functions, FAISS HNSW above (docs/scale.md: "
                                       "the largest size at which exact search keeps a query's p99 under 50 ms on 2 cores)")
    max_length: int = option(0, "tokens per encoder window (0: the model's setting)")
    batch_size: int = option(64, "inputs per forward pass")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "encoding precision; auto: bf16 where the CPU has bf16 instructions (AVX512-BF16/AMX: about 3x faster, "
                "recall@10 against fp32 in benchmarks/search_latency.py), else fp32")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = [f"{p}: no such file or folder" for p in self.paths if not p.exists()]
        unknown = [lang for lang in self.languages if lang not in SPECS]
        if unknown:
            problems.append(f"--languages: unknown {', '.join(unknown)} (known: {', '.join(sorted(SPECS))})")
        if self.exact_limit < 1 or self.batch_size < 1:
            problems.append("--exact-limit and --batch-size: must be >= 1")
        # A window holds the special tokens plus some text; 2 tokens encode nothing but the
        # specials, and every function would get the same vector.
        if self.max_length != 0 and self.max_length < 8:
            problems.append("--max-length: must be 0 (the model's setting) or >= 8")
        if self.threads < 0:
            problems.append("--threads: must be >= 0 (0: torch's default)")
        if self.out.exists() and not self.out.is_dir():
            problems.append(f"--out {self.out}: exists and is not a folder")
        return problems


# ------------------------------------------------------------------------------------- storage
def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path}: damaged index manifest; remove the folder and index again") from None


def build_faiss(vectors: np.ndarray, ids: np.ndarray, exact_limit: int):
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
        # The manifest names a generation whose files may since have been deleted or not copied
        # along with it: say which, rather than let SQLite or FAISS fail with a bare message.
        missing = [name for name in (f"meta-{g}.sqlite", f"faiss-{g}.index", f"vectors-{g}.npy", f"ids-{g}.npy")
                   if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{folder}: damaged index, {MANIFEST} names generation {g} but {', '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} missing; remove the folder and index again")
        self.db = sqlite3.connect(f"file:{folder / f'meta-{g}.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(functions)")}
        self._tokens = "f.tokens" if "tokens" in columns else "'' AS tokens"  # an index made before --rerank
        self._selectors: dict[str, tuple[Any, Any]] = {}  # language -> (FAISS id selector, search parameters)

    @functools.cached_property
    def faiss(self):
        """The generation's FAISS index (read on first use: exact search works on the vectors)."""
        import faiss

        return faiss.read_index(str(self.folder / f"faiss-{self.manifest['generation']}.index"))

    @functools.cached_property
    def exact(self) -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
        """(vectors, ids, language -> rows) of the generation, rows grouped by language.

        Exact search is one matrix product: numpy's BLAS runs a batch of queries against every row
        several times faster than FAISS's flat index does here (docs/scale.md, docs/results.md),
        and grouping the rows by language makes a language filter a contiguous slice, never a scan."""
        g = self.manifest["generation"]
        vectors = np.load(self.folder / f"vectors-{g}.npy")
        ids = np.load(self.folder / f"ids-{g}.npy")
        rows = self.manifest.get("language_rows")
        if rows is None:  # an index made before the rows were grouped at index time: group them now
            language_of = dict(self.db.execute("SELECT id, language FROM functions").fetchall())
            vectors, ids, rows = group_by_language(vectors, ids, language_of)
        return np.ascontiguousarray(vectors, dtype=np.float32), ids, {lang: slice(a, b) for lang, (a, b) in rows.items()}

    def _exact_search(self, queries: np.ndarray, k: int, language: str | None) -> list[list[tuple[int, float]]]:
        vectors, ids, slices = self.exact
        rows = slice(0, len(ids)) if language is None else slices.get(language, slice(0, 0))
        k = min(k, rows.stop - rows.start)
        if k == 0:
            return [[] for _ in queries]
        top, top_scores = self.top_k(queries, rows, k)
        block_ids = ids[rows]
        return [[(int(block_ids[j]), float(s)) for j, s in zip(row, row_scores)] for row, row_scores in zip(top, top_scores)]

    def top_k(self, queries: np.ndarray, rows: slice, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions within `rows`, scores), best first, of each query's k highest inner products
        with the vectors in `rows`. numpy here; the server swaps in a torch one (`serve.TorchTopK`)."""
        scores = queries @ self.exact[0][rows].T  # (queries, rows)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)

    @functools.cached_property
    def languages(self) -> dict[str, int]:
        """Functions per indexed language."""
        return dict(self.db.execute("SELECT language, COUNT(*) FROM functions GROUP BY language").fetchall())

    def _only(self, language: str):
        """HNSW search parameters that admit only `language`'s functions (one id set per language,
        made once): the filter runs inside the search, so a rare language costs what any search
        costs. (An exact index filters by slicing its language-grouped rows instead.)"""
        import faiss

        if language not in self._selectors:
            ids = np.array([r[0] for r in self.db.execute("SELECT id FROM functions WHERE language = ?", (language,))], dtype=np.int64)
            selector = faiss.IDSelectorBatch(ids)
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(128, faiss.downcast_index(self.faiss.index).hnsw.efSearch))
            self._selectors[language] = (selector, params)  # the selector must outlive its parameters
        return self._selectors[language][1]

    def search(self, vector: np.ndarray, k: int, language: str | None = None) -> list[dict[str, Any]]:
        """Top-k functions by cosine similarity, optionally of one language only."""
        return self.search_many(vector.reshape(1, -1), k, [language])[0]

    def search_many(self, vectors: np.ndarray, k: int, languages: list[str | None]) -> list[list[dict[str, Any]]]:
        """`search` for a batch of query vectors (row i filtered to languages[i]): one matrix product
        (exact) or FAISS call (HNSW) per language present, one SQLite query for every hit. A language
        the index lacks raises UserError."""
        unknown = sorted({lang for lang in languages if lang is not None and lang not in self.languages})
        if unknown:
            raise UserError(f"language {', '.join(unknown)}: not in this index (indexed: {', '.join(sorted(self.languages)) or 'none'})")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        hits: list[list[tuple[int, float]]] = [[] for _ in range(len(vectors))]
        total = int(self.manifest.get("functions", 0))
        for language in set(languages):
            rows = [i for i, lang in enumerate(languages) if lang == language]
            if self.manifest.get("search") != "hnsw":
                for row, found in zip(rows, self._exact_search(vectors[rows], k, language)):
                    hits[row] = found
                continue
            want = min(k, total if language is None else self.languages[language])
            if want == 0:
                continue
            params = None if language is None else self._only(language)
            scores, ids = self.faiss.search(vectors[rows], want, params=params)
            for row, row_scores, row_ids in zip(rows, scores, ids):
                hits[row] = [(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
        found = self.functions(sorted({i for row in hits for i, _ in row}))
        return [[{**found[i], "score": s} for i, s in row if i in found] for row in hits]

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
                "per_language": per_language, "roots": self.manifest.get("roots", [])}


# --------------------------------------------------------------------------------------- index
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


def _root_of(path: str, roots: list[str]) -> str | None:
    """The indexed root (a folder or a single file) that `path` lies in, if any."""
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


def function_text(fn, include_docs: bool) -> str:
    code = " ".join(fn.code_tokens)
    return f"{fn.docstring} {code}".strip() if include_docs and fn.docstring else code


def main(cfg: IndexConfig) -> dict[str, Any]:
    from codebert.corpus.functions import parse_functions
    from codebert.encoder import TextEncoder

    started = time.perf_counter()
    out = cfg.out
    manifest = read_manifest(out) if out.exists() else None
    model_id = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    if manifest is not None and manifest["model"] != model_id:
        raise UserError(f"{out} was built with {manifest['model']}; index into a new folder to use another model")
    if manifest is not None and manifest.get("include_docs", True) != cfg.include_docs:
        raise UserError(f"{out} was built with include_docs={manifest.get('include_docs')}; index into a new folder to change it")
    out.mkdir(parents=True, exist_ok=True)
    old_g = manifest["generation"] if manifest else 0
    g = old_g + 1
    db_path = out / f"meta-{g}.sqlite"
    db_path.unlink(missing_ok=True)
    if manifest:
        shutil.copyfile(out / f"meta-{old_g}.sqlite", db_path)
    db = sqlite3.connect(db_path)
    db.executescript(SCHEMA)
    if "tokens" not in {row[1] for row in db.execute("PRAGMA table_info(functions)")}:
        db.execute("ALTER TABLE functions ADD COLUMN tokens TEXT NOT NULL DEFAULT ''")  # an index made before --rerank

    reasons: Counter = Counter()
    languages = tuple(cfg.languages) if cfg.languages else tuple(sorted(SPECS))
    roots = [str(p.resolve()) for p in cfg.paths]
    seen: dict[str, tuple[SourceFile, str, str]] = {}  # path -> (file, text, sha256)
    for path in cfg.paths:
        for src in walk([path], languages, "top", reasons):
            text, why = read_source(src.path)
            if text is None:
                reasons[(src.language, f"file:{why}")] += 1
                continue
            seen[src.path] = (src, text, hashlib.sha256(text.encode("utf-8")).hexdigest())
    known = {row[0]: (row[1], row[2]) for row in db.execute("SELECT path, id, sha256 FROM files")}
    deleted = [fid for path, (fid, _) in known.items() if _root_of(path, roots) and path not in seen]
    changed = [path for path, (_, _, sha) in seen.items() if path not in known or known[path][1] != sha]
    stale = deleted + [known[p][0] for p in changed if p in known]
    removed_functions = [r[0] for r in db.execute(f"SELECT id FROM functions WHERE file_id IN ({','.join('?' * len(stale))})", stale)] if stale else []
    if stale:
        db.execute(f"DELETE FROM functions WHERE file_id IN ({','.join('?' * len(stale))})", stale)
        db.execute(f"DELETE FROM files WHERE id IN ({','.join('?' * len(stale))})", stale)

    new_rows, texts = [], []
    for path in changed:
        src, text, sha = seen[path]
        root = _root_of(path, roots)
        cursor = db.execute("INSERT INTO files(path, root, language, sha256) VALUES (?, ?, ?, ?)", (path, root, src.language, sha))
        functions, _ = parse_functions(text.encode("utf-8"), src.language)
        for fn in functions:
            if not fn.code_tokens or fn.is_stub:  # @overload, abstract, interface: nothing implemented to find
                continue
            # tokens: the code as the search fine-tuning read it (code tokens, no docs), for --rerank.
            row = db.execute("INSERT INTO functions(file_id, name, language, start_line, end_line, text, tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (cursor.lastrowid, fn.name, src.language, fn.start_line, fn.end_line, fn.code, " ".join(fn.code_tokens)))
            new_rows.append(row.lastrowid)
            texts.append(function_text(fn, cfg.include_docs))

    encode_seconds = 0.0
    dim = manifest["dimension"] if manifest else None
    new_vectors = np.zeros((0, dim or 1), dtype=np.float32)
    encoder = None
    if texts:
        encoder = TextEncoder(cfg.model, cfg.max_length, cfg.threads, cfg.precision)
        dim = encoder.dimension
        t0 = time.perf_counter()
        new_vectors = encoder.encode_code(texts, cfg.batch_size, cfg.progress)
        encode_seconds = time.perf_counter() - t0
    if dim is None:
        encoder = TextEncoder(cfg.model, cfg.max_length, cfg.threads, cfg.precision)
        dim = encoder.dimension
    if manifest:
        old_vectors = np.load(out / f"vectors-{old_g}.npy")
        old_ids = np.load(out / f"ids-{old_g}.npy")
        keep = ~np.isin(old_ids, np.array(removed_functions, dtype=np.int64))
        vectors = np.concatenate([old_vectors[keep], new_vectors.reshape(-1, dim)])
        ids = np.concatenate([old_ids[keep], np.array(new_rows, dtype=np.int64)])
    else:
        vectors, ids = new_vectors.reshape(-1, dim), np.array(new_rows, dtype=np.int64)
    vectors, ids, language_rows = group_by_language(vectors, ids, dict(db.execute("SELECT id, language FROM functions").fetchall()))
    db.commit()
    db.close()

    import faiss

    index = build_faiss(vectors, ids, cfg.exact_limit)
    np.save(out / f"vectors-{g}.npy", vectors)
    np.save(out / f"ids-{g}.npy", ids)
    faiss.write_index(index, str(out / f"faiss-{g}.index"))
    lean = _export_query_encoder(out, model_id, encoder, cfg)
    all_roots = sorted(set((manifest or {}).get("roots", [])) | set(roots))
    new_manifest = {"generation": g, "model": model_id, "dimension": int(dim), "functions": int(len(ids)),
                    "search": "hnsw" if len(ids) > cfg.exact_limit else "exact", "include_docs": cfg.include_docs,
                    "language_rows": language_rows,
                    "roots": all_roots, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_write(out / MANIFEST) as f:  # the switch to the new generation
        f.write(json.dumps(new_manifest, indent=2) + "\n")
    for stale_file in out.glob("*-*.*"):
        if re.fullmatch(r"(meta|vectors|ids|faiss)-\d+\.(sqlite|npy|index)", stale_file.name) and not stale_file.name.startswith(
                (f"meta-{g}.", f"vectors-{g}.", f"ids-{g}.", f"faiss-{g}.")):
            stale_file.unlink()
    skipped = sum(v for k, v in reasons.items() if k[1].startswith("file:"))
    return {"out": str(out), "functions": int(len(ids)), "files_seen": len(seen), "files_encoded": len(changed),
            "files_deleted": len(deleted), "functions_encoded": len(texts), "files_skipped": skipped,
            "encode_seconds": encode_seconds, "functions_per_s": len(texts) / encode_seconds if encode_seconds else 0.0,
            "seconds": time.perf_counter() - started, "search": new_manifest["search"], "lean_queries": lean,
            "precision": encoder.precision if encoder is not None else "-"}


def _export_query_encoder(out: Path, model_id: str, encoder, cfg: IndexConfig) -> bool:
    """The index's own query encoder for the lean query path (`codebert.query_encoder`), written
    once per index (the model of an index never changes), under a temporary name then renamed."""
    from codebert import query_encoder

    if query_encoder.available(out, model_id):
        return True
    if encoder is None:
        from codebert.encoder import TextEncoder

        encoder = TextEncoder(cfg.model, cfg.max_length, cfg.threads, cfg.precision)
    final = out / query_encoder.FOLDER
    tmp = out / f".{query_encoder.FOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if not encoder.export_query_encoder(tmp, model_id):
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return True


def render(figures: dict[str, Any]) -> str:
    rows = [[k, v] for k, v in figures.items() if k != "out"]
    return format_table(["figure", "value"], rows) + f"\nindex in {figures['out']}"


# --------------------------------------------------------------------------------------- query
@dataclass
class QueryConfig:
    index: Path = option(help="index folder from `codebert index`", positional=True)
    text: str = option(help="what the code should do, in plain English", positional=True)
    k: int = option(10, "results to show")
    language: str | None = option(None, "only results in this language")
    snippet_lines: int = option(6, "lines of each function to show")
    rerank: str | None = option(None, "cross-encoder folder (`search finetune --mode cross`) that re-orders the top --rerank-k")
    rerank_k: int = option(50, "candidates the cross-encoder re-scores (at least -k)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    engine: Literal["auto", "onnx", "torch"] = option(
        "auto", "how the query is encoded: onnx (the index's exported encoder, no torch import: fast to start), "
                "torch (the model folder, as the index encoded code), auto: onnx where the index has it")

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.k <= 1000:
            problems.append("-k/--k: must be in [1, 1000]")
        if not 1 <= self.rerank_k <= 1000:
            problems.append("--rerank-k: must be in [1, 1000]")
        if not self.text.strip():
            problems.append("the query is empty")
        if len(self.text) > 2000:
            problems.append("the query is longer than 2,000 characters")
        if self.snippet_lines < 0:
            problems.append("--snippet-lines: must be >= 0")
        if self.threads < 0:
            problems.append("--threads: must be >= 0 (0: torch's default)")
        return problems


_WORD = re.compile(r"[A-Za-z0-9]{3,}")


def highlight_terms(query: str) -> list[str]:
    """Query words of 3+ characters, lower-cased, used to highlight snippets."""
    return sorted({w.lower() for w in _WORD.findall(query)}, key=lambda w: (-len(w), w))  # longest first, then a-z


def snippet(text: str, terms: list[str], lines: int, mark: tuple[str, str]) -> str:
    shown = "\n".join(text.splitlines()[:lines])
    if not terms:
        return shown
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    return pattern.sub(lambda m: f"{mark[0]}{m.group(0)}{mark[1]}", shown)


def query_main(cfg: QueryConfig) -> dict[str, Any]:
    from codebert.query_encoder import open_encoder

    store = IndexStore(cfg.index)
    started = time.perf_counter()
    encoder = open_encoder(cfg.index, store.manifest["model"], cfg.threads, cfg.engine)
    load_seconds = time.perf_counter() - started
    reranker = Reranker(cfg.rerank, cfg.threads) if cfg.rerank else None
    t0 = time.perf_counter()
    vector = encoder.encode_queries([cfg.text])[0]
    if reranker is None:
        results = store.search(vector, cfg.k, cfg.language)
    else:
        results = reranker.rerank(cfg.text, store.search(vector, max(cfg.k, cfg.rerank_k), cfg.language))[: cfg.k]
    latency = time.perf_counter() - t0
    terms = highlight_terms(cfg.text)
    for r in results:
        r["terms"] = terms
        r["snippet_lines"] = cfg.snippet_lines
    return {"query": cfg.text, "results": results, "latency_ms": 1000 * latency, "load_seconds": load_seconds,
            "functions": store.manifest["functions"]}


class Reranker:
    """The paper's cross-encoder re-scoring the vector search's candidates, pair by pair."""

    def __init__(self, model: str, threads: int = 0):
        import torch

        from codebert.search.models import SearchSpec, load_cross_encoder
        from codebert.backbone import load_tokenizer

        spec = SearchSpec.read(model)
        if spec is None or spec.mode != "cross":
            raise UserError(f"--rerank {model}: not a fine-tuned cross-encoder (search_model.json with mode cross)")
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.max_length = load_cross_encoder(model).eval(), load_tokenizer(model), spec.max_length

    def rerank(self, query: str, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Candidates re-ordered by the positive-class logit of (query, code tokens); `score` becomes that
        logit and the vector score is kept as `vector_score`."""
        from codebert.search.data import SearchExamples
        from codebert.search.evaluate import CrossScorer

        if not candidates:
            return []
        codes = [c["tokens"] or " ".join(c["text"].split()) for c in candidates]  # indexes made before tokens were kept
        examples = SearchExamples([query], codes, [""] * len(codes), [c["language"] for c in candidates])
        scorer = CrossScorer(self.model, self.tokenizer, examples, self.max_length, 64, next(self.model.parameters()).device)
        scores = scorer.score(np.array([0]), np.arange(len(codes)))[0]
        for candidate, score in zip(candidates, scores):
            candidate["vector_score"], candidate["score"] = candidate["score"], float(score)
        return sorted(candidates, key=lambda c: -c["score"])


def query_render(figures: dict[str, Any]) -> str:
    bold = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    lines = [f"{len(figures['results'])} results for {figures['query']!r} among {figures['functions']} functions "
             f"({figures['latency_ms']:.1f} ms)"]
    for n, r in enumerate(figures["results"], 1):
        lines.append(f"\n{n}. {r['path']}:{r['start_line']}  {r['name']}  [{r['language']}]  score {r['score']:.3f}")
        lines.extend("   " + line for line in snippet(r["text"], r["terms"], r["snippet_lines"], bold).splitlines())
    return "\n".join(lines)
