"""`codebert index`: index the functions of source trees for semantic search.

The index folder's layout is in `codebert.tool.store`; `codebert query` (`codebert.tool.query`)
searches it.
Re-running `codebert index` on the same roots re-encodes only files whose content changed and
drops the functions of deleted files. Every function and method with a body is indexed,
documented or not (declarations without one, such as `@overload` stubs, are not); its text is the
doc comment (unless --no-include-docs) and its code tokens. Only regular files inside the roots
are read (links out of them are skipped and counted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebert.config import option
from codebert.corpus.extract import SourceFile, read_source, walk
from codebert.io import atomic_write
from codebert.corpus.languages import SPECS
from codebert.errors import UserError
from codebert.tables import format_table
from codebert.search import lexical
from codebert.tool.filters import PathFilter
from codebert.tool.store import (MANIFEST, SCHEMA, ZERO_SHOT_RANKING, Ranking, build_faiss, check_generation, damaged, file_checksums, file_sizes,
                                 group_by_language, load_array, read_manifest)

log = logging.getLogger(__name__)

@dataclass
class IndexConfig:
    paths: list[Path] = option(help="source trees (folders or files) to index", positional=True, metavar="PATH")
    model: str = option(help="encoder folder: our bi-encoder (best/ of `search finetune --mode bi`), a pre-trained checkpoint, or a sentence-transformers folder")
    out: Path = option(help="index folder (created, or updated in place)")
    languages: list[str] = option([], "languages to index (empty: all supported)")
    exclude: list[str] = option([], "leave out files matching any of these globs (relative to their root, or absolute; "
                                    "** spans folders: '**/vendor/**', '**/*_pb2.py'); repeatable; files indexed before are dropped")
    include_docs: bool = option(True, "encode each function's doc comment with its code")
    exact_limit: int = option(100_000, "exact search up to this many functions, FAISS HNSW above (docs/scale.md: "
                                       "the largest size at which exact search keeps a query's p99 under 50 ms on 2 cores)")
    max_length: int = option(0, "tokens per encoder window (0: the model's setting)")
    batch_size: int = option(64, "inputs per forward pass")
    store: Literal["local", "milvus"] = option(
        "local", "where the vectors live: local (numpy/FAISS files in the index folder) or milvus (a Milvus collection: "
                 "Milvus Lite in INDEX/milvus.db, or the cluster at --milvus-uri); fixed when the index is made")
    milvus_uri: str = option("", "--store milvus: the Milvus server, e.g. http://host:19530 (empty: Milvus Lite in the index folder)")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "encoding precision; auto: bf16 where the CPU has bf16 instructions (AVX512-BF16/AMX: about 3x faster, "
                "recall@10 against fp32 in benchmarks/search_latency.py), else fp32")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")
    watch: bool = option(False, "after indexing, keep watching the paths and re-index the files that change (watchfiles), "
                                "each update a new generation as a re-run makes it; until interrupted")
    watch_updates: int = option(0, "--watch: stop after this many updates (0: until interrupted)")

    def validate(self) -> list[str]:
        problems = [f"{p}: no such file or folder" for p in self.paths if not p.exists()]
        if self.watch_updates < 0:
            problems.append("--watch-updates: must be >= 0")
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
        try:
            PathFilter.of(exclude=self.exclude)
        except UserError as exc:
            problems.append(f"--exclude: {exc}")
        return problems


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
    figures = index_once(cfg)
    if cfg.watch:
        figures = watch(cfg, figures)
    return figures


def watch(cfg: IndexConfig, figures: dict[str, Any]) -> dict[str, Any]:
    """Re-index whenever source files under the paths change (created, modified, deleted), until
    interrupted or --watch-updates updates; each update is an ordinary incremental re-index."""
    # Imported here: watchfiles only for --watch.
    import watchfiles

    from codebert.corpus.languages import language_for

    languages = tuple(cfg.languages) if cfg.languages else tuple(sorted(SPECS))
    out = str(cfg.out.resolve())

    def source(change, path: str) -> bool:  # the index's own files and other files do not count
        return not path.startswith(out) and language_for(Path(path).name, languages) is not None

    print(f"watching {', '.join(map(str, cfg.paths))} for changes (Ctrl-C to stop)", flush=True)
    updates = 0
    for changes in watchfiles.watch(*cfg.paths, watch_filter=source, debounce=400, raise_interrupt=False):
        figures = index_once(dataclasses.replace(cfg, progress=False))
        updates += 1
        print(f"{time.strftime('%H:%M:%S')} {len(changes)} change(s): {figures['files_encoded']} file(s) re-encoded, "
              f"{figures['files_deleted']} deleted, {figures['functions']} functions in the index", flush=True)
        if cfg.watch_updates and updates >= cfg.watch_updates:
            break
    return {**figures, "updates": updates}


def index_once(cfg: IndexConfig) -> dict[str, Any]:
    started = time.perf_counter()
    out = cfg.out
    manifest = read_manifest(out) if out.exists() else None
    model_id = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    _check_compatible(manifest, model_id, cfg)
    out.mkdir(parents=True, exist_ok=True)
    old_g = manifest["generation"] if manifest else 0
    g = old_g + 1
    previous = manifest if manifest is not None and _intact(out, manifest) else None  # a damaged one is rebuilt
    db = _open_meta(out, previous, old_g, g)

    reasons: Counter = Counter()
    roots = [str(p.resolve()) for p in cfg.paths]
    seen = _read_files(cfg, reasons)
    deleted, changed, removed_functions = _drop_stale(db, seen, roots)
    new_rows, texts = _add_functions(db, seen, changed, roots, cfg.include_docs)

    new_vectors, dim, encoder, encode_seconds = _encode(cfg, texts, previous["dimension"] if previous else None)
    vectors, ids = _merge_vectors(out, previous, old_g, removed_functions, new_vectors, new_rows, dim)
    vectors, ids, language_rows = group_by_language(vectors, ids, dict(db.execute("SELECT id, language FROM functions").fetchall()))
    db.commit()
    db.close()

    milvus = None
    if cfg.store == "milvus":
        milvus = _write_milvus(cfg, out, g, vectors, ids, manifest)
    else:
        _write_vectors(out, g, vectors, ids, cfg.exact_limit)
    lean = _export_query_encoder(out, model_id, encoder, cfg)
    all_roots = sorted(set((manifest or {}).get("roots", [])) | set(roots))
    new_manifest = {"generation": g, "model": model_id, "dimension": int(dim), "functions": int(len(ids)),
                    "search": "hnsw" if len(ids) > cfg.exact_limit else "exact", "include_docs": cfg.include_docs,
                    "language_rows": language_rows, "ranking": model_ranking(cfg.model).as_dict(),
                    "roots": all_roots, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "files": file_sizes(out, g, cfg.store), "checksums": file_checksums(out, g, cfg.store),  # checked on every open
                    "store": cfg.store, **({"milvus": milvus} if milvus else {})}
    _switch_generation(out, g, new_manifest)
    if milvus:
        # Imported here: pymilvus only for an index in Milvus.
        from codebert.tool import milvus_store

        milvus_store.drop_others(milvus["uri"], milvus["prefix"], milvus["collection"])
    skipped = sum(v for k, v in reasons.items() if k[1].startswith("file:"))
    excluded = sum(v for k, v in reasons.items() if k[1] == "excluded")
    return {"out": str(out), "functions": int(len(ids)), "files_seen": len(seen), "files_encoded": len(changed),
            "files_deleted": len(deleted), "functions_encoded": len(texts), "files_skipped": skipped, "files_excluded": excluded,
            "encode_seconds": encode_seconds, "functions_per_s": len(texts) / encode_seconds if encode_seconds else 0.0,
            "seconds": time.perf_counter() - started, "search": new_manifest["search"], "lean_queries": lean,
            "precision": encoder.precision if encoder is not None else "-"}


def model_ranking(model: str) -> Ranking:
    """The ranking the model's search_model.json records (`search hybrid --save`), else ZERO_SHOT_RANKING
    for a model fine-tuned by no one here (a sentence-transformers folder, minilm)."""
    # Imported here: tree-sitter, torch, transformers and faiss only when indexing: `index --help` stays instant.
    from codebert.backbone import resolve

    path = Path(resolve(model)) / "search_model.json"
    if not path.is_file():
        return ZERO_SHOT_RANKING
    return Ranking.of(json.loads(path.read_text(encoding="utf-8"))) or Ranking("dense")


def _check_compatible(manifest: dict[str, Any] | None, model_id: str, cfg: IndexConfig) -> None:
    """An existing index is updated only with the model and the include_docs it was built with."""
    if manifest is not None and manifest["model"] != model_id:
        raise UserError(f"{cfg.out} was built with {manifest['model']}; index into a new folder to use another model")
    if manifest is not None and manifest.get("store", "local") != cfg.store:
        raise UserError(f"{cfg.out} keeps its vectors in the {manifest.get('store', 'local')} store; index into a new folder to use --store {cfg.store}")
    if manifest is not None and manifest.get("include_docs", True) != cfg.include_docs:
        raise UserError(f"{cfg.out} was built with include_docs={manifest.get('include_docs')}; index into a new folder to change it")


def _intact(out: Path, manifest: dict[str, Any]) -> bool:
    """Whether the previous generation can be updated in place: its files present, of the sizes
    recorded, its SQLite file sound and its arrays readable. A damaged one is logged and the index
    is rebuilt from the sources into the next generation (the damaged files are then deleted)."""
    g = manifest["generation"]
    try:
        check_generation(out, manifest)
        db = sqlite3.connect(f"file:{out / f'meta-{g}.sqlite'}?mode=ro", uri=True)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
        if verdict != "ok":
            raise damaged(out / f"meta-{g}.sqlite", ValueError(verdict))
        for kind in ("vectors", "ids"):  # header and size only: _merge_vectors reads them
            load_array(out / f"{kind}-{g}.npy", mmap=True)
    except (UserError, sqlite3.DatabaseError) as exc:
        log.warning("%s: rebuilding the index from the sources", exc)
        return False
    return True


def _open_meta(out: Path, manifest: dict[str, Any] | None, old_g: int, g: int) -> sqlite3.Connection:
    """Generation g's SQLite file: a copy of the previous generation's (if any), schema up to date."""
    db_path = out / f"meta-{g}.sqlite"
    db_path.unlink(missing_ok=True)
    if manifest:
        shutil.copyfile(out / f"meta-{old_g}.sqlite", db_path)
    db = sqlite3.connect(db_path)
    db.executescript(SCHEMA)
    if "tokens" not in {row[1] for row in db.execute("PRAGMA table_info(functions)")}:
        db.execute("ALTER TABLE functions ADD COLUMN tokens TEXT NOT NULL DEFAULT ''")  # an index made before --rerank
    upgrade_lexical(db, out)
    return db


def upgrade_lexical(db: sqlite3.Connection, out: Path) -> None:
    """Give an index made before the lexical index, or before its words were stems, a lexical index
    in the current form: its functions' text as the vectors read it (their doc comment is not stored
    apart; the code's own comments are in `text`). No encoding: seconds."""
    form = lexical.form_of(db)
    if form == lexical.FORM:
        return
    if form is not None:
        log.warning("%s: rewriting the lexical index's words as %s (they were %s)", out, lexical.FORM, form)
        db.execute(f"DROP TABLE {lexical.TABLE}")
    lexical.create(db)
    lexical.add(db, db.execute("SELECT id, name || ' ' || text FROM functions").fetchall())


