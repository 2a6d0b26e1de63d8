"""`codebert serve INDEX`: an HTTP API (FastAPI, OpenAPI at /openapi.json, docs at /docs) and a page.

Endpoints
  GET /?q=&language=         the search page (search box, language filter, results, detail view);
                             the query lives in the URL, so a search can be linked and reloaded
  GET /api/search?q=&k=&language=&html=&ranking=   ranked functions with path, lines, score, first lines
                             (ranking: auto = the index's, dense, lexical or hybrid)
  GET /api/functions/{id}?q= one function: its text syntax-highlighted, query words marked
  GET /api/stats             index size per language, model, roots
  GET /api/health            liveness
  GET /docs                  the API, described from /openapi.json on one page that works offline
Speed: queries arriving together are encoded and searched as one batch (`Batcher`), with the
index's ONNX query encoder where it has one (`codebert.tool.query_encoder`); the list's snippets are
plain text that the page marks, and the syntax highlighting of one function is bounded
(MAX_HIGHLIGHT characters, MAX_TERMS words, one pass). A re-index is picked up within a second.
Safety: loopback by default; queries of at most 1,000 characters on every endpoint, k in [1, 100],
a language the index lacks is 422 (naming those it has), an id beyond SQLite's integers 404; a
function is shown only if its file lies inside the indexed roots (symbolic links resolved), so no
request reaches a file elsewhere; every error is JSON {"error": ...} with a proper status code.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import html
import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebert.config import option
from codebert.errors import UserError

log = logging.getLogger(__name__)

MAX_QUERY = 1000
MAX_K = 100
PAGE = Path(__file__).parent / "web" / "index.html"


@dataclass
class ServeConfig:
    index: Path = option(help="index folder from `codebert index`", positional=True)
    host: str = option("127.0.0.1", "address to listen on (loopback by default; 0.0.0.0 exposes the index to the network)")
    port: int = option(8000, "port to listen on")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto", "query encoding precision; auto: bf16 where the CPU has bf16 instructions (about 3x the queries/s), else fp32")

    def validate(self) -> list[str]:
        problems = [] if 0 < self.port < 65536 else ["--port: must be in 1..65535"]
        if self.threads < 0:
            problems.append("--threads: must be >= 0 (0: torch's default)")
        return problems


MAX_TERMS = 32  # query words marked in a highlighted function: bounds the marking work of any query
MAX_HIGHLIGHT = 100_000  # characters of a function Pygments colours; a longer one is shown plain
SNIPPET_LINES = 8  # lines of each result shown in the list
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id names no function (404, not an overflow)
RELOAD_SECONDS = 1.0  # how often a request may look for a new index generation


def _terms_pattern(terms: list[str]) -> re.Pattern | None:
    """One case-insensitive pattern for every term (longest first, so that the longest match wins):
    one pass over the text whatever the number of terms."""
    terms = terms[:MAX_TERMS]
    return re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE) if terms else None


def highlight(code: str, language: str, terms: list[str]) -> str:
    """Syntax-highlighted HTML of code (Pygments), query words wrapped in <mark>."""
    # Imported here: fastapi, uvicorn, pygments, torch and the index only when serving: `serve --help` stays instant.
    from pygments import highlight as pyg_highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    pattern = _terms_pattern(terms)
    if len(code) > MAX_HIGHLIGHT:
        return f"<pre class=\"code\">{_mark_outside_tags(html.escape(code), pattern)}</pre>"
    try:
        lexer = get_lexer_by_name({"csharp": "csharp"}.get(language, language))
    except ClassNotFound:
        return f"<pre>{_mark_outside_tags(html.escape(code), pattern)}</pre>"
    out = pyg_highlight(code, lexer, HtmlFormatter(nowrap=True))
    return f"<pre class=\"code\">{_mark_outside_tags(out, pattern)}</pre>"


_MARKUP = re.compile(r"(<[^>]+>|&#?\w+;)")  # a tag, or an entity such as &amp; (never split by a mark)


def _mark_outside_tags(markup: str, pattern: re.Pattern | None) -> str:
    """Wrap matches of `pattern` in <mark>, only in text between tags and entities."""
    if pattern is None:
        return markup
    parts = _MARKUP.split(markup)
    # Odd positions are the separators the split kept: tags and entities, left as they are.
    return "".join(p if i % 2 else pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", p) for i, p in enumerate(parts))


def inside_roots(path: str, roots: list[str]) -> bool:
    return _inside(path, tuple(roots))


@functools.lru_cache(maxsize=65_536)
def _inside(path: str, roots: tuple[str, ...]) -> bool:
    """Cached: resolving a path costs a system call per component, ~0.6 ms per query of ten results,
    and a result's path is asked about again and again. (The text served comes from the index, not
    from the file, so a link changed after the first answer reveals nothing new.)"""
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


class Searcher:
    """The index being served and its query encoder; picks up a new generation written by
    `codebert index` (the manifest names it) without a restart."""

    def __init__(self, folder: Path, threads: int = 0, precision: str = "auto"):
        # Imported here: fastapi, uvicorn, pygments, torch and the index only when serving: `serve --help` stays instant.
        from codebert.tool.embed import TextEncoder
        from codebert.tool.store import IndexStore

        self.folder, self.threads = folder, threads
        store = IndexStore(folder)  # its manifest names the model (and a folder that is no index fails here)
        # torch, not the lean ONNX path: a server starts once, and torch's bf16 kernels (AMX,
        # AVX512-BF16) encode batches of queries faster than fp32 on ONNX Runtime or torch.
        self.encoder = TextEncoder(store.manifest["model"], threads=threads, precision=precision)
        self.encoder.trace()  # a server encodes many short batches: worth a second at start
        self.encoder.pad_multiple = 8
        self._warm_up()
        self.store = self._prepare(store)
        # Everything loaded so far lives as long as the server: out of the cyclic collector's sight,
        # so that its full collections scan only what requests create (a full scan of the model's
        # and index's objects showed as a ~300 ms p99 outlier under load).
        gc.freeze()
        self.checked = time.monotonic()
        self.lock = threading.Lock()
        self.loading = False  # a thread is loading a new generation

    def _warm_up(self, clients: int = 16) -> None:
        """Encode once every batch shape that up to `clients` concurrent users make (batch sizes
        1..clients, lengths in steps of pad_multiple), so that the trace's per-shape optimisation
        and oneDNN's kernels are made now, not as latency spikes under the first load."""
        step = self.encoder.pad_multiple
        for length in range(step, self.encoder.query_length + 1, step):
            text = " ".join(["a"] * max(1, length - step))  # one token per word, specials aside
            for rows in range(1, clients + 1):
                self.encoder.encode_queries([text] * rows)

    def _prepare(self, store):
        """`store` with its search structures loaded now rather than by the first request."""
        if store.manifest.get("search") != "hnsw":
            store.top_k = TorchTopK(store.exact[0], coarse=self.encoder.precision == "bf16")
        else:
            _ = store.faiss
        _ = store.languages
        store.load_lexical_matrix()  # lexical and hybrid queries from postings in memory, not FTS5 scans
        return store

    def current(self):
        """The newest complete generation that is loaded (looked for at most every RELOAD_SECONDS).

        A new generation is loaded by a thread of its own while requests are answered from the one
        before: its vectors and BM25 postings take seconds for 100,000 functions, and the batcher
        must not stall that long. It is served from the first batch after it is ready."""
        from codebert.tool.store import read_manifest  # here: the index only when serving (`serve --help` stays instant)

        now = time.monotonic()
        if now - self.checked < RELOAD_SECONDS:
            return self.store
        with self.lock:
            if now - self.checked < RELOAD_SECONDS or self.loading:
                return self.store
            self.checked = now
            try:
                manifest = read_manifest(self.folder)
            except (UserError, OSError) as exc:  # a half-deleted folder: keep serving what we have
                log.warning("%s: new generation not loaded (%s)", self.folder, exc)
                return self.store
            if manifest is not None and manifest.get("generation") != self.store.manifest["generation"]:
                self.loading = True
                threading.Thread(target=self._load, name="codebert-generation", daemon=True).start()
        return self.store

    def _load(self) -> None:
        from codebert.tool.store import IndexStore  # here: the index only when serving (`serve --help` stays instant)

        try:
            store = self._prepare(IndexStore(self.folder))
            self.store = store  # requests in flight finish on the old one
            log.warning("serving generation %s of %s", store.manifest["generation"], self.folder)
        except (UserError, OSError, KeyError) as exc:  # a half-deleted folder: keep serving what we have
            log.warning("%s: new generation not loaded (%s)", self.folder, exc)
        finally:
            self.loading = False


