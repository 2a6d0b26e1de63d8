"""`codebert mcp`: the index over the Model Context Protocol, tested with the SDK's own client spawning the server."""

from __future__ import annotations

import asyncio
import shutil
import sys

from codebert.config import load_config
from codebert.tool import index as index_mod
from codebert.tool.query import QueryConfig, query_main
from conftest import SAMPLES


def test_an_mcp_client_gets_what_the_command_line_gets(tmp_path, tiny_model_dir):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    root = tmp_path / "samples"
    shutil.copytree(SAMPLES, root)
    out = tmp_path / "idx"
    index_mod.main(load_config(index_mod.IndexConfig, None, {"paths": [str(root)], "model": str(tiny_model_dir), "out": str(out),
                                                             "progress": "false", "threads": "1"}))

    def shell(**flags):
        return query_main(load_config(QueryConfig, None, {"index": str(out), "threads": "1", **flags}))["results"]

    async def session() -> dict:
        seen = {}
        server = StdioServerParameters(command=sys.executable, args=["-m", "codebert", "mcp", str(out), "--threads", "1"])
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            seen["tools"] = tools
            calls = {
                "plain": ("search_code", {"query": "parse a memory string", "k": 5}),
                "filtered": ("search_code", {"query": "parse a memory string", "k": 5, "language": "java", "path": ["**/src/**"], "exclude": ["**/*.php"]}),
                "lexical": ("search_code", {"query": "pop from a stack", "k": 3, "ranking": "lexical", "path": ["goproj/**"]}),
                "unknown language": ("search_code", {"query": "sort", "language": "klingon"}),
                "bad glob": ("search_code", {"query": "sort", "path": ["src/[abc"]}),
                "k out of range": ("search_code", {"query": "sort", "k": 0}),
                "empty query": ("search_code", {"query": "  "}),
                "bad ranking": ("search_code", {"query": "sort", "ranking": "psychic"}),
                "by id": ("get_function", {"ref": "1"}),
                "by path:line": ("get_function", {"ref": "pyproj/pkg/memory.py:8"}),
                "no function": ("get_function", {"ref": "999999"}),
                "bad ref": ("get_function", {"ref": "memory.py"}),
            }
            for name, (tool, arguments) in calls.items():
                seen[name] = await client.call_tool(tool, arguments)
        return seen

    seen = asyncio.run(session())
    schema = seen["tools"]["search_code"].input_schema["properties"]
    assert schema["k"]["maximum"] == 100 and "enum" in schema["ranking"] and schema["query"]["description"]
    for name, flags in (("plain", {"text": "parse a memory string", "k": "5"}),
                        ("filtered", {"text": "parse a memory string", "k": "5", "language": "java", "path": ["**/src/**"], "exclude": ["**/*.php"]}),
                        ("lexical", {"text": "pop from a stack", "k": "3", "ranking": "lexical", "path": ["goproj/**"]})):
        result = seen[name]
        assert not result.is_error, result.content
        got = result.structured_content["results"]
        assert [r["id"] for r in got] == [r["id"] for r in shell(**flags)] and got, name
        assert all(r["location"] == f"{r['path']}:{r['start_line']}-{r['end_line']}" for r in got)
    assert all(r["language"] == "java" and "/src/" in r["path"] for r in seen["filtered"].structured_content["results"])
    for name, words in (("unknown language", "not indexed"), ("bad glob", "bad glob"), ("k out of range", "1..100"),
                        ("empty query", "empty"), ("bad ranking", "ranking"), ("no function", "no function"), ("bad ref", "path:line")):
        assert seen[name].is_error, name
        text = seen[name].content[0].text
        assert words in text and "\n" not in text and "Traceback" not in text, (name, text)
    by_line = seen["by path:line"].structured_content
    assert by_line["name"] == "parse_memory" and by_line["start_line"] <= 8 <= by_line["end_line"] and "def parse_memory" in by_line["text"]
    assert seen["by id"].structured_content["id"] == 1 and seen["by id"].structured_content["text"]


def test_the_http_transport_serves_the_same_tools(tmp_path, tiny_model_dir):
    import socket
    import subprocess
    import time

    from mcp import Client

    out = tmp_path / "idx"
    index_mod.main(load_config(index_mod.IndexConfig, None, {"paths": [str(SAMPLES / "goproj")], "model": str(tiny_model_dir),
                                                             "out": str(out), "progress": "false", "threads": "1"}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "codebert", "mcp", str(out), "--transport", "http", "--port", str(port),
                               "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def call():
            for _ in range(100):  # until it listens
                try:
                    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                        return await client.call_tool("search_code", {"query": "pop from a stack", "k": 2})
                except Exception:  # noqa: BLE001 -- not listening yet
                    time.sleep(0.2)
            raise AssertionError("the HTTP server did not answer")

        result = asyncio.run(call())
        assert not result.is_error and [r["name"] for r in result.structured_content["results"]]
    finally:
        server.terminate()
        server.wait(timeout=20)
