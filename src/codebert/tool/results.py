"""The one shape of a search result, shared by `codebert query --json`, the HTTP API and the MCP tool.

    {"id": 17,                              function id in the index (`/api/functions/{id}`, MCP `get_function`)
     "location": "/repo/pkg/mod.py:12-30",  path:start-end, what an editor or an agent opens
     "path": "/repo/pkg/mod.py", "start_line": 12, "end_line": 30,   1-based, inclusive
     "name": "Parser.parse", "language": "python",
     "score": 0.61,                         what the results are ordered by (the ranking's own scale)
     "vector_score": 0.55, "lexical_score": 7.2,   hybrid and lexical rankings only: each ranker's score
     "snippet": "def parse(self, text):\\n..."}     the function's first lines (`snippet_lines`)
"""

from __future__ import annotations

from typing import Any

SNIPPET_LINES = 6


def location(row: dict[str, Any]) -> str:
    return f"{row['path']}:{row['start_line']}-{row['end_line']}"


def result(row: dict[str, Any], snippet_lines: int = SNIPPET_LINES) -> dict[str, Any]:
    """A search hit (an `IndexStore` row with its score) in the shared shape."""
    out = {"id": row["id"], "location": location(row), "path": row["path"], "start_line": row["start_line"],
           "end_line": row["end_line"], "name": row["name"], "language": row["language"], "score": row["score"]}
    for key in ("vector_score", "lexical_score"):
        if key in row:
            out[key] = row[key]
    out["snippet"] = "\n".join(row["text"].splitlines()[:snippet_lines])
    return out