class TorchTopK:
    """`IndexStore.top_k` on torch for the server: exact results, about 2-4x numpy's rate here.

    Scoring 100,000 vectors is bound by reading them from memory, so with `coarse` (where the CPU
    has bf16 instructions) a bf16 copy (half the bytes) picks `CANDIDATES` per query, which are
    then scored in fp32. That is exact, not approximate: a bf16 score is within DELTA of the fp32
    one (inputs rounded to 8 mantissa bits, |q| = |v| = 1, plus the product's own rounding), so no
    vector outside the candidates can beat the k-th best candidate's fp32 score when that score
    exceeds the lowest candidate's bf16 score by more than DELTA. A query without that certificate
    (vectors bunched together, as a poorly trained model makes them) is scored in fp32 throughout."""

    CANDIDATES = 64  # bf16 candidates per query (at least; 2k for k > 32), re-scored in fp32
    DELTA = 2.0**-7  # bound on |bf16 score - fp32 score| for unit vectors (2^-8 inputs, 2^-9 output, margin)

    def __init__(self, vectors: np.ndarray, coarse: bool):
        # Imported here: fastapi, uvicorn, pygments, torch and the index only when serving: `serve --help` stays instant.
        import torch

        self.torch = torch
        self.vectors = torch.from_numpy(vectors)  # shares the store's memory
        self.coarse = self.vectors.to(torch.bfloat16) if coarse else None
        self.uncertified = 0  # queries that needed the fp32 pass (for tests and curiosity)

    def __call__(self, queries: np.ndarray, rows: slice, k: int, lowest: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        torch = self.torch
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        block = self.vectors[rows]
        # The certificate needs the k-th best well above the last candidate: with k candidates (hybrid's
        # 100 of 100) it held for no query and every batch took the fp32 pass, 3x the time.
        candidates = max(self.CANDIDATES, 2 * k)
        if self.coarse is None or rows.stop - rows.start <= 4 * candidates:
            full = q @ block.T
            scores, top = torch.topk(full, k, dim=1)
            return top.numpy(), scores.numpy(), full.min(dim=1).values.numpy() if lowest else None
        coarse_full = q.to(torch.bfloat16) @ self.coarse[rows].T
        coarse_scores, picked = torch.topk(coarse_full, candidates, dim=1)
        exact = torch.einsum("qd,qcd->qc", q, block[picked])
        scores, best = torch.topk(exact, k, dim=1)
        top = picked.gather(1, best)
        uncertain = (scores[:, -1] <= coarse_scores[:, -1].float() + self.DELTA).nonzero().flatten()
        if len(uncertain):
            self.uncertified += len(uncertain)
            scores[uncertain], top[uncertain] = torch.topk(q[uncertain] @ block.T, k, dim=1)
        return top.numpy(), scores.numpy(), self._lowest(q, block, coarse_full) if lowest else None

    def _lowest(self, q, block, coarse_full) -> np.ndarray:
        """Each query's exact lowest fp32 score, from its bf16 scores: the row with the lowest fp32
        score has a bf16 score within 2 DELTA of the lowest bf16 score, so only those rows are
        scored in fp32 (all of them where too many are that close: bunched vectors)."""
        coarse_full = coarse_full.float()
        near = coarse_full <= (coarse_full.min(dim=1).values + 2 * self.DELTA)[:, None]
        lows = np.empty(len(q), dtype=np.float32)
        for i in range(len(q)):
            rows = near[i].nonzero().flatten()
            candidates = block[rows] if len(rows) <= 4 * self.CANDIDATES else block
            lows[i] = float((candidates @ q[i]).min())
        return lows


class Batcher:
    """Encodes and searches the queries that arrive together as one batch.

    One worker thread takes every query waiting in the queue (no added wait: the queue fills while
    the previous batch is computed), encodes them in one forward pass and searches them in one FAISS
    call per language. Under load the batches grow and the cost per query falls; a lone query is
    answered at once. The encoder has the cores to itself: there is one worker.
    """

    def __init__(self, searcher: Searcher, max_batch: int = 64):
        self.searcher, self.max_batch = searcher, max_batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._work, name="codebert-batcher", daemon=True).start()

    def submit(self, text: str, k: int, language: str | None, ranking=None, paths=None) -> Future:
        future: Future = Future()
        self.queue.put((text, k, language, (ranking, paths), future))
        return future

    def _work(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                store = self.searcher.current()
                vectors = self.searcher.encoder.encode_queries([item[0] for item in batch])
                k = max(item[1] for item in batch)
                found: list = [None] * len(batch)
                # One ranked search per ranking and path filter asked for (most batches: one, the index's own).
                for how in {item[3] for item in batch}:
                    rows = [i for i, item in enumerate(batch) if item[3] == how]
                    ranked = store.rank_many(vectors[rows], [batch[i][0] for i in rows], k, [batch[i][2] for i in rows], *how)
                    for i, result in zip(rows, ranked):
                        found[i] = result
                for (_, want, _, _, future), rows in zip(batch, found):
                    future.set_result(rows[:want])
            except Exception as exc:  # noqa: BLE001 -- handed to every waiting request, which answers it
                for *_, future in batch:
                    future.set_exception(exc)


def _docs_page(schema: dict[str, Any]) -> str:
    """The API described from its OpenAPI schema as one self-contained page (works offline,
    unlike Swagger UI, which loads its scripts from a CDN)."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            params = "".join(
                f"<li><code>{html.escape(p['name'])}</code> ({html.escape(p.get('in', ''))}"
                f"{', required' if p.get('required') else ''}) {html.escape(p.get('description', '') or '')}</li>"
                for p in op.get("parameters", []))
            rows.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2><p>{html.escape(op.get('summary', ''))}</p>"
                        f"<p>{html.escape(op.get('description', '') or '')}</p><ul>{params}</ul>")
    title = html.escape(schema.get("info", {}).get("title", "API"))
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:860px;margin:24px auto;padding:0 16px}"
            "h2{font-size:16px;margin-top:28px}code{background:#f0f2f5;padding:1px 4px;border-radius:4px}</style></head>"
            f"<body><h1>{title}</h1><p>{html.escape(schema.get('info', {}).get('description', ''))} "
            "Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>.</p>" + "".join(rows) + "</body></html>")


def create_app(index: Path, threads: int = 0, precision: str = "auto"):
    # Imported here: fastapi, uvicorn, pygments, torch and the index only when serving: `serve --help` stays instant.
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from codebert.tool.filters import PathFilter
    from codebert.tool.query import chosen_ranking, highlight_terms
    from codebert.tool.results import location, result
    from codebert.tool.store import RANKINGS

    searcher = Searcher(index, threads, precision)
    batcher = Batcher(searcher)
    app = FastAPI(title="codebert search", version="1", docs_url=None, redoc_url=None,
                  description="Natural-language search over indexed source code.")
    app.state.searcher = searcher  # the index being served (tests and embedding applications look at it)

    class ApiError(Exception):
        def __init__(self, status: int, message: str):
            self.status, self.message = status, message

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", []) if p != "query")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def checked_query(q: str, required: bool) -> str:
        if required and not q.strip():
            raise ApiError(400, "q: the query is empty")
        if len(q) > MAX_QUERY:
            raise ApiError(413, f"q: the query is longer than {MAX_QUERY} characters")
        if "\ufffd" in q:
            raise ApiError(400, "q: the query is not valid UTF-8")
        return q

    def summary(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "location": location(row), "name": row["name"], "language": row["language"], "path": row["path"],
                "start_line": row["start_line"], "end_line": row["end_line"], "score": row.get("score"),
                **{key: row[key] for key in ("vector_score", "lexical_score") if key in row}}

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "functions": searcher.current().manifest["functions"]}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        return searcher.current().stats()

    @app.get("/api/search")
    async def search(q: str = Query(..., description=f"what the code should do, in plain English (at most {MAX_QUERY} characters)"),
                     k: int = Query(10, description=f"results, 1..{MAX_K}"),
                     language: str | None = Query(None, description="only this language (one of /api/stats' per_language)"),
                     highlight_snippets: bool = Query(False, alias="html", description="also each snippet as syntax-highlighted HTML (costs server time)"),
                     ranking: str = Query("auto", description="auto (the index's), dense, lexical or hybrid (`codebert query --ranking`)"),
                     path: list[str] = Query([], description="only files matching one of these globs (relative to the indexed root, or absolute; ** spans folders)"),
                     exclude: list[str] = Query([], description="leave out files matching any of these globs")):
        """Ranked functions, each with its location, score and first lines (`snippet`); `terms` are
        the query words a page may mark in them."""
        checked_query(q, required=True)
        if not 1 <= k <= MAX_K:
            raise ApiError(400, f"k: must be in 1..{MAX_K}")
        store = searcher.current()
        if language and language not in store.languages:
            raise ApiError(422, f"language: {language[:40]!r} is not indexed (indexed: {', '.join(sorted(store.languages))})")
        if ranking not in ("auto", *RANKINGS):
            raise ApiError(400, f"ranking: {ranking[:20]!r} is not one of auto, {', '.join(RANKINGS)}")
        try:
            paths = PathFilter.of(path, exclude)
        except UserError as exc:
            raise ApiError(400, f"path/exclude: {exc}") from None
        started = time.perf_counter()
        try:
            rows = await asyncio.wrap_future(batcher.submit(q, k, language or None, chosen_ranking(store, ranking), paths or None))
        except UserError as exc:  # the index changed under the request (a language gone)
            raise ApiError(422, str(exc)) from None
        terms = highlight_terms(q)[:MAX_TERMS]
        roots = store.manifest.get("roots", [])
        results = []
        for row in rows:
            if not inside_roots(row["path"], roots):
                continue
            item = result(row, SNIPPET_LINES)
            snippet = item["snippet"]
            if highlight_snippets:
                item["snippet_html"] = highlight(snippet, row["language"], terms)
            results.append(item)
        return JSONResponse({"query": q, "terms": terms, "results": results,
                             "latency_ms": 1000 * (time.perf_counter() - started)})

    @app.get("/api/functions/{function_id}")
    def function(function_id: int, q: str = Query("", description=f"query words to mark (at most {MAX_QUERY} characters)")) -> dict[str, Any]:
        checked_query(q, required=False)
        store = searcher.current()
        rows = store.functions([function_id]) if 0 < function_id <= MAX_ID else {}
        if function_id not in rows:
            raise ApiError(404, f"no function {function_id}")
        row = rows[function_id]
        if not inside_roots(row["path"], store.manifest.get("roots", [])):
            raise ApiError(403, "the function's file is outside the indexed roots")
        return {**summary(row), "html": highlight(row["text"], row["language"], highlight_terms(q)), "text": row["text"]}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return HTMLResponse(_docs_page(app.openapi()))

    @app.get("/style.css", include_in_schema=False)
    def style():
        # Imported here: fastapi, uvicorn, pygments, torch and the index only when serving: `serve --help` stays instant.
        from pygments.formatters import HtmlFormatter

        return Response(HtmlFormatter().get_style_defs(".code"), media_type="text/css")

    return app


def main(cfg: ServeConfig) -> dict[str, Any]:
    # Imported here: fastapi, uvicorn, pygments, torch and the index only when serving: `serve --help` stays instant.
    import uvicorn

    if not (cfg.index / "manifest.json").is_file():
        raise UserError(f"{cfg.index}: not an index (no manifest.json); build one with `codebert index`")
    app = create_app(cfg.index, cfg.threads, cfg.precision)
    print(f"codebert: serving {cfg.index} on http://{cfg.host}:{cfg.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return {}