def _read_files(cfg: IndexConfig, reasons: Counter) -> dict[str, tuple[SourceFile, str, str]]:
    """path -> (file, text, sha256) of every readable source file under the roots; the others are counted in `reasons`."""
    languages = tuple(cfg.languages) if cfg.languages else tuple(sorted(SPECS))
    seen: dict[str, tuple[SourceFile, str, str]] = {}  # path -> (file, text, sha256)
    excluded = PathFilter.of(exclude=cfg.exclude)
    for path in cfg.paths:
        root = str(path.resolve())
        for src in walk([path], languages, "top", reasons):
            if excluded and not excluded.admits(src.path, root):
                reasons[(src.language, "excluded")] += 1
                continue
            text, why = read_source(src.path)
            if text is None:
                reasons[(src.language, f"file:{why}")] += 1
                continue
            seen[src.path] = (src, text, hashlib.sha256(text.encode("utf-8")).hexdigest())
    return seen


def _drop_stale(db: sqlite3.Connection, seen: dict[str, tuple[SourceFile, str, str]], roots: list[str]) -> tuple[list[int], list[str], list[int]]:
    """Remove the files deleted from the roots and those whose content changed (with their functions);
    returns (deleted file ids, changed or new paths, removed function ids)."""
    known = {row[0]: (row[1], row[2]) for row in db.execute("SELECT path, id, sha256 FROM files")}
    deleted = [fid for path, (fid, _) in known.items() if _root_of(path, roots) and path not in seen]
    changed = [path for path, (_, _, sha) in seen.items() if path not in known or known[path][1] != sha]
    stale = deleted + [known[p][0] for p in changed if p in known]
    removed_functions = [r[0] for r in db.execute(f"SELECT id FROM functions WHERE file_id IN ({','.join('?' * len(stale))})", stale)] if stale else []
    if stale:
        lexical.remove(db, removed_functions)
        db.execute(f"DELETE FROM functions WHERE file_id IN ({','.join('?' * len(stale))})", stale)
        db.execute(f"DELETE FROM files WHERE id IN ({','.join('?' * len(stale))})", stale)
    return deleted, changed, removed_functions


