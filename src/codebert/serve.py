"""`codebert serve INDEX`: an HTTP API (FastAPI, OpenAPI at /openapi.json, docs at /docs) and a page.

Endpoints
  GET /                      the search page (search box, language filter, results, detail view)
  GET /api/search?q=&k=&language=   ranked functions with path, lines, score, highlighted snippet
  GET /api/functions/{id}    one function: its text highlighted, location, language
  GET /api/stats             index size per language, model, roots
  GET /api/health            liveness
Safety: loopback by default; queries of at most 1,000 characters, k in [1, 100]; a function is
shown only if its file lies inside the indexed roots (symbolic links resolved), so no request
reaches a file elsewhere; every error is JSON {"error": ...} with a proper status code.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def validate(self) -> list[str]:
        return [] if 0 < self.port < 65536 else ["--port: must be in 1..65535"]


def highlight(code: str, language: str, terms: list[str]) -> str:
    """Syntax-highlighted HTML of code (Pygments), query words wrapped in <mark>."""
    from pygments import highlight as pyg_highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name({"csharp": "csharp"}.get(language, language))
    except ClassNotFound:
        return f"<pre>{html.escape(code)}</pre>"
    out = pyg_highlight(code, lexer, HtmlFormatter(nowrap=True))
    for term in terms:
        # Only inside text between tags: a word never matches markup, which has no spaces to split on.
        out = _mark_outside_tags(out, term)
    return f"<pre class=\"code\">{out}</pre>"


def _mark_outside_tags(markup: str, term: str) -> str:
    import re

    pattern = re.compile(re.escape(term), re.IGNORECASE)
    parts = re.split(r"(<[^>]+>)", markup)
    return "".join(p if p.startswith("<") else pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", p) for p in parts)


def inside_roots(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def create_app(index: Path, threads: int = 0):
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from codebert.encoder import TextEncoder
    from codebert.index import IndexStore, highlight_terms

    store = IndexStore(index)
    encoder = TextEncoder(store.manifest["model"], threads=threads)
    roots = store.manifest.get("roots", [])
    lock = threading.Lock()  # one query encodes at a time: torch already uses every core
    app = FastAPI(title="codebert search", version="1", description="Natural-language search over indexed source code.")

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

    def public(row: dict[str, Any], terms: list[str]) -> dict[str, Any]:
        lines = row["text"].splitlines()
        return {"id": row["id"], "name": row["name"], "language": row["language"], "path": row["path"],
                "start_line": row["start_line"], "end_line": row["end_line"], "score": row.get("score"),
                "snippet_html": highlight("\n".join(lines[:8]), row["language"], terms)}

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "functions": store.manifest["functions"]}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        return store.stats()

    @app.get("/api/search")
    def search(q: str = Query(..., description="what the code should do, in plain English"),
               k: int = Query(10, description=f"results, 1..{MAX_K}"),
               language: str | None = Query(None, description="only this language")) -> dict[str, Any]:
        if not q.strip():
            raise ApiError(400, "q: the query is empty")
        if len(q) > MAX_QUERY:
            raise ApiError(413, f"q: the query is longer than {MAX_QUERY} characters")
        if "\ufffd" in q:
            raise ApiError(400, "q: the query is not valid UTF-8")
        if not 1 <= k <= MAX_K:
            raise ApiError(400, f"k: must be in 1..{MAX_K}")
        started = time.perf_counter()
        with lock:
            vector = encoder.encode_queries([q])[0]
            rows = store.search(vector, k, language or None)
        terms = highlight_terms(q)
        results = [public(r, terms) for r in rows if inside_roots(r["path"], roots)]
        return {"query": q, "results": results, "latency_ms": 1000 * (time.perf_counter() - started)}

    @app.get("/api/functions/{function_id}")
    def function(function_id: int, q: str = "") -> dict[str, Any]:
        rows = store.functions([function_id])
        if function_id not in rows:
            raise ApiError(404, f"no function {function_id}")
        row = rows[function_id]
        if not inside_roots(row["path"], roots):
            raise ApiError(403, "the function's file is outside the indexed roots")
        return {**public(row, []), "html": highlight(row["text"], row["language"], highlight_terms(q)), "text": row["text"]}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/style.css", include_in_schema=False)
    def style():
        from fastapi.responses import Response
        from pygments.formatters import HtmlFormatter

        return Response(HtmlFormatter().get_style_defs(".code"), media_type="text/css")

    return app


def main(cfg: ServeConfig) -> dict[str, Any]:
    import uvicorn

    if not (cfg.index / "manifest.json").is_file():
        raise UserError(f"{cfg.index}: not an index (no manifest.json); build one with `codebert index`")
    app = create_app(cfg.index, cfg.threads)
    print(f"codebert: serving {cfg.index} on http://{cfg.host}:{cfg.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return {}
