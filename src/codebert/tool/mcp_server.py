"""`codebert mcp INDEX`: the index as a Model Context Protocol server, for coding agents.

Built on the official `mcp` Python SDK (`MCPServer`), over stdio by default (the transport an MCP
client launches a local server with) or streamable HTTP (`--transport http`). Two tools:

  search_code(query, k=10, language=None, path=[], exclude=[], ranking="auto")
      the functions that best match a plain-English query, each in the shape `codebert query
      --json` and the HTTP API give (`codebert.tool.results`: id, location path:start-end, name,
      language, score, snippet, ...), ranked as the index ranks by default;
  get_function(ref)
      one function's whole text and location, by its id ("17") or by "path:line" (the function
      of that file whose lines hold that line; the innermost where several do).

The query encoder is the index's lean ONNX one (no torch import: the server answers its first
call in milliseconds); a new generation written by `codebert index` is picked up at the next call.
A bad argument (unknown language, bad glob, k out of range, empty query, unknown function) is a
tool error with one line for the model to read, never a traceback.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field  # the tools' argument schemas (the SDK reads them from the annotations)

from codebert.config import option
from codebert.errors import UserError
from codebert.tool.filters import PathFilter
from codebert.tool.query import chosen_ranking
from codebert.tool.query_encoder import open_encoder
from codebert.tool.results import location, result
from codebert.tool.store import RANKINGS, IndexStore, read_manifest

log = logging.getLogger(__name__)

MAX_K = 100
MAX_QUERY = 1000


@dataclass
class McpConfig:
    index: Path = option(help="index folder from `codebert index`", positional=True)
    transport: Literal["stdio", "http"] = option("stdio", "stdio: for a client that launches the server; http: streamable HTTP at /mcp")
    host: str = option("127.0.0.1", "http: address to listen on (loopback by default)")
    port: int = option(8765, "http: port")
    threads: int = option(0, "threads of the query encoder (0: its default)")

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.port <= 65535:
            problems.append("--port: must be in 1..65535")
        if self.threads < 0:
            problems.append("--threads: must be >= 0")
        return problems


class CodeSearch:
    """What the tools do, apart from the protocol: an index, its encoder, and a reload on a new generation."""

    def __init__(self, folder: Path, threads: int = 0):
        self.folder = folder
        self.store = IndexStore(folder)  # a folder that is no index, or a damaged one, fails here in one line
        self.encoder = open_encoder(folder, self.store.manifest["model"], threads, "auto")
        self.lock = threading.Lock()

    def current(self):
        """The newest complete generation, loaded by the call that finds it. Unlike the server
        (`serve.Searcher`, which loads in a thread and answers from the old one meanwhile), an agent
        that has just re-indexed is answered from what it wrote, at the price of one slow call
        (about a second for 100,000 functions)."""
        with self.lock:
            manifest = read_manifest(self.folder)
            if manifest is not None and manifest["generation"] != self.store.manifest["generation"]:
                self.store = IndexStore(self.folder)
            return self.store

    def search(self, query: str, k: int, language: str | None, path: list[str], exclude: list[str], ranking: str) -> dict[str, Any]:
        if not query.strip():
            raise UserError("query: empty")
        if len(query) > MAX_QUERY:
            raise UserError(f"query: longer than {MAX_QUERY} characters")
        if not 1 <= k <= MAX_K:
            raise UserError(f"k: must be in 1..{MAX_K}, not {k}")
        if ranking not in ("auto", *RANKINGS):
            raise UserError(f"ranking: {ranking[:20]!r} is not one of auto, {', '.join(RANKINGS)}")
        paths = PathFilter.of(path, exclude)
        store = self.current()
        if language is not None and language not in store.languages:
            raise UserError(f"language: {language[:40]!r} is not indexed (indexed: {', '.join(sorted(store.languages))})")
        how = chosen_ranking(store, ranking)
        vector = self.encoder.encode_queries([query])
        rows = store.rank_many(vector, [query], k, [language], how, paths or None)[0]
        return {"query": query, "ranking": how.as_dict(), "results": [result(r) for r in rows]}

    def function(self, ref: str) -> dict[str, Any]:
        store = self.current()
        ref = ref.strip()
        if ref.isdigit():
            rows = store.functions([int(ref)]) if int(ref) < 2**63 else {}
            if not rows:
                raise UserError(f"no function {ref} in the index")
            row = next(iter(rows.values()))
        else:
            file, _, line = ref.rpartition(":")
            if not file or not line.isdigit():
                raise UserError(f"ref {ref[:80]!r}: a function id (\"17\") or \"path:line\"")
            # An absolute path as indexed, or a path relative to any indexed root (its tail).
            tail = "%/" + file.removeprefix("./").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            found = store.db.execute(
                "SELECT f.id FROM functions f JOIN files ON files.id = f.file_id WHERE (files.path = ? OR files.path LIKE ? ESCAPE '\\') "
                "AND f.start_line <= ? AND f.end_line >= ? ORDER BY f.end_line - f.start_line LIMIT 1",
                (file, tail, int(line), int(line))).fetchone()
            if found is None:
                raise UserError(f"no indexed function holds line {line} of {file}")
            row = store.functions([found[0]])[found[0]]
        return {"id": row["id"], "location": location(row), "path": row["path"], "start_line": row["start_line"],
                "end_line": row["end_line"], "name": row["name"], "language": row["language"], "text": row["text"]}


def build_server(search: CodeSearch):
    """The MCP server with its two tools over `search`."""
    # Imported here: the SDK only when the server is built (`codebert mcp --help` stays instant).
    from mcp.server import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("codebert", instructions="Semantic code search over an indexed source tree: search_code finds functions "
                                                "by what they do; get_function returns one function's whole text.")

    @server.tool()
    def search_code(
        # Bounds and choices are in the schema for the client to read, and checked by CodeSearch so
        # that a bad value is one line for the model (pydantic's own check answers in several).
        query: Annotated[str, Field(description="what the code should do, in plain English", json_schema_extra={"maxLength": MAX_QUERY})],
        k: Annotated[int, Field(description="number of results", json_schema_extra={"minimum": 1, "maximum": MAX_K})] = 10,
        language: Annotated[str | None, Field(description="only functions in this language, e.g. python, go")] = None,
        path: Annotated[list[str] | None, Field(description="only files matching one of these globs, relative to the indexed root "
                                                            "or absolute; ** spans folders, e.g. src/**")] = None,
        exclude: Annotated[list[str] | None, Field(description="leave out files matching any of these globs, e.g. **/tests/**")] = None,
        ranking: Annotated[str, Field(description="auto: the index's own; dense: by meaning; lexical: BM25 on identifiers; hybrid: both",
                                      json_schema_extra={"enum": ["auto", "dense", "lexical", "hybrid"]})] = "auto",
    ) -> dict[str, Any]:
        """Find the functions that do what `query` says, best first. Each result: id, location
        (path:start-end, to open), name, language, score and the first lines (snippet)."""
        try:
            return search.search(query, k, language, path or [], exclude or [], ranking)
        except UserError as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    def get_function(ref: Annotated[str, Field(description='a function id as search_code gives it ("17"), or "path:line"')]) -> dict[str, Any]:
        """One function's whole text and location, by its id (as search_code gives it, e.g. "17")
        or by "path:line" (the indexed function whose lines hold that line)."""
        try:
            return search.function(ref)
        except UserError as exc:
            raise ToolError(str(exc)) from None

    return server


def main(cfg: McpConfig) -> dict[str, Any]:
    server = build_server(CodeSearch(cfg.index, cfg.threads))
    if cfg.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=cfg.host, port=cfg.port)
    return {}