def _add_functions(db: sqlite3.Connection, seen: dict[str, tuple[SourceFile, str, str]], changed: list[str], roots: list[str],
                   include_docs: bool) -> tuple[list[int], list[str]]:
    """Insert the changed files and their functions; returns (new function ids, their texts to encode)."""
    # Imported here: tree-sitter, torch, transformers and faiss only when indexing: `index --help` stays instant.
    from codebert.corpus.functions import parse_functions

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
            texts.append(function_text(fn, include_docs))
            # The lexical index reads what the vectors read, plus the name: a query names what it wants.
            lexical.add(db, [(row.lastrowid, f"{fn.name} {texts[-1]}")])
    return new_rows, texts


def _encode(cfg: IndexConfig, texts: list[str], dim: int | None) -> tuple[np.ndarray, int, Any, float]:
    """(vectors of `texts`, dimension, the encoder or None, encoding seconds). The model is loaded
    only when there is something to encode or its dimension is not known yet (a new index)."""
    # Imported here: tree-sitter, torch, transformers and faiss only when indexing: `index --help` stays instant.
    from codebert.tool.embed import TextEncoder

    encode_seconds = 0.0
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
    return new_vectors, dim, encoder, encode_seconds


def _merge_vectors(out: Path, manifest: dict[str, Any] | None, old_g: int, removed_functions: list[int],
                   new_vectors: np.ndarray, new_rows: list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids): the previous generation's, less the removed functions, then the new ones."""
    if manifest:
        old_vectors = np.load(out / f"vectors-{old_g}.npy")
        old_ids = np.load(out / f"ids-{old_g}.npy")
        keep = ~np.isin(old_ids, np.array(removed_functions, dtype=np.int64))
        vectors = np.concatenate([old_vectors[keep], new_vectors.reshape(-1, dim)])
        ids = np.concatenate([old_ids[keep], np.array(new_rows, dtype=np.int64)])
    else:
        vectors, ids = new_vectors.reshape(-1, dim), np.array(new_rows, dtype=np.int64)
    return vectors, ids


def _write_vectors(out: Path, g: int, vectors: np.ndarray, ids: np.ndarray, exact_limit: int) -> None:
    """Generation g's vectors, ids and FAISS index."""
    # Imported here: tree-sitter, torch, transformers and faiss only when indexing: `index --help` stays instant.
    import faiss

    index = build_faiss(vectors, ids, exact_limit)
    np.save(out / f"vectors-{g}.npy", vectors)
    np.save(out / f"ids-{g}.npy", ids)
    faiss.write_index(index, str(out / f"faiss-{g}.index"))


def _write_milvus(cfg: IndexConfig, out: Path, g: int, vectors: np.ndarray, ids: np.ndarray,
                  manifest: dict[str, Any] | None) -> dict[str, str]:
    """Generation g's vectors and ids on disk (what the next update merges from) and in a new Milvus collection."""
    # Imported here: pymilvus only for an index in Milvus.
    from codebert.tool import milvus_store

    np.save(out / f"vectors-{g}.npy", vectors)
    np.save(out / f"ids-{g}.npy", ids)
    previous = (manifest or {}).get("milvus", {})
    uri = previous.get("uri") or cfg.milvus_uri or milvus_store.default_uri(out)
    prefix = previous.get("prefix") or milvus_store.collection_prefix(out)
    name = milvus_store.collection(prefix, g)
    db = sqlite3.connect(out / f"meta-{g}.sqlite")
    where = dict(((i, (lang, path)) for i, lang, path in db.execute(
        "SELECT f.id, f.language, files.path FROM functions f JOIN files ON files.id = f.file_id")))
    db.close()
    milvus_store.write_generation(uri, name, vectors, ids, [where[int(i)][0] for i in ids], [where[int(i)][1] for i in ids],
                                  cfg.exact_limit)
    return {"uri": uri, "prefix": prefix, "collection": name}


def _switch_generation(out: Path, g: int, new_manifest: dict[str, Any]) -> None:
    """Write the manifest that names generation g, then delete the other generations' files."""
    with atomic_write(out / MANIFEST) as f:  # the switch to the new generation
        f.write(json.dumps(new_manifest, indent=2) + "\n")
    for stale_file in out.glob("*-*.*"):
        if re.fullmatch(r"(meta|vectors|ids|faiss)-\d+\.(sqlite|npy|index)", stale_file.name) and not stale_file.name.startswith(
                (f"meta-{g}.", f"vectors-{g}.", f"ids-{g}.", f"faiss-{g}.")):
            stale_file.unlink()


def _export_query_encoder(out: Path, model_id: str, encoder, cfg: IndexConfig) -> bool:
    """The index's own query encoder for the lean query path (`codebert.tool.query_encoder`), written
    once per index (the model of an index never changes), under a temporary name then renamed."""
    # Imported here: tree-sitter, torch, transformers and faiss only when indexing: `index --help` stays instant.
    from codebert.tool import query_encoder

    if query_encoder.available(out, model_id):
        return True
    if encoder is None:
        # Imported here: tree-sitter, torch, transformers and faiss only when indexing: `index --help` stays instant.
        from codebert.tool.embed import TextEncoder

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
